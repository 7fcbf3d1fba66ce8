//! Versions through the binary: the defaults `plan` shows (Kubernetes in standard support with
//! its end date, Karpenter 1.14.1, Istio's charts from where they live now, the standard
//! price), and the refusals before any write — a Kubernetes version past standard support
//! without `cluster.support: extended`, one past extended support, a Karpenter release whose
//! controller does not accept the cluster's Kubernetes — each with moto's recorder showing no
//! write.
//!
//! The default stack is planned on the real day, so that this test fails the day the default
//! leaves standard support (as 1.34 did on 2026-12-02 without any test noticing); the other
//! cases fix the day with `MESHSTACK_TODAY`, so they say the same thing every day.

use std::process::Output;

use crate::support::{describe, Meshstack, Moto};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The day the version facts were checked: their cases are fixed to it.
const DAY: &str = "2026-12-06";

fn on_the_day(mut ms: Meshstack) -> Meshstack {
    ms.extra_env.push(("MESHSTACK_TODAY".into(), DAY.into()));
    ms
}

#[test]
fn plan_shows_todays_defaults_their_support_window_and_where_charts_come_from() {
    let ms = Meshstack::new(None);
    let out = ms.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for part in [
        "Kubernetes 1.36: standard support until 2027-08-02",
        "built-in EKS calendar, checked 2026-12-06",
        "chart karpenter 1.14.1 from oci://public.ecr.aws/karpenter",
        "chart karpenter-crd 1.14.1 from oci://public.ecr.aws/karpenter",
        "chart istiod 1.18.7 from https://blob.istio.io/istio-release/charts",
        "chart kiali-operator 1.73.2 from https://kiali.org/helm-charts",
        "EKS control plane",
        "$0.10",
    ] {
        assert!(text.contains(part), "want {part:?} in\n{text}");
    }
    assert!(!text.contains("googleapis"), "{text}");
    assert!(!text.contains("extended support)"), "{text}");

    let out = ms.run(&["plan", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kubernetes"]["version"], "1.36", "{doc}");
    assert_eq!(doc["kubernetes"]["status"], "standard", "{doc}");
    assert_eq!(doc["kubernetes"]["end_of_standard"], "2027-08-02", "{doc}");
    assert_eq!(doc["kubernetes"]["source"]["from"], "built-in", "{doc}");
    let charts = doc["charts"].as_array().unwrap();
    assert!(
        charts.iter().any(|c| c["chart"] == "base"
            && c["repository"] == "https://blob.istio.io/istio-release/charts"),
        "{doc}"
    );
}

#[test]
fn a_version_in_extended_support_needs_the_stack_to_say_so_and_is_priced_as_such() {
    let moto = Moto::start();
    let ms = on_the_day(Meshstack::with_moto(&moto));
    let plain = ms.stack_file(
        "ext.yaml",
        "name: ext\nregion: us-east-1\nkubernetes_version: \"1.33\"\n",
    );
    let plain = plain.to_str().unwrap();
    for command in [
        &["plan", "--stack", plain][..],
        &["up", "--stack", plain, "--only", "network,iam,cluster"],
    ] {
        moto.start_recording();
        let out = ms.run(command);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command:?}: {}",
            describe(&out)
        );
        let err = stderr(&out);
        for part in [
            "kubernetes_version",
            "left EKS standard support on 2026-07-29",
            "cluster: {support: extended}",
            "\"1.35\" or \"1.36\"",
        ] {
            assert!(err.contains(part), "{command:?}: want {part:?} in {err}");
        }
        assert_eq!(moto.recorded_writes(), Vec::<String>::new(), "{command:?}");
    }

    let opted = ms.stack_file(
        "ext2.yaml",
        "name: ext\nregion: us-east-1\nkubernetes_version: \"1.33\"\ncluster: {support: extended}\n",
    );
    let out = ms.run(&["plan", "--stack", opted.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for part in [
        "Kubernetes 1.33: EXTENDED support (billed at the extended price) until 2027-07-29",
        "EKS control plane (extended support)",
        "$0.60",
    ] {
        assert!(text.contains(part), "want {part:?} in\n{text}");
    }

    // The cluster is created with the support the stack pays for (EKS's default, when the
    // request says nothing, is EXTENDED).
    moto.start_recording();
    let out = ms.run(&[
        "up",
        "--stack",
        opted.to_str().unwrap(),
        "--only",
        "network,iam,cluster",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let create = moto
        .recorded_requests()
        .into_iter()
        .find(|r| {
            r["method"] == "POST" && r["url"].as_str().is_some_and(|u| u.ends_with("/clusters"))
        })
        .expect("a CreateCluster request");
    let body: serde_json::Value = serde_json::from_str(create["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["upgradePolicy"]["supportType"], "EXTENDED", "{body}");
    assert_eq!(body["version"], "1.33", "{body}");
}

#[test]
fn versions_that_cannot_be_created_are_refused_naming_what_works() {
    let moto = Moto::start();
    let ms = on_the_day(Meshstack::with_moto(&moto));
    let cases = [
        (
            "name: old\nregion: us-east-1\nkubernetes_version: \"1.31\"\nkarpenter: {version: 1.8.1}\ncluster: {support: extended}\n",
            vec![
                "kubernetes_version",
                "reached the end of EKS extended support on 2026-11-26",
                "\"1.35\" or \"1.36\" (standard support)",
            ],
        ),
        (
            "name: kold\nregion: us-east-1\nkubernetes_version: \"1.36\"\nkarpenter: {version: 1.8.1}\n",
            vec![
                "karpenter.version",
                "1.13.0 or newer",
                "accepts Kubernetes up to 1.34",
            ],
        ),
    ];
    for (yaml, parts) in cases {
        let file = ms.stack_file("case.yaml", yaml);
        for command in ["plan", "up"] {
            moto.start_recording();
            let out = ms.run(&[
                command,
                "--stack",
                file.to_str().unwrap(),
                "--only",
                "network,iam,cluster",
            ]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} {yaml}: {}",
                describe(&out)
            );
            let err = stderr(&out);
            for part in &parts {
                assert!(err.contains(part), "{command}: want {part:?} in {err}");
            }
            assert_eq!(
                moto.recorded_writes(),
                Vec::<String>::new(),
                "{command} {yaml}"
            );
        }
    }
}

/// With credentials, EKS's own calendar wins over the built-in one: `DescribeClusterVersions`
/// (which moto lacks; the fault proxy answers it as AWS's API reference shows) says 1.33 is
/// still in standard support, so a plain stack may have it at the standard price, and the
/// plan says where that came from. When EKS says a version is past extended support, that
/// refusal names EKS as the source.
#[test]
fn eks_own_calendar_decides_when_it_answers() {
    use crate::support::fault_proxy::{FaultProxy, Faults};
    let moto = Moto::start();
    // Dates as epoch seconds, as the restJson protocol sends timestamps.
    let day = |y: i32, m: u32, d: u32| -> i64 {
        let days_before_year: i64 = (1970..y).map(|y| if y % 4 == 0 { 366 } else { 365 }).sum();
        let month_days = [
            31,
            if y % 4 == 0 { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let days: i64 = month_days[..(m - 1) as usize].iter().sum::<i64>() + (d - 1) as i64;
        (days_before_year + days) * 86_400
    };
    let version = |v: &str, std: i64, ext: i64| {
        serde_json::json!({"clusterVersion": v, "clusterType": "eks", "status": "STANDARD_SUPPORT",
            "versionStatus": "STANDARD_SUPPORT", "defaultVersion": false,
            "endOfStandardSupportDate": std, "endOfExtendedSupportDate": ext})
    };
    let calendar = serde_json::json!({"clusterVersions": [
        version("1.33", day(2027, 1, 15), day(2028, 1, 15)),
        version("1.36", day(2027, 8, 2), day(2028, 8, 2)),
        // 1.35's windows closed early, in this made-up calendar.
        version("1.35", day(2026, 1, 1), day(2026, 6, 1)),
    ]});
    let faults = Faults {
        answers: [(
            "eks:DescribeClusterVersions".to_string(),
            calendar.to_string(),
        )]
        .into(),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let ms = on_the_day(Meshstack::new(Some(proxy.endpoint())));
    let file = ms.stack_file(
        "live.yaml",
        "name: live\nregion: us-east-1\nkubernetes_version: \"1.33\"\nkarpenter: {version: 1.14.1}\n",
    );
    let out = ms.run(&["plan", "--stack", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for part in [
        "Kubernetes 1.33: standard support until 2027-01-15",
        "per EKS DescribeClusterVersions in us-east-1",
        "$0.10",
    ] {
        assert!(text.contains(part), "want {part:?} in\n{text}");
    }
    assert!(proxy
        .stats()
        .ops
        .contains_key("eks:DescribeClusterVersions"));

    let file = ms.stack_file(
        "gone.yaml",
        "name: gone\nregion: us-east-1\nkubernetes_version: \"1.35\"\n",
    );
    let out = ms.run(&["plan", "--stack", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr(&out);
    for part in [
        "reached the end of EKS extended support on 2026-06-01",
        "per EKS DescribeClusterVersions in us-east-1",
        "use \"1.33\" or \"1.36\" (standard support)",
    ] {
        assert!(err.contains(part), "want {part:?} in {err}");
    }
}
