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

fn nat_single(name: &str) -> String {
    format!("{}network:\n  nat: single\n", stack_yaml(name))
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_down_takes_only_its_tagged_environments() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let ms = Meshstack::with_moto(&moto);
    let fleet = ms.stack_file("demo.yaml", &nat_single("demo"));
    let fleet = fleet.to_str().unwrap();
    let out = ms.run(&[
        "fleet", "up", "--stack", fleet, "--count", "2", "--only", "network",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    // A stack of its own that happens to carry the name environment 3 would have.
    let own = ms.stack_file("demo-3.yaml", &nat_single("demo-3"));
    let out = ms.run(&["up", "--stack", own.to_str().unwrap(), "--only", "network"]);
    assert!(out.status.success(), "{}", describe(&out));
    let theirs = aws.inventory("demo-3").await;
    assert!(!theirs.is_empty());

    let out = ms.run(&[
        "fleet", "down", "--yes", "--stack", fleet, "--count", "3", "--only", "network",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("left alone: demo-3") && err.contains("meshstack.io/fleet"),
        "{err}"
    );
    assert_eq!(aws.inventory("demo-1").await, Default::default());
    assert_eq!(aws.inventory("demo-2").await, Default::default());
    assert_eq!(
        aws.inventory("demo-3").await,
        theirs,
        "the other stack stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reap_reads_the_expiry_only_from_the_resource_that_defines_the_stack() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file("victim.yaml", &nat_single("victim"));
    let out = ms.run(&[
        "up",
        "--stack",
        stack.to_str().unwrap(),
        "--only",
        "network,nat",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let built = aws.inventory("victim").await;

    // Someone who may tag an Elastic IP and a subnet, not the VPC, schedules the stack's
    // deletion: an expiry long past on both.
    let ec2 = &aws.ec2;
    let tag = |id: String| async move {
        ec2.create_tags()
            .resources(id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("meshstack.io/expires-at")
                    .value("2020-01-01T00:00:00Z")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    };
    let by_stack = aws_sdk_ec2::types::Filter::builder()
        .name("tag:meshstack.io/stack")
        .values("victim")
        .build();
    let eips = aws
        .ec2
        .describe_addresses()
        .filters(by_stack.clone())
        .send()
        .await
        .unwrap();
    let eip = eips.addresses()[0].allocation_id().unwrap().to_string();
    tag(eip).await;
    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(by_stack)
        .send()
        .await
        .unwrap();
    tag(subnets.subnets()[0].subnet_id().unwrap().to_string()).await;

    let out = ms.run(&["reap", "--yes", "--region", REGION]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(0 expired)"),
        "{}",
        describe(&out)
    );
    assert_eq!(aws.inventory("victim").await, built, "nothing of it reaped");
}

/// The role's `meshstack.io/region` tag, if it exists.
async fn role_region(aws: &crate::support::Clients, name: &str) -> Option<Option<String>> {
    let got = aws.iam.get_role().role_name(name).send().await.ok()?;
    Some(
        got.role()?
            .tags()
            .iter()
            .find(|t| t.key() == "meshstack.io/region")
            .map(|t| t.value().to_string()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_name_in_a_second_region_is_refused_and_never_takes_the_first_ones_roles() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let here = Meshstack::with_moto(&moto);
    let stack = here.stack_file("twin.yaml", &stack_yaml("twin"));
    let stack = stack.to_str().unwrap();
    let out = here.run(&["up", "--only", "iam", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    for role in ["twin-cluster", "twin-node", "twin-karpenter"] {
        assert_eq!(
            role_region(&aws, role).await,
            Some(Some(REGION.to_string())),
            "{role}"
        );
    }

    // Another folder, the same name, another region: refused before any write, naming the
    // region that owns the roles.
    let there = Meshstack::with_moto(&moto);
    let other = there.stack_file(
        "twin.yaml",
        "name: twin\nregion: eu-west-1\nkubernetes_version: \"1.36\"\n",
    );
    moto.start_recording();
    let out = there.run(&[
        "up",
        "--only",
        "network,iam",
        "--stack",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(REGION) && err.contains("twin-node"), "{err}");
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());

    // A teardown in the other region (as `reap` there would run it) leaves the roles alone.
    let out = there.run(&["down", "--yes", "--name", "twin", "--region", "eu-west-1"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left alone"),
        "{}",
        describe(&out)
    );
    assert!(
        role_region(&aws, "twin-node").await.is_some(),
        "still there"
    );

    // A role of an earlier meshstack (no region tag) is adopted by the region that runs it.
    aws.iam
        .untag_role()
        .role_name("twin-node")
        .tag_keys("meshstack.io/region")
        .send()
        .await
        .unwrap();
    assert_eq!(role_region(&aws, "twin-node").await, Some(None));
    let out = here.run(&["up", "--only", "iam", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        role_region(&aws, "twin-node").await,
        Some(Some(REGION.to_string()))
    );
    let out = here.run(&["down", "--yes", "--only", "iam", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        role_region(&aws, "twin-node").await,
        None,
        "deleted at home"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_guard_covers_writes_to_s3_state() {
    let moto = Moto::start();
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file(
        "guarded.yaml",
        &format!(
            "{}allowed_account_ids: [\"111111111111\"]\n",
            stack_yaml("guarded")
        ),
    );
    let stack = stack.to_str().unwrap();
    moto.start_recording();
    let out = ms.run(&["state", "init", "s3://guarded-state/x", "--stack", stack]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(ACCOUNT) && err.contains("111111111111"),
        "{err}"
    );
    let out = ms.run(&[
        "state",
        "migrate",
        "--stack",
        stack,
        "--to",
        "s3://guarded-state/x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let recorded = moto.recorded();
    assert!(
        recorded.iter().all(|(op, _)| op == "GetCallerIdentity"),
        "only the identity check may run before the guard: {recorded:?}"
    );

    // `up` and `down` take their lock in the bucket before their preflight: the guard comes
    // before the lock (before: lock.json was written to the bucket, then the run refused).
    let open = ms.stack_file("open.yaml", &stack_yaml("guarded"));
    let init = ms.run(&[
        "state",
        "init",
        "s3://guarded-state/x",
        "--stack",
        open.to_str().unwrap(),
    ]);
    assert!(init.status.success(), "{}", describe(&init));
    moto.start_recording();
    for command in [&["up", "--only", "network"][..], &["down", "--yes"][..]] {
        let mut args = command.to_vec();
        args.extend(["--stack", stack, "--state", "s3://guarded-state/x"]);
        let out = ms.run(&args);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    }
    let recorded = moto.recorded();
    assert!(
        recorded.iter().all(|(op, _)| op == "GetCallerIdentity"),
        "only the identity check may run before the guard: {recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reap_and_fleet_down_ask_on_a_terminal_too() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let ms = Meshstack::with_moto(&moto);

    // reap: an expired stack is listed, then the question; "no" keeps it, "yes" reaps it.
    let stack = ms.stack_file("old.yaml", &nat_single("old"));
    let out = ms.run(&[
        "up",
        "--stack",
        stack.to_str().unwrap(),
        "--only",
        "network",
        "--expires-in",
        "1s",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let built = aws.inventory("old").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = ms.run(&["reap", "--region", REGION]);
        assert!(out.status.success(), "{}", describe(&out));
        if String::from_utf8_lossy(&out.stdout).contains("(1 expired)") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", describe(&out));
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let out = run_at_terminal_typing(&ms, &["reap", "--region", REGION], "no\n");
    let shown = text(&out);
    assert!(
        shown.contains("`old`") && shown.contains("Delete?") && shown.contains(ACCOUNT),
        "{shown}"
    );
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert_eq!(aws.inventory("old").await, built);
    let out = run_at_terminal_typing(&ms, &["reap", "--region", REGION], "yes\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(aws.inventory("old").await, Default::default());

    // fleet down: refused without a terminal or --yes; on one, the environments, then the
    // question.
    let fleet = ms.stack_file("ws.yaml", &nat_single("ws"));
    let fleet = fleet.to_str().unwrap();
    let out = ms.run(&[
        "fleet", "up", "--stack", fleet, "--count", "2", "--only", "network",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let built = aws.inventory("ws-1").await;
    let args = [
        "fleet", "down", "--stack", fleet, "--count", "2", "--only", "network",
    ];
    moto.start_recording();
    let out = ms.run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(moto.recorded(), Vec::<(String, bool)>::new());
    let out = run_at_terminal_typing(&ms, &args, "no\n");
    let shown = text(&out);
    assert!(
        shown.contains("`ws-1`") && shown.contains("`ws-2`") && shown.contains("Delete?"),
        "{shown}"
    );
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert_eq!(aws.inventory("ws-1").await, built);
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());
}
