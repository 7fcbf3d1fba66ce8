//! Deleting only what the operator means and owns (issue 23, items 3 and 4; issue 21, item
//! 3), through the binary against moto: `down`, `fleet down` and `reap` show what they will
//! delete and ask on a terminal, refuse without one unless `--yes`; the account guard covers
//! `down --name` and `reap`; a fleet takes only environments carrying its tag; `reap` believes
//! only the expiry of the resource that defines a stack; IAM is never taken from a stack that
//! lives in another region.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::{describe, Meshstack, Moto, ACCOUNT, REGION};

fn stack_yaml(name: &str) -> String {
    format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n")
}

/// `ms`'s binary on a pseudo-terminal (util-linux `script`, as
/// [`Meshstack::run_on_terminal`]), with `input` typed at it.
fn run_at_terminal_typing(ms: &Meshstack, args: &[&str], input: &str) -> Output {
    let inner = ms.command(args);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"])
        .current_dir(ms.dir.path())
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().expect("util-linux `script`");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    // Kept open until the binary ends: a closed stdin would be an EOF, a "no" of its own.
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn down_shows_what_it_deletes_and_asks_and_refuses_without_a_terminal_or_yes() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file("stack.yaml", &stack_yaml("asked"));
    let stack = stack.to_str().unwrap();
    let out = ms.run(&["up", "--only", "network", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    let built = aws.inventory("asked").await;
    assert!(!built.is_empty());

    // No terminal, no --yes: refused before any call to AWS.
    moto.start_recording();
    let out = ms.run(&["down", "--only", "network", "--stack", stack]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(text(&out).contains("--yes"), "{}", describe(&out));
    assert_eq!(moto.recorded(), Vec::<(String, bool)>::new());

    // On a terminal: what, where, and a question; "no" deletes nothing.
    let args = ["down", "--only", "network", "--stack", stack];
    let out = run_at_terminal_typing(&ms, &args, "no\n");
    let shown = text(&out);
    for part in ["`asked`", ACCOUNT, REGION, "network", "Delete?"] {
        assert!(shown.contains(part), "no {part:?} in:\n{shown}");
    }
    assert!(shown.contains("nothing was deleted"), "{shown}");
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert_eq!(aws.inventory("asked").await, built);
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());

    // "yes" deletes.
    let out = run_at_terminal_typing(&ms, &args, "yes\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(aws.inventory("asked").await, Default::default());

    // No stack file anywhere: the built-in demo stack is named as such before anything goes.
    let bare = Meshstack::with_moto(&moto);
    let out = run_at_terminal_typing(&bare, &["down"], "\n");
    let shown = text(&out);
    assert!(shown.contains("built-in demo stack"), "{shown}");
    assert_eq!(out.status.code(), Some(1), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_guard_covers_down_by_name_and_reap() {
    let moto = Moto::start();
    let mut ms = Meshstack::with_moto(&moto);
    let cases: [(&[&str], bool); 2] = [
        (
            &["down", "--yes", "--name", "guarded", "--region", REGION],
            false,
        ),
        (&["reap", "--yes", "--region", REGION], true),
    ];
    for (args, by_env) in cases {
        moto.start_recording();
        let mut argv = args.to_vec();
        if by_env {
            ms.extra_env = vec![(
                "MESHSTACK_ALLOWED_ACCOUNT_IDS".into(),
                "111111111111,222222222222".into(),
            )];
        } else {
            ms.extra_env.clear();
            argv.extend(["--allowed-account-ids", "111111111111"]);
        }
        let out = ms.run(&argv);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(ACCOUNT) && err.contains("111111111111"),
            "{args:?}: {err}"
        );
        let recorded = moto.recorded();
        assert!(
            recorded.iter().all(|(op, _)| op == "GetCallerIdentity"),
            "{args:?}: only the identity check may run before the guard: {recorded:?}"
        );
    }
    // The account allowed: reap goes ahead (nothing to reap).
    ms.extra_env = vec![("MESHSTACK_ALLOWED_ACCOUNT_IDS".into(), ACCOUNT.into())];
    let out = ms.run(&["reap", "--yes", "--region", REGION]);
    assert!(out.status.success(), "{}", describe(&out));
}
