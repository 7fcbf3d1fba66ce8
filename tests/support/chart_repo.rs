//! A helm chart repository served over HTTP on localhost: a copy of the pinned charts
//! ([`super::k8s::pinned_charts`]) with chosen archives given other bytes, as a compromised
//! repository or mirror would serve them.
//!
//! A tampered archive is the pinned one with a second, empty gzip member appended: the same
//! chart to helm (Go's gzip reader reads every member, and the tar inside ends where it
//! ended), but other bytes and so another sha256. The index's `digest` of that version is
//! rewritten to the new bytes' sha256, as an attacker who controls the repository would: the
//! repository is consistent with itself, and only a pin held elsewhere can tell.
//!
//! The server answers `GET /<file>` with the file, anything else with 404; HTTP/1.0, one
//! request per connection. Not modelled: HEAD, ranges, conditional requests, TLS.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// An empty gzip member (RFC 1952: the header, one empty final fixed-Huffman block (RFC 1951),
/// CRC32 0, size 0).
const EMPTY_GZIP_MEMBER: [u8; 20] = [
    0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A served chart repository; it keeps serving for as long as the test process runs.
pub struct ChartRepo {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// The served folder.
    pub dir: tempfile::TempDir,
}

impl ChartRepo {
    /// The pinned charts, with the archive of every version of each chart in `tampered`
    /// given other bytes (and the index's digest of it rewritten to match).
    pub fn tampered(tampered: &[&str]) -> ChartRepo {
        let dir = tempfile::tempdir().unwrap();
        let pinned = super::k8s::pinned_charts();
        let mut index = std::fs::read_to_string(pinned.join("index.yaml")).unwrap();
        for entry in std::fs::read_dir(&pinned).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".tgz") && name != "index.yaml" {
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            let chart = name
                .strip_suffix(".tgz")
                .and_then(|stem| stem.rsplit_once('-'))
                .map(|(chart, _)| chart.to_string());
            if chart.is_some_and(|c| tampered.contains(&c.as_str())) {
                let before = sha256(&bytes);
                bytes.extend_from_slice(&EMPTY_GZIP_MEMBER);
                let after = sha256(&bytes);
                assert!(
                    index.contains(&before),
                    "{name}'s digest is not in the index"
                );
                index = index.replace(&before, &after);
            }
            if name != "index.yaml" {
                std::fs::write(dir.path().join(&name), bytes).unwrap();
            }
        }
        std::fs::write(dir.path().join("index.yaml"), index).unwrap();
        let url = serve(dir.path().to_path_buf());
        ChartRepo { url, dir }
    }

    /// The sha256 of a served file, as 64 hex digits.
    pub fn digest(&self, file: &str) -> String {
        sha256(&std::fs::read(self.dir.path().join(file)).unwrap())
    }
}

/// The sha256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves `dir` on a free localhost port from a thread; its URL.
fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || answer(&dir, stream));
        }
    });
    url
}

fn answer(dir: &Path, mut stream: std::net::TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The headers, up to the blank line.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let file = (line.starts_with("GET ") && !name.is_empty() && !name.contains(['/', '\\']))
        .then(|| std::fs::read(dir.join(name)).ok())
        .flatten();
    let _ = match file {
        Some(body) => {
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(&body)
        }
        None => stream
            .write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}
