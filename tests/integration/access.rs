//! Cluster access through the real binary: `kubeconfig` against moto (entries, merge into an
//! existing file, idempotence, privacy, a missing cluster) and `token` with no endpoint at all.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use serde_yaml::Value;

use crate::support::{describe, Meshstack, Moto, REGION};

/// An address nothing listens on: a command that tried to call AWS would fail.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

fn stack_yaml(name: &str) -> String {
    format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n")
}

fn read_yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The entries of `section` named `name`.
fn entries<'a>(doc: &'a Value, section: &str, name: &str) -> Vec<&'a Value> {
    doc[section]
        .as_sequence()
        .unwrap_or_else(|| panic!("no {section} list in {doc:?}"))
        .iter()
        .filter(|e| e["name"] == name)
        .collect()
}

fn one<'a>(doc: &'a Value, section: &str, name: &str) -> &'a Value {
    let found = entries(doc, section, name);
    assert_eq!(found.len(), 1, "{section}/{name} in {doc:?}");
    found[0]
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks an ExecCredential printed by `meshstack token`; returns the URL inside the token.
fn check_exec_credential(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", describe(out)));
    assert_eq!(doc["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert_eq!(doc["kind"], "ExecCredential");
    let ts = doc["status"]["expirationTimestamp"].as_str().unwrap();
    // 2024-01-02T03:04:05Z
    assert_eq!(ts.len(), 20, "{ts}");
    assert!(
        ts.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        }),
        "{ts}"
    );
    let token = doc["status"]["token"].as_str().unwrap();
    let b64 = token.strip_prefix("k8s-aws-v1.").expect("token prefix");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .expect("base64url without padding");
    String::from_utf8(url).unwrap()
}

#[test]
fn token_needs_credentials_but_no_network() {
    let mut ms = Meshstack::new(None);
    ms.extra_env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "AKIDEXAMPLE".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "secret".into()),
        ("AWS_SESSION_TOKEN".into(), "session/token+1=".into()),
        ("AWS_ENDPOINT_URL".into(), DEAD_ENDPOINT.into()),
    ];
    let out = ms.run(&["token", "--cluster", "c", "--region", "us-east-1"]);
    let url = check_exec_credential(&out);
    assert!(
        url.starts_with(
            "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
        ),
        "{url}"
    );
    for part in [
        "X-Amz-Credential=AKIDEXAMPLE%2F",
        "%2Fus-east-1%2Fsts%2Faws4_request",
        "X-Amz-Expires=60",
        "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
        "X-Amz-Security-Token=session%2Ftoken%2B1%3D",
    ] {
        assert!(url.contains(part), "{part} not in {url}");
    }

    // The region may come from the environment instead of the flag.
    ms.extra_env.push(("AWS_REGION".into(), "eu-west-1".into()));
    let url = check_exec_credential(&ms.run(&["token", "--cluster", "c"]));
    assert!(
        url.starts_with("https://sts.eu-west-1.amazonaws.com/"),
        "{url}"
    );

    // Or the stack names the cluster and its region, as for every other command.
    let stack = ms.stack_file(
        "tok.yaml",
        "name: tok\nregion: ap-southeast-2\nkubernetes_version: \"1.36\"\n",
    );
    let url = check_exec_credential(&ms.run(&["token", "--stack", stack.to_str().unwrap()]));
    assert!(
        url.starts_with("https://sts.ap-southeast-2.amazonaws.com/"),
        "{url}"
    );
}

/// (arguments, environment, what stderr must mention)
type MistakeCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn token_input_mistakes_exit_2_and_say_what_is_missing() {
    let creds = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    let cases: [MistakeCase; 3] = [
        (&["token", "--cluster", "c"], &creds, "region"),
        (
            &["token", "--cluster", "c", "--region", "us-east-1"],
            &[],
            "credentials",
        ),
        (
            &["token", "--cluster", "bad name", "--region", "us-east-1"],
            &creds,
            "cluster name",
        ),
    ];
    for (args, env, says) in cases {
        let mut ms = Meshstack::new(None);
        ms.extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = ms.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_merges_a_context_whose_user_runs_meshstack_token() {
    let moto = Moto::start();
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file("access.yaml", &stack_yaml("access"));
    let stack = stack.to_str().unwrap();
    let out = ms.run(&["up", "--stack", stack, "--only", "network,iam,cluster"]);
    assert!(out.status.success(), "up: {}", describe(&out));
    let endpoint = moto
        .clients()
        .await
        .eks
        .describe_cluster()
        .name("access")
        .send()
        .await
        .unwrap()
        .cluster()
        .unwrap()
        .endpoint()
        .unwrap()
        .to_string();

    // 1. Into a folder that does not exist yet.
    let kube_dir = ms.dir.path().join("kube");
    let path = kube_dir.join("config");
    let path_arg = path.to_str().unwrap();
    let out = ms.run(&["kubeconfig", "--stack", stack, "--kubeconfig", path_arg]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("current context: `access`"),
        "{}",
        describe(&out)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&kube_dir), 0o700);

    let doc = read_yaml(&path);
    assert_eq!(doc["current-context"], "access");
    let cluster = &one(&doc, "clusters", "access")["cluster"];
    assert_eq!(cluster["server"], endpoint.as_str());
    assert!(!cluster["certificate-authority-data"]
        .as_str()
        .unwrap()
        .is_empty());
    let ctx = &one(&doc, "contexts", "access")["context"];
    assert_eq!(
        (&ctx["cluster"], &ctx["user"]),
        (&"access".into(), &"access".into())
    );
    let exec = &one(&doc, "users", "access")["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert_eq!(exec["interactiveMode"], "Never");
    let args: Vec<&str> = exec["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["token", "--cluster", "access", "--region", REGION]);
    let command = Path::new(exec["command"].as_str().unwrap());
    assert!(command.is_absolute(), "{command:?}");
    assert_eq!(
        command.canonicalize().unwrap(),
        Path::new(env!("CARGO_BIN_EXE_meshstack"))
            .canonicalize()
            .unwrap()
    );

    // 2. What kubectl will run works, and needs nothing from moto.
    let mut offline = Meshstack::new(None);
    offline.extra_env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_ENDPOINT_URL".into(), DEAD_ENDPOINT.into()),
    ];
    let url = check_exec_credential(&offline.run(&args));
    assert!(
        url.starts_with("https://sts.us-east-1.amazonaws.com/"),
        "{url}"
    );

    // 3. Again: the same file, one entry each.
    let first = std::fs::read_to_string(&path).unwrap();
    let out = ms.run(&["kubeconfig", "--stack", stack, "--kubeconfig", path_arg]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    let doc = read_yaml(&path);
    for section in ["clusters", "users", "contexts"] {
        assert_eq!(doc[section].as_sequence().unwrap().len(), 1, "{section}");
    }

    // -o json: what was written, as one document.
    let out = ms.run(&[
        "kubeconfig",
        "--stack",
        stack,
        "--kubeconfig",
        path_arg,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    assert_eq!(doc["context"], "access", "{doc}");
    assert_eq!(doc["cluster"], "access", "{doc}");
    assert_eq!(doc["current_context"], "access", "{doc}");
    assert_eq!(doc["kubeconfig"], path_arg, "{doc}");

    // 4. Into someone's kubeconfig: their entries, keys and current context stay.
    let theirs = ms.dir.path().join("theirs");
    let before = "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-dev\n  cluster:\n    server: https://127.0.0.1:6443\nusers:\n- name: kind-dev\n  user:\n    token: abc\ncontexts:\n- name: kind-dev\n  context:\n    cluster: kind-dev\n    user: kind-dev\ncurrent-context: kind-dev\npreferences: {}\nextensions:\n- name: x\n  extension: {a: 1}\n";
    std::fs::write(&theirs, before).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ms.run(&[
        "kubeconfig",
        "--stack",
        stack,
        "--kubeconfig",
        theirs.to_str().unwrap(),
        "--context",
        "demo-access",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("kubectl config use-context demo-access"),
        "{}",
        describe(&out)
    );
    let doc = read_yaml(&theirs);
    let old: Value = serde_yaml::from_str(before).unwrap();
    assert_eq!(doc["current-context"], "kind-dev");
    assert_eq!(doc["extensions"], old["extensions"]);
    for section in ["clusters", "users", "contexts"] {
        assert_eq!(
            one(&doc, section, "kind-dev"),
            one(&old, section, "kind-dev"),
            "{section}"
        );
        assert_eq!(entries(&doc, section, "demo-access").len(), 1, "{section}");
    }
    assert_eq!(
        one(&doc, "clusters", "demo-access")["cluster"]["server"],
        endpoint.as_str()
    );
    assert_eq!(mode(&theirs), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_for_a_stack_without_a_cluster_fails_naming_it_and_writes_nothing() {
    let moto = Moto::start();
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file("ghost.yaml", &stack_yaml("ghost"));
    let path = ms.dir.path().join("config");
    let out = ms.run(&[
        "kubeconfig",
        "--stack",
        stack.to_str().unwrap(),
        "--kubeconfig",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stack `ghost`")
            && err.contains("cluster `ghost`")
            && err.contains("does not exist"),
        "{}",
        describe(&out)
    );
    assert!(!path.exists());
}

#[test]
fn kubeconfig_refuses_a_file_it_cannot_merge_into_before_calling_aws() {
    // No credentials and no endpoint: reaching AWS would fail differently.
    let ms = Meshstack::new(None);
    let path = ms.dir.path().join("config");
    std::fs::write(&path, "- not\n- a kubeconfig\n").unwrap();
    let out = ms.run(&["kubeconfig", "--kubeconfig", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("not a mapping"), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "- not\n- a kubeconfig\n"
    );
}
