//! Files meshstack writes where the user points it (`--html`, `render --out`, `state pull
//! --out`, the handout, `--save-dumps`), written so that another local user cannot redirect
//! them: never through a symlink, never half-written.
//!
//! A file is written whole to a fresh temporary file beside it (an unpredictable name, created
//! exclusively, so nothing planted there is followed or reused), synced, then renamed over the
//! destination: a reader sees the old file or the new one. A destination that is a symlink is
//! refused rather than followed or replaced — someone put it there, and the user should see
//! it. Folders meshstack makes are private (0700); an existing one must be a real folder.

use std::io::{self, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

/// Writes `body` to `path` (mode `mode`) through a temporary file and a rename. Refuses a
/// `path` that is a symlink or a folder.
pub fn write_file(path: &Path, body: &[u8], mode: u32) -> io::Result<()> {
    refuse_symlink(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    // The umask can only take bits away; say exactly what is meant.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    refuse_symlink(path)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Makes `dir` (and missing parents) with mode 0700, or checks that an existing `dir` is a
/// real folder (not a symlink) that no other user can write into.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    own_dir(dir, 0o700)
}

/// Makes `dir` (and missing parents) with `mode`, or checks that an existing `dir` is a real
/// folder (not a symlink) that no other user can write into: for a folder others may read
/// (0755: one a web server serves), but not change.
pub fn own_dir(dir: &Path, mode: u32) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::other(format!(
            "{} is a symlink; meshstack does not write through one (remove it, or pass the \
             folder it points to)",
            dir.display()
        )));
    }
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(io::Error::other(format!(
            "{} can be written by other users (mode {:o}); another user could replace what \
             meshstack writes there: pass a folder of your own (chmod go-w)",
            dir.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

fn refuse_symlink(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::other(format!(
            "{} is a symlink; meshstack does not write through one or replace it (remove it, \
             or write to another path)",
            path.display()
        ))),
        Ok(m) if m.is_dir() => Err(io::Error::other(format!(
            "{} is a folder; pass a file path",
            path.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_whole_files_with_the_mode_and_replaces_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page.html");
        std::fs::write(&path, "old, and longer than the new one").unwrap();
        write_file(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_file(&path, b"public", 0o644).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    }

    #[test]
    fn a_symlink_is_neither_followed_nor_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("out.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = write_file(&link, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn private_folders_are_0700_and_shared_or_linked_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b");
        private_dir(&new).unwrap();
        let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&shared).unwrap_err();
        assert!(err.to_string().contains("written by other users"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&new, &link).unwrap();
        let err = private_dir(&link).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }
}
