//! Shared state in S3 through the real binary, against moto's S3 (which enforces
//! `If-None-Match: *` and `If-Match` like S3): one writer at a time wherever it runs, a killed
//! holder's lease running out, a journal changed behind a run, moving state between the local
//! folder and S3, no secret in any object version, and S3 throttling retried.
//!
//! Every scenario uses separate working folders for its processes, as separate machines
//! would: nothing is shared but moto.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::fault_proxy::{FaultProxy, Faults};
use crate::support::{api_calls, describe, expected_full_inventory, Meshstack, Moto, REGION};

const AWS_ONLY: &str = "network,nat,iam,cluster,nodegroup,karpenter-infra";
const AWS_STAGES: [&str; 6] = [
    "network",
    "nat",
    "iam",
    "cluster",
    "nodegroup",
    "karpenter-infra",
];
const BUCKET: &str = "team-state";
const URL: &str = "s3://team-state/meshstack";

fn stack_yaml(name: &str) -> String {
    format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\nstate: {URL}\n")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key(stack: &str, object: &str) -> String {
    format!("meshstack/{stack}/{object}")
}

/// An S3 client on moto (path-style: moto does not resolve bucket host names).
async fn s3(moto: &Moto) -> aws_sdk_s3::Client {
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    let sdk = meshstack::aws::sdk_defaults()
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// The object's bytes and ETag, or `None`.
async fn get(s3: &aws_sdk_s3::Client, key: &str) -> Option<(Vec<u8>, String)> {
    let out = s3.get_object().bucket(BUCKET).key(key).send().await.ok()?;
    let etag = out.e_tag().unwrap_or_default().to_string();
    let body = out.body.collect().await.unwrap().into_bytes().to_vec();
    Some((body, etag))
}

/// Every version (and delete marker) of every object in the bucket, as (key, version id,
/// is delete marker).
async fn all_versions(s3: &aws_sdk_s3::Client) -> Vec<(String, String, bool)> {
    let out = s3
        .list_object_versions()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(
        !out.is_truncated().unwrap_or(false),
        "more versions than one page"
    );
    let mut all: Vec<(String, String, bool)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_string(),
                v.version_id().unwrap().to_string(),
                false,
            )
        })
        .collect();
    all.extend(out.delete_markers().iter().map(|m| {
        (
            m.key().unwrap().to_string(),
            m.version_id().unwrap().to_string(),
            true,
        )
    }));
    all
}

/// The versions of one object, newest first, with their bodies.
async fn versions_of(s3: &aws_sdk_s3::Client, key: &str) -> Vec<Vec<u8>> {
    let out = s3
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(key)
        .send()
        .await
        .unwrap();
    let mut versions: Vec<_> = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .map(|v| {
            (
                v.last_modified().cloned(),
                v.is_latest().unwrap_or(false),
                v.version_id().unwrap().to_string(),
            )
        })
        .collect();
    // Latest first, then newest first.
    versions.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut bodies = Vec::new();
    for (_, _, id) in versions {
        let out = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .version_id(id)
            .send()
            .await
            .unwrap();
        bodies.push(out.body.collect().await.unwrap().into_bytes().to_vec());
    }
    bodies
}

/// Waits until `key` exists, while `child` runs.
async fn wait_for_object(s3: &aws_sdk_s3::Client, key: &str, child: &mut Child) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((body, _)) = get(s3, key).await {
            return body;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {key} appeared");
        }
        assert!(Instant::now() < deadline, "{key} never appeared");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

/// moto, the state bucket made by `meshstack state init`, and a folder per "machine".
struct Shared {
    moto: Moto,
    s3: aws_sdk_s3::Client,
}

impl Shared {
    async fn start() -> Shared {
        let moto = Moto::start();
        let s3 = s3(&moto).await;
        let ms = Meshstack::with_moto(&moto);
        let out = ms.run(&["state", "init", URL]);
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for want in [
            "bucket team-state: created in us-east-1",
            "versioning: turned on",
            "public access: blocked",
            "default encryption: SSE-S3 (AES256) turned on",
            "tags: set meshstack.io/purpose=state",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        let versioning = s3.get_bucket_versioning().bucket(BUCKET).send().await;
        // The SDK cannot parse moto's answer here; the raw body says it.
        if let Ok(v) = versioning {
            assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"));
        }
        Shared { moto, s3 }
    }

    /// A "machine": its own working folder, with the stack file in it.
    fn machine(&self, stack: &str) -> (Meshstack, String) {
        let ms = Meshstack::with_moto(&self.moto);
        let file = ms.stack_file("stack.yaml", &stack_yaml(stack));
        (ms, file.to_str().unwrap().to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ups_from_two_folders_on_one_s3_state_one_runs_the_other_names_it() {
    let shared = Shared::start().await;
    let (a, a_stack) = shared.machine("team");
    let (b, b_stack) = shared.machine("team");
    let (c, c_stack) = shared.machine("team");

    // `state init` again changes nothing and says so.
    let again = c.run(&["state", "init", URL]);
    assert!(again.status.success(), "{}", describe(&again));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("exists already (yours)"), "{text}");
    assert!(text.contains("versioning: on already"), "{text}");

    let mut first = a
        .command(&["up", "--only", AWS_ONLY, "--stack", &a_stack, "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    let lock = wait_for_object(&shared.s3, &key("team", "lock.json"), &mut first).await;
    // Freeze the holder with its lock taken, so the second run is certain to meet it.
    signal(&first, "STOP");
    let second = b.run(&["up", "--only", AWS_ONLY, "--stack", &b_stack]);
    signal(&first, "CONT");
    let first = first.wait_with_output().unwrap();

    let holder: Value = serde_json::from_slice(&lock).unwrap();
    assert_eq!(holder["pid"], pid, "{holder}");
    assert!(first.status.success(), "first: {}", describe(&first));
    assert!(!second.status.success(), "second: {}", describe(&second));
    let err = stderr(&second);
    for want in [
        format!("stack is locked by pid {}", holder["pid"]),
        format!("lock ID {}", holder["id"].as_str().unwrap()),
        format!("as {}", holder["who"].as_str().unwrap()),
        "its lease ends at".to_string(),
    ] {
        assert!(
            err.contains(&want),
            "{want:?} missing: {}",
            describe(&second)
        );
    }
    assert!(
        holder["who"].as_str().unwrap().starts_with("arn:aws:"),
        "{holder}"
    );
    // The holder released its lock; neither run kept state in its folder.
    assert!(get(&shared.s3, &key("team", "lock.json")).await.is_none());
    assert!(!a.state_dir().exists() && !b.state_dir().exists());
    assert_eq!(
        shared.moto.clients().await.inventory("team").await,
        expected_full_inventory()
    );
    let calls = api_calls(&first);
    assert_eq!(
        calls["state"]["location"],
        format!("{URL}/team/"),
        "{calls}"
    );
    assert!(calls["state"]["writes"].as_u64().unwrap() > 2, "{calls}");
    eprintln!(
        "two writers: the second exited {:?} naming the holder; the holder's state requests: {} reads, {} writes",
        second.status.code(),
        calls["state"]["reads"],
        calls["state"]["writes"]
    );

    // A third folder sees every stage done: the journal is in S3, the truth in moto.
    // Exit 3: the Kubernetes stages, never selected here, are still pending.
    let status = c.run(&["status", "--stack", &c_stack, "-o", "json"]);
    assert_eq!(status.status.code(), Some(3), "{}", describe(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    for id in AWS_STAGES {
        let row = status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == id)
            .unwrap();
        assert_eq!(row["state"], "done", "{id}: {status}");
        assert_eq!(row["journal"], "done", "{id}: {status}");
    }
    let show = c.run(&["state", "show", "--stack", &c_stack, "-o", "json"]);
    assert!(show.status.success(), "{}", describe(&show));
    let show: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["lock"], Value::Null, "{show}");
    assert_eq!(
        show["journal"]["written_by"]["lock_id"], holder["id"],
        "{show}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holder_s_lease_runs_out_and_only_its_lock_id_breaks_it() {
    let shared = Shared::start().await;
    // The holder's cluster stays CREATING (as a real one does for ~15 minutes), so the holder
    // is provably still working when the test waits for its first renewal: without the hold a
    // fast machine finished the AWS stages, and released the lock, between two polls.
    let hold = Faults {
        creating_for: [("eks:DescribeCluster".to_string(), Duration::from_secs(3600))].into(),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&shared.moto.endpoint(), hold);
    let mut a = Meshstack::new(Some(proxy.endpoint()));
    let a_stack = a.stack_file("stack.yaml", &stack_yaml("killed"));
    let a_stack = a_stack.to_str().unwrap().to_string();
    let (mut b, b_stack) = shared.machine("killed");
    // Lease 120 s / 20 = 6 s, renewed every 1.5 s; a state request may take 3 s. (At 1/60 a
    // renewal's 1 s budget is less than moto, one Python process, sometimes takes to answer
    // while it computes a large EC2 answer for the same run.)
    for ms in [&mut a, &mut b] {
        ms.extra_env
            .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    }
    let lock_key = key("killed", "lock.json");

    let mut holder = a
        .command(&["up", "--only", AWS_ONLY, "--stack", &a_stack])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_object(&shared.s3, &key("killed", "state.json"), &mut holder).await;
    // The holder renews its lease while it works.
    let lease = |body: Vec<u8>| {
        serde_json::from_slice::<Value>(&body).unwrap()["lease_expires_at"]
            .as_u64()
            .unwrap()
    };
    let taken = lease(get(&shared.s3, &lock_key).await.unwrap().0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lease(
        get(&shared.s3, &lock_key)
            .await
            .expect("the lock went while its holder waited for the cluster")
            .0,
    ) == taken
    {
        if let Some(status) = holder.try_wait().unwrap() {
            panic!("the holder ended ({status}) without renewing its lease");
        }
        assert!(Instant::now() < deadline, "the lease was never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.kill().unwrap(); // SIGKILL: no release
    holder.wait().unwrap();
    let killed = Instant::now();
    let (lock, etag) = get(&shared.s3, &lock_key)
        .await
        .expect("the killed run's lock");
    let lock: Value = serde_json::from_slice(&lock).unwrap();
    let id = lock["id"].as_str().unwrap().to_string();
    let lease_end = lock["lease_expires_at"].as_u64().unwrap();

    // Within the lease: held, and not even the right ID breaks it.
    let up = |extra: &[&str]| {
        let mut args = vec!["up", "--only", AWS_ONLY, "--stack", &b_stack];
        args.extend_from_slice(extra);
        b.run(&args)
    };
    let out = up(&["--force-unlock", &id]);
    let now = unix_now();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    if now < lease_end {
        assert!(
            stderr(&out).contains("stack is locked by"),
            "{}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains("its lease ends at"),
            "{}",
            describe(&out)
        );
    }

    // After the lease: stale, and the message gives the ID to break it with.
    while unix_now() <= lease_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = up(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("stale lock"), "{err}");
    assert!(err.contains("its lease ended at"), "{err}");
    assert!(err.contains(&format!("--force-unlock {id}")), "{err}");
    eprintln!(
        "killed holder: its lock reported stale {:?} after the kill (lease 120 s / 20)",
        killed.elapsed()
    );
    // A bare --force-unlock is for local locks: it does not break a shared one.
    let out = up(&["--force-unlock"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("stale lock"), "{}", describe(&out));

    // The wrong ID: refused, and the lock is untouched.
    let out = up(&["--force-unlock", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("does not match the lock"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("nothing was removed"),
        "{}",
        describe(&out)
    );
    assert_eq!(get(&shared.s3, &lock_key).await.unwrap().1, etag);

    // The right ID: the lock goes, the run takes over and converges without duplicates.
    let out = up(&["--force-unlock", &id, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        shared.moto.clients().await.inventory("killed").await,
        expected_full_inventory()
    );
    assert!(get(&shared.s3, &lock_key).await.is_none(), "lock released");
    let again = up(&["-o", "json"]);
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(api_calls(&again)["writes"], 0, "{}", describe(&again));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_changed_behind_a_running_up_stops_it_and_s3_keeps_both_versions() {
    let shared = Shared::start().await;
    let (a, a_stack) = shared.machine("raced");
    let journal_key = key("raced", "state.json");

    let mut run = a
        .command(&["up", "--only", AWS_ONLY, "--stack", &a_stack])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = run.id();
    wait_for_object(&shared.s3, &journal_key, &mut run).await;
    signal(&run, "STOP");
    // Another writer replaces the journal between two of the run's writes.
    let (body, _) = get(&shared.s3, &journal_key).await.unwrap();
    let mut theirs: Value = serde_json::from_slice(&body).unwrap();
    theirs["written_by"] = serde_json::json!({
        "who": "arn:aws:iam::123456789012:user/intruder",
        "host": "intruder-host",
        "pid": 4242,
        "command": "state push",
        "at": unix_now(),
    });
    let theirs = serde_json::to_vec_pretty(&theirs).unwrap();
    shared
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(&journal_key)
        .body(theirs.clone().into())
        .send()
        .await
        .unwrap();
    signal(&run, "CONT");
    let out = run.wait_with_output().unwrap();

    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    for want in [
        format!("the journal {URL}/raced/state.json changed behind this run"),
        format!("this run, pid {pid} on host "),
        "written by pid 4242 on host intruder-host as arn:aws:iam::123456789012:user/intruder"
            .to_string(),
        "nothing was overwritten".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} missing: {}", describe(&out));
    }
    // Nothing lost: the other writer's version is the current one, the run's are the
    // versions before it.
    let versions = versions_of(&shared.s3, &journal_key).await;
    assert_eq!(
        versions[0], theirs,
        "the other writer's version was overwritten"
    );
    let ours: Vec<Value> = versions[1..]
        .iter()
        .map(|v| serde_json::from_slice(v).unwrap())
        .collect();
    assert!(!ours.is_empty());
    assert!(
        ours.iter().all(|v| v["written_by"]["pid"] == pid),
        "{ours:?}"
    );
    eprintln!(
        "journal changed behind the run: exit 1, nothing overwritten; S3 keeps {} versions (the other writer's and {} of the run's)",
        versions.len(),
        ours.len()
    );
    // The run let go of its lock; the next up takes over from the other writer's journal.
    assert!(get(&shared.s3, &key("raced", "lock.json")).await.is_none());
    let next = a.run(&["up", "--only", AWS_ONLY, "--stack", &a_stack]);
    assert!(next.status.success(), "{}", describe(&next));
    assert_eq!(
        shared.moto.clients().await.inventory("raced").await,
        expected_full_inventory()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn state_migrates_local_to_s3_and_back_byte_for_byte_and_no_version_holds_the_secret() {
    let shared = Shared::start().await;
    let mut ms = Meshstack::with_moto(&shared.moto);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let canary = format!("canary-SECRET-{:x}{}", nanos, std::process::id());
    ms.extra_env
        .push(("AWS_SECRET_ACCESS_KEY".into(), canary.clone()));
    // Local state: no `state:` in the stack file.
    let stack = ms.stack_file(
        "stack.yaml",
        "name: moved\nregion: us-east-1\nkubernetes_version: \"1.36\"\n",
    );
    let stack = stack.to_str().unwrap();
    let local = ms.state_dir().join("moved").join("state.json");
    let journal_key = key("moved", "state.json");

    let out = ms.run(&["up", "--only", "network,iam", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    let original = std::fs::read(&local).unwrap();

    // Local -> S3: the same bytes; the local journal is gone.
    let out = ms.run(&["state", "migrate", "--stack", stack, "--to", URL]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("put `state: {URL}`")),
        "{}",
        describe(&out)
    );
    assert_eq!(get(&shared.s3, &journal_key).await.unwrap().0, original);
    assert!(!local.exists(), "the local journal should have moved");
    // Migrating onto a journal that is there already is refused.
    std::fs::write(&local, &original).unwrap();
    let out = ms.run(&["state", "migrate", "--stack", stack, "--to", URL]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("holds a journal already"),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(&local).unwrap();

    // Readers find it there.
    let out = ms.run(&["state", "pull", "--stack", stack, "--state", URL]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(out.stdout, original);
    let out = ms.run(&["status", "--stack", stack, "--state", URL, "-o", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["stages"][0]["journal"], "done", "{status}");

    // pull writes a private copy; push puts it back (under the lock), and refuses another
    // stack's journal before touching anything.
    let pulled = ms.dir.path().join("pulled.json");
    let out = ms.run(&[
        "state",
        "pull",
        "--stack",
        stack,
        "--state",
        URL,
        "--out",
        pulled.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&pulled).unwrap(), original);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pulled).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut other: Value = serde_json::from_slice(&original).unwrap();
    other["stack"] = "someone-else".into();
    let other_file = ms.dir.path().join("other.json");
    std::fs::write(&other_file, serde_json::to_vec(&other).unwrap()).unwrap();
    let push = |file: &std::path::Path| {
        ms.run(&[
            "state",
            "push",
            "--stack",
            stack,
            "--state",
            URL,
            file.to_str().unwrap(),
        ])
    };
    let out = push(&other_file);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("is the journal of stack `someone-else`, not of `moved`"),
        "{}",
        describe(&out)
    );
    let out = push(&pulled);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replacing the journal there"),
        "{}",
        describe(&out)
    );
    assert_eq!(get(&shared.s3, &journal_key).await.unwrap().0, original);

    // S3 -> local: the same bytes again.
    let out = ms.run(&[
        "state", "migrate", "--stack", stack, "--state", URL, "--to", "local",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), original);
    assert!(get(&shared.s3, &journal_key).await.is_none());

    // A run on S3 state writes lock and journal versions there; then no version of any
    // object in the bucket holds the secret key, and every version is encrypted.
    let out = ms.run(&["up", "--only", "network", "--stack", stack, "--state", URL]);
    assert!(out.status.success(), "{}", describe(&out));
    for command in ["status", "plan", "down"] {
        let mut args = vec![command, "--stack", stack, "--state", URL];
        if command == "down" {
            args.push("--yes");
        }
        let out = ms.run(&args);
        // `status` exits 3: only the network stage is up.
        let expected = if command == "status" { 3 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{command}: {}",
            describe(&out)
        );
    }
    let (journal, _) = get(&shared.s3, &journal_key).await.unwrap();
    let journal: Value = serde_json::from_slice(&journal).unwrap();
    assert_eq!(
        journal["stages"]["network"]["status"], "destroyed",
        "{journal}"
    );
    let versions = all_versions(&shared.s3).await;
    let objects: Vec<&(String, String, bool)> = versions.iter().filter(|v| !v.2).collect();
    assert!(
        objects.iter().any(|v| v.0.ends_with("lock.json"))
            && objects.iter().filter(|v| v.0 == journal_key).count() >= 3,
        "{versions:?}"
    );
    let scanned = objects.len();
    for (key, version, _) in objects {
        let out = shared
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "{key} {version}"
        );
        let body = out.body.collect().await.unwrap().into_bytes();
        assert!(
            !String::from_utf8_lossy(&body).contains(&canary),
            "{key} version {version} holds the secret key"
        );
    }
    eprintln!(
        "migrate local -> S3 -> local: {} bytes byte for byte; {scanned} object versions scanned, all SSE-S3, none holds the canary",
        original.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_slow_down_answers_are_retried() {
    let shared = Shared::start().await;
    let faults = Faults {
        throttles: [
            ("s3:PutObject".to_string(), 3),
            ("s3:GetObject".to_string(), 2),
            ("s3:DeleteObject".to_string(), 1),
            ("s3:GetBucketVersioning".to_string(), 1),
        ]
        .into(),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&shared.moto.endpoint(), faults);
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    let stack = ms.stack_file("stack.yaml", &stack_yaml("slowed"));
    let out = ms.run(&[
        "up",
        "--only",
        "network",
        "--stack",
        stack.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let stats = proxy.stats();
    assert_eq!(stats.throttled, 7, "{stats:?}");
    assert!(
        !stats.ops.keys().any(|op| op.ends_with(":Unknown")),
        "an S3 request the proxy cannot name: {stats:?}"
    );
    let state = &api_calls(&out)["state"];
    assert_eq!(state["retries"], 7, "{state}");
    eprintln!(
        "S3 SlowDown: {} answered 503, {} retried by meshstack, the run succeeded",
        stats.throttled, state["retries"]
    );
    // The journal made it, and the lock went.
    let (journal, _) = get(&shared.s3, &key("slowed", "state.json")).await.unwrap();
    let journal: Value = serde_json::from_slice(&journal).unwrap();
    assert_eq!(journal["stages"]["network"]["status"], "done", "{journal}");
    assert!(get(&shared.s3, &key("slowed", "lock.json")).await.is_none());
}

/// This process's start time, as `/proc/<pid>/stat` field 22 gives it.
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", std::process::id())).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// Local state, issue 10's reused pid: a lock left by a killed run names a pid that now
/// belongs to another live process (here, the test itself). Its start time gives it away:
/// the lock is stale, not live, and the next run takes it over (issue 21: without asking for
/// `--force-unlock`).
#[test]
fn a_local_lock_naming_a_live_pid_with_another_start_time_is_stale() {
    let moto = Moto::start();
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file(
        "stack.yaml",
        "name: reused\nregion: us-east-1\nkubernetes_version: \"1.36\"\n",
    );
    let stack = stack.to_str().unwrap();
    let dir = ms.state_dir().join("reused");
    std::fs::create_dir_all(&dir).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let me = std::process::id();
    let write_lock = |start: u64| {
        let lock = serde_json::json!({
            "id": "6b1f3c2e-0000-4000-8000-000000000001",
            "pid": me,
            "pid_start": start,
            "host": host.trim(),
            "command": "up",
            "started_at": 1_700_000_000u64,
        });
        std::fs::write(dir.join("lock"), serde_json::to_vec(&lock).unwrap()).unwrap();
    };

    // The real start time: live, never broken.
    write_lock(own_start_time());
    let out = ms.run(&[
        "up",
        "--only",
        "network",
        "--stack",
        stack,
        "--force-unlock",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("stack is locked by pid {me} on host")),
        "{}",
        describe(&out)
    );

    // Another start time: the process that took the lock is gone; taken over with a warning.
    write_lock(own_start_time() + 1);
    let out = ms.run(&["up", "--only", "network", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "warning: taking over the lock on stack `reused` from pid {me}"
        )) && err.contains("that process is gone"),
        "{err}"
    );
    assert!(!dir.join("lock").exists());
}

/// All versions of every object in the state bucket (keys only).
async fn object_keys(s3: &aws_sdk_s3::Client) -> Vec<String> {
    all_versions(s3)
        .await
        .into_iter()
        .map(|(k, _, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_bucket_another_account_owns_receives_nothing() {
    let shared = Shared::start().await;
    let before = object_keys(&shared.s3).await;
    // The same bucket name, owned by someone else: S3 answers 403 to a request that says
    // whose bucket it expects (moto ignores the header; the proxy answers as S3 does).
    let faults = Faults {
        bucket_owners: [(BUCKET.to_string(), "999999999999".to_string())].into(),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&shared.moto.endpoint(), faults);
    let ms = Meshstack::new(Some(proxy.endpoint()));
    let stack = ms.stack_file("stack.yaml", &stack_yaml("foreign"));
    let out = ms.run(&[
        "up",
        "--only",
        "network",
        "--stack",
        stack.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("Access Denied"), "{err}");
    assert!(
        err.contains("expects the bucket to belong to account 123456789012"),
        "{err}"
    );
    assert!(err.contains("?owner=ACCOUNT"), "{err}");
    assert_eq!(
        object_keys(&shared.s3).await,
        before,
        "nothing was written to a bucket another account owns"
    );
    assert!(
        proxy.stats().ops.keys().all(|op| op != "s3:PutObject"),
        "{:?}",
        proxy.stats()
    );
    // Named as the owner, the bucket is used.
    let trusted = format!("{URL}?owner=999999999999");
    let stack = ms.stack_file(
        "trusted.yaml",
        &stack_yaml("foreign").replace(URL, &trusted),
    );
    let out = ms.run(&[
        "up",
        "--only",
        "network",
        "--stack",
        stack.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(get(&shared.s3, &key("foreign", "state.json"))
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_state_request_outlives_half_the_lease() {
    let shared = Shared::start().await;
    // Lease 120 s / 60 = 2 s: a request may take at most 1 s, retries included. Every answer
    // takes 1.5 s here, so the first state request gives up, and says so, while a lease
    // would still hold; with the unscaled 60 s timeout it would wait, and run on with an
    // expired lease.
    let faults = Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&shared.moto.endpoint(), faults);
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "60".into()));
    // The owner named, so the first request is S3's, not STS's.
    let stack = ms.stack_file(
        "stack.yaml",
        &stack_yaml("slow").replace(URL, &format!("{URL}?owner=123456789012")),
    );
    let started = Instant::now();
    let out = ms.run(&[
        "up",
        "--only",
        "network",
        "--stack",
        stack.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("bucket team-state"), "{err}");
    assert!(err.contains("operation timeout"), "{err}");
    assert!(err.contains("after 1s"), "{err}");
    assert!(
        get(&shared.s3, &key("slow", "state.json")).await.is_none(),
        "{}",
        describe(&out)
    );
    eprintln!("every answer 1.5 s late, lease 2 s: the run gave up after {took:?}");
}
