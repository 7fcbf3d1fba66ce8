//! Files the user points meshstack at (`--html`, `render --out`), through the real binary:
//! a symlink planted where the file goes — by another user of a shared workshop host, say —
//! is refused, never followed, and the file it points to is left alone; a file that is
//! written appears whole, through a temporary file and a rename.

use std::path::Path;

use crate::support::{describe, Meshstack};

/// A file the attacker wants overwritten, and a symlink to it at `at`.
fn plant(dir: &Path, at: &Path) -> std::path::PathBuf {
    let victim = dir.join("victim");
    std::fs::write(&victim, "the operator's file").unwrap();
    std::os::unix::fs::symlink(&victim, at).unwrap();
    victim
}

#[test]
fn a_page_is_not_written_through_a_planted_symlink() {
    let ms = Meshstack::new(None);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    let victim = plant(dir.path(), &page);
    let dumps = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/locality/clusters-graphql-1b-seed.txt"
    );
    let out = ms.run(&[
        "verify",
        "--clusters-dump",
        &format!("af-south-1b={dumps}"),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a symlink"), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "the operator's file"
    );
    assert!(std::fs::symlink_metadata(&page)
        .unwrap()
        .file_type()
        .is_symlink());
    // Without the symlink the page is written, whole, and nothing else is left beside it.
    std::fs::remove_file(&page).unwrap();
    let out = ms.run(&[
        "verify",
        "--clusters-dump",
        &format!("af-south-1b={dumps}"),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .trim_end()
            .ends_with("</html>"),
        "{}",
        describe(&out)
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn render_refuses_a_planted_symlink_and_a_folder_others_can_write() {
    let ms = Meshstack::new(None);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(out_dir.join("karpenter")).unwrap();
    let victim = plant(dir.path(), &out_dir.join("karpenter/nodepool.yaml"));
    let out = ms.run(&["render", "--out", out_dir.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a symlink"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "the operator's file"
    );

    // A folder every user can write into: another user could swap a manifest after it is
    // written and before it is applied.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = ms.run(&["render", "--out", shared.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can be written by other users"),
        "{}",
        describe(&out)
    );

    // A fresh folder: made private, every file written.
    let fresh = dir.path().join("fresh");
    let out = ms.run(&["render", "--out", fresh.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(fresh.join("karpenter/nodepool.yaml").is_file());
}
