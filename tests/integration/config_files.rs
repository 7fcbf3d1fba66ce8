//! Bad stack files through the real binary: every fixture in tests/fixtures/bad-stacks is
//! refused by `plan`, `up` and `down` with exit code 2 and a message naming the file, the field
//! and the fix — and before a single byte goes to AWS.
//!
//! "No API call" is checked from outside the binary: `AWS_ENDPOINT_URL` points at a listener
//! the test owns, and nobody may connect to it. A companion test shows that a valid stack does
//! connect, so a listener that sees nothing means something.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{describe, Meshstack};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-stacks")
}

/// (file, field, message substring) from expected.tsv; field `None` for `-`.
fn expected() -> Vec<(String, Option<String>, String)> {
    let manifest = std::fs::read_to_string(fixtures().join("expected.tsv")).unwrap();
    manifest
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [file, field, message] = cols[..] else {
                panic!("expected.tsv: want 3 tab-separated columns: {line:?}")
            };
            let field = (field != "-").then(|| field.to_string());
            (file.to_string(), field, message.to_string())
        })
        .collect()
}

/// A listener nothing should talk to; `accept` on it never blocks.
fn silent_endpoint() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    (listener, endpoint)
}

#[test]
fn every_bad_stack_is_refused_with_exit_2_before_any_api_call() {
    let (listener, endpoint) = silent_endpoint();
    let ms = Meshstack::new(Some(endpoint));
    let cases = expected();
    // The unit test in config.rs checks that expected.tsv lists every fixture; here, only
    // that the list was read at all.
    assert!(cases.len() >= 60, "only {} fixtures listed", cases.len());

    let mut failures = Vec::new();
    for (file, field, message) in &cases {
        let path = fixtures().join(file);
        let path = path.to_str().unwrap();
        let out_dir = ms.state_dir().with_file_name("rendered");
        let out_dir = out_dir.to_str().unwrap();
        for command in ["plan", "up", "down", "render"] {
            let out = match command {
                "render" => ms.run(&[command, "--stack", path, "--out", out_dir]),
                _ => ms.run(&[command, "--stack", path]),
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut wrong = Vec::new();
            if out.status.code() != Some(2) {
                wrong.push("exit code is not 2".to_string());
            }
            if !stderr.contains(file.as_str()) {
                wrong.push("stderr does not name the file".to_string());
            }
            if let Some(field) = field {
                if !stderr.contains(&format!(": {field}: ")) {
                    wrong.push(format!("stderr does not name the field `{field}`"));
                }
            }
            if !stderr.contains(message.as_str()) {
                wrong.push(format!("stderr lacks {message:?}"));
            }
            if stderr.contains("panicked") || stderr.contains("backtrace") {
                wrong.push("a panic".to_string());
            }
            if !out.stdout.is_empty() {
                wrong.push("something on stdout".to_string());
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{command} {file}: {}\n{}",
                    wrong.join("; "),
                    describe(&out)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs wrong:\n{}",
        failures.len(),
        cases.len() * 4,
        failures.join("\n\n")
    );

    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => {
            panic!("a bad stack still led to a connection to the endpoint (from {peer})")
        }
        Err(e) => panic!("accept: {e}"),
    }
    // Refused input leaves nothing behind either: no state folder, no lock.
    assert!(
        !ms.state_dir().exists(),
        "a refused stack created {}",
        ms.state_dir().display()
    );
}

/// The check above can fail: the same setup with a valid stack does reach the listener.
#[test]
fn a_valid_stack_does_reach_the_endpoint() {
    let (listener, endpoint) = silent_endpoint();
    let ms = Meshstack::new(Some(endpoint));
    let stack = ms.stack_file("ok.yaml", "name: reaches-out\nregion: us-east-1\n");
    let mut child = ms
        // The AWS stages only: the Kubernetes stages would first need helm on the PATH.
        .command(&[
            "up",
            "--only",
            "network",
            "--stack",
            stack.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let connected = loop {
        match listener.accept() {
            Ok((stream, _)) => break Some(stream),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if Instant::now() > deadline {
            break None;
        }
        if child.try_wait().unwrap().is_some() {
            // A connection made before it exited still waits in the accept queue.
            break listener.accept().ok().map(|(s, _)| s);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        connected.is_some(),
        "`up` with a valid stack made no connection in 10 s: the zero-connection check proves nothing"
    );
}

#[test]
fn a_missing_stack_file_is_a_usage_error_naming_the_path() {
    let (listener, endpoint) = silent_endpoint();
    let ms = Meshstack::new(Some(endpoint));
    for command in ["plan", "up", "down", "status"] {
        let out = ms.run(&[command, "--stack", "nope.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("nope.yaml"),
            "{command}: {}",
            describe(&out)
        );
        // The OS's reason, not just "cannot read": missing, a directory and unreadable
        // call for different fixes.
        assert!(
            stderr.contains("No such file or directory"),
            "{command}: {}",
            describe(&out)
        );
        assert!(
            !stderr.contains("panicked"),
            "{command}: {}",
            describe(&out)
        );
    }
    assert!(matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
}

/// Issue 9, defect 6: a stack file far larger than any stack (a log, an image, a disk device
/// named by mistake) is refused without being read whole, naming the file.
#[test]
fn an_oversized_stack_file_is_refused_unread() {
    let (listener, endpoint) = silent_endpoint();
    let ms = Meshstack::new(Some(endpoint));
    // 2 MiB of valid YAML: a comment line repeated, after a valid stack.
    let mut yaml = String::from("name: big\n");
    while yaml.len() < 2 * 1024 * 1024 {
        yaml.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let path = ms.stack_file("big.yaml", &yaml);
    let path = path.to_str().unwrap();
    for command in ["plan", "up", "down"] {
        let out = ms.run(&[command, "--stack", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", describe(&out));
        assert!(
            stderr.contains("big.yaml") && stderr.contains("larger than 1024 KiB"),
            "{command}: {stderr}"
        );
    }
    assert!(matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
}
