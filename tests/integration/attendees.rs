//! Workshop attendees who are not the builder, through the real binary against moto and the
//! fault proxy (which answers EKS access entries from its model, moto having none): the
//! `access` stage gives each environment of a fleet its own attendee role with an access entry
//! on its own cluster only, `fleet handout` writes kubeconfigs that assume that role (and
//! refuses an environment without one), `meshstack token --role-arn` signs as the assumed
//! role, a rerun changes nothing, and `fleet down` removes roles and entries.
//!
//! moto's STS AssumeRole does not evaluate the role's trust policy (any caller may assume
//! any role), so these tests show whose credentials sign the token, not who may assume the
//! role; the trust document itself is linted by parliament (`contracts`) and unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;

use crate::fleet::unique_issuers;
use crate::support::fault_proxy::FaultProxy;
use crate::support::{describe, Clients, Meshstack, Moto, ACCOUNT, REGION};

const STAGES: &str = "network,iam,cluster,access";
const EDIT: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy";

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// The JSON lines of an output.
fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The access-entry calls that write, as the proxy counted them.
fn entry_writes(proxy: &FaultProxy) -> u64 {
    let ops = proxy.stats().ops;
    [
        "eks:CreateAccessEntry",
        "eks:DeleteAccessEntry",
        "eks:AssociateAccessPolicy",
        "eks:DisassociateAccessPolicy",
    ]
    .iter()
    .map(|op| ops.get(*op).copied().unwrap_or(0))
    .sum()
}

/// The presigned URL inside an EKS token, and its query parameters.
fn token_url(token: &str) -> BTreeMap<String, String> {
    let b64 = token.strip_prefix("k8s-aws-v1.").expect("an EKS token");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .unwrap();
    let url = String::from_utf8(url).unwrap();
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), meshstack::aws::percent_decode(v))
        })
        .collect()
}

/// Who moto says holds access key `key_id` (an assumed role's session, or moto's default user).
async fn caller_of(endpoint: &str, key_id: &str, session_token: Option<String>) -> String {
    let creds =
        aws_credential_types::Credentials::new(key_id, "unused", session_token, None, "token");
    let sdk = meshstack::aws::sdk_defaults()
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .load()
        .await;
    let who = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    who.arn().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_environment_gets_its_own_attendee_role_and_handouts_never_carry_the_builder() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint(), unique_issuers());
    // Through the proxy, so that the access entries are the ones the binary made.
    let aws = Clients::at(&proxy.endpoint()).await;
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    // An existing principal, supplied as an attendee.
    aws.iam
        .create_role()
        .role_name("alice")
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let alice = role_arn("alice");
    let stack = ms.stack_file(
        "fleet.yaml",
        &format!(
            "name: at\nregion: us-east-1\nkubernetes_version: \"1.36\"\nnetwork:\n  nat: single\n\
             access:\n  attendees: [{alice}]\n"
        ),
    );
    let stack = stack.to_str().unwrap();
    let fleet = |verb: &str, extra: &[&str]| {
        let mut args = vec!["fleet", verb, "--stack", stack, "--count", "2"];
        args.extend_from_slice(extra);
        ms.run(&args)
    };
    let envs = ["at-1", "at-2"];
    let handout = ms.dir.path().join("handout");
    let handout_dir = handout.to_str().unwrap();

    // The clusters without the access stage: the handout refuses rather than hand out the
    // builder's identity.
    let out = fleet("up", &["--only", "network,iam,cluster"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = fleet("handout", &["--out", handout_dir]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for env in envs {
        assert!(
            !handout.join(env).join("kubeconfig").exists(),
            "{env}: a kubeconfig without attendee access"
        );
        assert!(
            err.contains(&format!(
                "{env}: no kubeconfig: the attendee role {env}-attendee does not exist yet"
            )),
            "{err}"
        );
    }

    // plan names the stage's work (one environment as an ordinary stack, all of them in the
    // fleet's quotas); up does it.
    let env_stack = ms.stack_file(
        "at-1.yaml",
        &format!(
            "name: at-1\nregion: us-east-1\nkubernetes_version: \"1.36\"\nnetwork:\n  nat: \
             single\naccess:\n  attendee_role: true\n  attendees: [{alice}]\n"
        ),
    );
    let out = ms.run(&[
        "plan",
        "--stack",
        env_stack.to_str().unwrap(),
        "--only",
        "access",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for change in [
        "+ iam-role at-1-attendee".to_string(),
        format!("+ eks-access-entry {}", role_arn("at-1-attendee")),
        format!("+ eks-access-entry {alice}"),
    ] {
        assert!(text.contains(&change), "{change} in\n{text}");
    }
    let out = fleet("plan", &["--only", STAGES]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let roles = text
        .lines()
        .find(|l| l.contains("Roles per account"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        roles.trim_end().ends_with(" 3"),
        "two attendee roles and the spot role: {roles}"
    );
    let out = fleet("up", &["--only", STAGES]);
    assert!(out.status.success(), "{}", describe(&out));

    // Each environment: its own role (the stack's tag, trusted by the account), and on its own
    // cluster exactly two entries, its role's and alice's, each with the edit policy on the
    // whole cluster; nothing of the other environment's.
    let entries = proxy.access_entries();
    for (i, env) in envs.iter().enumerate() {
        let role = aws
            .iam
            .get_role()
            .role_name(format!("{env}-attendee"))
            .send()
            .await
            .unwrap();
        let role = role.role().unwrap();
        assert!(
            role.tags()
                .iter()
                .any(|t| t.key() == "meshstack.io/stack" && t.value() == *env),
            "{role:?}"
        );
        let trust = meshstack::aws::percent_decode(role.assume_role_policy_document().unwrap());
        assert!(
            trust.contains(&format!("arn:aws:iam::{ACCOUNT}:root")),
            "{trust}"
        );
        let attached = aws
            .iam
            .list_attached_role_policies()
            .role_name(format!("{env}-attendee"))
            .send()
            .await
            .unwrap();
        assert!(
            attached.attached_policies().is_empty(),
            "no IAM permissions"
        );

        let cluster = aws.eks.describe_cluster().name(*env).send().await.unwrap();
        let arn = cluster.cluster().unwrap().arn().unwrap().to_string();
        let on_cluster = &entries[&arn];
        let principals: BTreeSet<&str> = on_cluster.keys().map(String::as_str).collect();
        let own = role_arn(&format!("{env}-attendee"));
        assert_eq!(
            principals,
            BTreeSet::from([own.as_str(), alice.as_str()]),
            "{env}"
        );
        for e in on_cluster.values() {
            assert_eq!(
                e.tags.get("meshstack.io/stack").map(String::as_str),
                Some(*env)
            );
            assert_eq!(
                e.policies.keys().collect::<Vec<_>>(),
                [EDIT],
                "{env}: {e:?}"
            );
            assert_eq!(e.policies[EDIT]["type"], "cluster");
        }
        // The other environment's role has no entry here, by EKS's own answer too.
        let other = role_arn(&format!("{}-attendee", envs[1 - i]));
        let err = aws
            .eks
            .describe_access_entry()
            .cluster_name(*env)
            .principal_arn(&other)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.into_service_error().meta().code(),
            Some("ResourceNotFoundException")
        );
    }

    // A rerun changes nothing: no write reaches moto, nor the access entries.
    let before = entry_writes(&proxy);
    moto.start_recording();
    let out = fleet("up", &["--only", STAGES, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());
    assert_eq!(
        entry_writes(&proxy),
        before,
        "access-entry writes on a rerun"
    );
    let calls = json_lines(&out)
        .into_iter()
        .find(|v| v["event"] == "api-calls")
        .unwrap_or_else(|| panic!("no api-calls line\n{}", describe(&out)));
    for env in envs {
        assert_eq!(calls["envs"][env]["writes"], 0, "{env}: {calls}");
    }

    // The handout: each kubeconfig's exec assumes its environment's attendee role, with the
    // aws CLI by default and with this binary on request; the page says whose identity.
    let out = fleet("handout", &["--out", handout_dir]);
    assert!(out.status.success(), "{}", describe(&out));
    for env in envs {
        let kc = kube::config::Kubeconfig::read_from(handout.join(env).join("kubeconfig")).unwrap();
        let exec = kc.auth_infos[0]
            .auth_info
            .as_ref()
            .unwrap()
            .exec
            .clone()
            .unwrap();
        assert_eq!(exec.command.as_deref(), Some("aws"));
        let args = exec.args.unwrap_or_default();
        let own = role_arn(&format!("{env}-attendee"));
        assert!(
            args.windows(2).any(|w| w == ["--role-arn", own.as_str()]),
            "{args:?}"
        );
    }
    let index = std::fs::read_to_string(handout.join("index.html")).unwrap();
    assert!(
        index.contains(&format!(
            "signs in as</dt><dd>the attendee role {}",
            role_arn("at-1-attendee")
        )),
        "{index}"
    );
    let out = fleet(
        "handout",
        &["--out", handout_dir, "--token-command", "meshstack"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let kc = kube::config::Kubeconfig::read_from(handout.join("at-1").join("kubeconfig")).unwrap();
    let exec = kc.auth_infos[0]
        .auth_info
        .as_ref()
        .unwrap()
        .exec
        .clone()
        .unwrap();
    assert_eq!(exec.command.as_deref(), Some("meshstack"));
    let args = exec.args.unwrap_or_default();
    assert_eq!(
        args,
        [
            "token",
            "--cluster",
            "at-1",
            "--region",
            REGION,
            "--role-arn",
            &role_arn("at-1-attendee")
        ]
    );

    // Running that exec command (this binary) signs the token with the assumed role's
    // credentials, not the builder's.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ms.run(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let params = token_url(cred["status"]["token"].as_str().unwrap());
    let key_id = params["X-Amz-Credential"]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(key_id, "testing", "signed with the builder's key");
    let session = params.get("X-Amz-Security-Token").cloned();
    assert!(
        session.is_some(),
        "an assumed role's session token is signed in"
    );
    assert_eq!(
        caller_of(&moto.endpoint(), &key_id, session).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/at-1-attendee/meshstack-token")
    );
    // Without --role-arn the same command signs as the caller (here the builder).
    let out = ms.run(&args[..5]);
    assert!(out.status.success(), "{}", describe(&out));
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let params = token_url(cred["status"]["token"].as_str().unwrap());
    assert!(params["X-Amz-Credential"].starts_with("testing/"));

    // down: the roles and every entry go.
    let out = fleet("down", &["--yes"]);
    assert!(out.status.success(), "{}", describe(&out));
    for env in envs {
        let err = aws
            .iam
            .get_role()
            .role_name(format!("{env}-attendee"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.into_service_error().meta().code(),
            Some("NoSuchEntity"),
            "{env}"
        );
        assert_eq!(aws.inventory(env).await, Default::default(), "{env}");
    }
    assert!(
        proxy.access_entries().values().all(BTreeMap::is_empty),
        "{:?}",
        proxy.access_entries()
    );
    assert!(
        proxy
            .stats()
            .ops
            .get("eks:DeleteAccessEntry")
            .copied()
            .unwrap_or(0)
            >= 4,
        "down deletes the entries it made: {:?}",
        proxy.stats().ops
    );
    // alice is not meshstack's: untouched.
    aws.iam.get_role().role_name("alice").send().await.unwrap();
}

#[test]
fn token_refuses_a_role_arn_that_is_not_one() {
    let ms = Meshstack::new(None);
    let out = ms.run(&[
        "token",
        "--cluster",
        "c",
        "--region",
        REGION,
        "--role-arn",
        "arn:aws:iam::123456789012:user/bob",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an IAM role ARN"),
        "{}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_stack_opts_in_resumes_a_partial_access_stage_and_down_by_name_proves_ownership() {
    let moto = Moto::start();
    let faults = crate::support::fault_proxy::Faults {
        errors: BTreeMap::from([
            // A role created moments ago, not yet visible to EKS: retried.
            (
                "eks:CreateAccessEntry".to_string(),
                (
                    2,
                    "InvalidParameterException".to_string(),
                    "The specified principalArn is invalid: invalid principal".to_string(),
                ),
            ),
            // A failure after the entry exists: the run fails there, the next one resumes.
            (
                "eks:AssociateAccessPolicy".to_string(),
                (
                    1,
                    "InvalidRequestException".to_string(),
                    "injected".to_string(),
                ),
            ),
        ]),
        ..crate::support::fault_proxy::Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let aws = Clients::at(&proxy.endpoint()).await;
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    let stack = ms.stack_file(
        "solo.yaml",
        "name: solo\nregion: us-east-1\nkubernetes_version: \"1.36\"\nnetwork:\n  nat: single\n\
         access:\n  attendee_role: true\n  policy: view\n",
    );
    let stack = stack.to_str().unwrap();
    let own = role_arn("solo-attendee");
    let view = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy";

    let out = ms.run(&["up", "--stack", stack, "--only", STAGES]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("injected"),
        "{}",
        describe(&out)
    );
    let ops = proxy.stats().ops;
    assert_eq!(
        ops["eks:CreateAccessEntry"], 3,
        "two refusals retried, then created"
    );
    let entries = proxy.access_entries();
    let entry = entries
        .values()
        .find_map(|c| c.get(&own))
        .expect("the entry");
    assert!(entry.policies.is_empty(), "{entry:?}");

    // The rerun associates the policy and nothing else.
    let out = ms.run(&["up", "--stack", stack, "--only", STAGES]);
    assert!(out.status.success(), "{}", describe(&out));
    let after = proxy.stats().ops;
    assert_eq!(after["eks:CreateAccessEntry"], 3, "no second entry");
    assert_eq!(after["eks:AssociateAccessPolicy"], 2);
    let entries = proxy.access_entries();
    let entry = entries.values().find_map(|c| c.get(&own)).unwrap();
    assert_eq!(entry.policies.keys().collect::<Vec<_>>(), [view]);
    // status shows the stage, converged like the cluster it depends on.
    let out = ms.run(&["status", "--stack", stack, "-o", "json"]);
    let doc = json_lines(&out)
        .into_iter()
        .find(|v| v["stages"].is_array())
        .unwrap_or_else(|| panic!("{}", describe(&out)));
    let row = |id: &str| {
        doc["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {doc}"))
    };
    assert_eq!(row("access")["state"], row("cluster")["state"], "{doc}");
    assert!(
        row("access")["changes_pending"].as_u64().unwrap_or(0) == 0,
        "{doc}"
    );

    // A same-named role of no stack's, for a stack known only by name: left alone.
    aws.iam
        .create_role()
        .role_name("other-attendee")
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .unwrap();
    for name in ["solo", "other"] {
        let out = ms.run(&["down", "--name", name, "--region", REGION, "--yes"]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let gone = aws.iam.get_role().role_name("solo-attendee").send().await;
    assert!(
        gone.is_err(),
        "the stack's attendee role is deleted by name"
    );
    aws.iam
        .get_role()
        .role_name("other-attendee")
        .send()
        .await
        .expect("an untagged role of the same shape survives");
    assert!(
        proxy.access_entries().values().all(BTreeMap::is_empty),
        "{:?}",
        proxy.access_entries()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_that_turns_attendee_access_off_gets_no_kubeconfig_and_is_told_how_to_set_it() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint(), unique_issuers());
    let aws = Clients::at(&proxy.endpoint()).await;
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    let stack = ms.stack_file(
        "fleet.yaml",
        "name: off\nregion: us-east-1\nkubernetes_version: \"1.36\"\nnetwork:\n  nat: single\n\
         access:\n  attendee_role: false\n",
    );
    let stack = stack.to_str().unwrap();
    let out = ms.run(&[
        "fleet", "up", "--stack", stack, "--count", "1", "--only", STAGES,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        aws.iam
            .get_role()
            .role_name("off-1-attendee")
            .send()
            .await
            .is_err(),
        "no attendee role when the stack turns it off"
    );
    assert_eq!(
        proxy.stats().ops.get("eks:CreateAccessEntry"),
        None,
        "no entry either"
    );
    let dir = ms.dir.path().join("handout");
    let out = ms.run(&[
        "fleet",
        "handout",
        "--stack",
        stack,
        "--count",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!dir.join("off-1").join("kubeconfig").exists());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("off-1: no kubeconfig: no attendee access")
            && err.contains("access: {attendee_role: true}")
            && err.contains("never carry the builder's identity"),
        "{err}"
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("no attendee access"), "{readme}");
}
