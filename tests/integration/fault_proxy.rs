//! The fault proxy (`support::fault_proxy`) against a real moto and the real SDK clients: it
//! passes traffic through untouched, each injected fault looks to the SDK like the real thing
//! (throttling is retried, `DependencyViolation` and "still creating" reach the caller), and a
//! seed reproduces the same faults.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::support::fault_proxy::{FaultProxy, Faults, RateBucket};
use crate::support::{
    api_calls, describe, expected_full_inventory, Clients, Meshstack, Moto, ACCOUNT, REGION,
};

/// SDK clients pointed at the proxy (the same shape as `Moto::clients`, plus STS).
struct Sdk {
    aws: Clients,
    sts: aws_sdk_sts::Client,
}

/// `attempts` per call, with back-off short enough for tests (the classification is what is
/// under test, not the SDK's timing).
fn retries(attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(50))
}

async fn through(proxy: &FaultProxy, retry: RetryConfig) -> Sdk {
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    let sdk = meshstack::aws::sdk_defaults()
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(proxy.endpoint())
        .retry_config(retry)
        .load()
        .await;
    Sdk {
        aws: Clients {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            eks: aws_sdk_eks::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
        },
        sts: aws_sdk_sts::Client::new(&sdk),
    }
}

const ASSUME_EKS: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"eks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// An EKS cluster and node group made directly in moto (not through the proxy).
async fn cluster_with_nodegroup(aws: &Clients, name: &str) {
    aws.eks
        .create_cluster()
        .name(name)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/cluster"))
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids("subnet-1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    aws.eks
        .create_nodegroup()
        .cluster_name(name)
        .nodegroup_name("ng")
        .node_role(format!("arn:aws:iam::{ACCOUNT}:role/node"))
        .subnets("subnet-1")
        .send()
        .await
        .unwrap();
}

/// One read per protocol: awsEc2Query, awsQuery (IAM, STS), restJson1 (EKS), awsJson (SQS,
/// EventBridge). `Ok(())` or the error code the SDK saw.
async fn one_read_each(sdk: &Sdk) -> BTreeMap<&'static str, Result<(), String>> {
    fn code<E: ProvideErrorMetadata>(r: Result<impl Sized, E>) -> Result<(), String> {
        r.map(|_| ())
            .map_err(|e| e.code().unwrap_or("(no code)").to_string())
    }
    BTreeMap::from([
        (
            "ec2:DescribeVpcs",
            code(sdk.aws.ec2.describe_vpcs().send().await),
        ),
        ("iam:ListRoles", code(sdk.aws.iam.list_roles().send().await)),
        (
            "sts:GetCallerIdentity",
            code(sdk.sts.get_caller_identity().send().await),
        ),
        (
            "eks:ListClusters",
            code(sdk.aws.eks.list_clusters().send().await),
        ),
        (
            "sqs:ListQueues",
            code(sdk.aws.sqs.list_queues().send().await),
        ),
        (
            "events:ListRules",
            code(sdk.aws.events.list_rules().send().await),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn without_faults_every_protocol_passes_through_and_is_named() {
    let moto = Moto::start();
    let direct = moto.clients().await;
    let proxy = FaultProxy::start(&moto.endpoint(), Faults::default());
    let sdk = through(&proxy, retries(1)).await;

    // Writes through the proxy land in moto, seen directly.
    let vpc = sdk
        .aws
        .ec2
        .create_vpc()
        .cidr_block("10.1.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap();
    let seen = direct.ec2.describe_vpcs().vpc_ids(vpc_id).send().await;
    assert_eq!(seen.unwrap().vpcs().len(), 1);
    sdk.aws
        .iam
        .create_role()
        .role_name("via-proxy")
        .assume_role_policy_document(ASSUME_EKS)
        .send()
        .await
        .unwrap();
    direct
        .iam
        .get_role()
        .role_name("via-proxy")
        .send()
        .await
        .unwrap();
    let me = sdk.sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.account(), Some(ACCOUNT));
    sdk.aws
        .sqs
        .create_queue()
        .queue_name("via-proxy")
        .send()
        .await
        .unwrap();
    direct
        .sqs
        .get_queue_url()
        .queue_name("via-proxy")
        .send()
        .await
        .unwrap();
    sdk.aws
        .events
        .put_rule()
        .name("via-proxy")
        .event_pattern(r#"{"source":["aws.ec2"]}"#)
        .send()
        .await
        .unwrap();
    direct
        .events
        .describe_rule()
        .name("via-proxy")
        .send()
        .await
        .unwrap();

    // EKS is REST: every route meshstack uses gets its operation name.
    cluster_with_nodegroup(&sdk.aws, "via-proxy").await;
    let eks = &sdk.aws.eks;
    assert_eq!(
        eks.list_clusters().send().await.unwrap().clusters(),
        ["via-proxy"]
    );
    eks.describe_cluster()
        .name("via-proxy")
        .send()
        .await
        .unwrap();
    let ngs = eks.list_nodegroups().cluster_name("via-proxy").send().await;
    assert_eq!(ngs.unwrap().nodegroups(), ["ng"]);
    eks.describe_nodegroup()
        .cluster_name("via-proxy")
        .nodegroup_name("ng")
        .send()
        .await
        .unwrap();
    eks.delete_nodegroup()
        .cluster_name("via-proxy")
        .nodegroup_name("ng")
        .send()
        .await
        .unwrap();
    eks.delete_cluster().name("via-proxy").send().await.unwrap();
    assert!(direct
        .eks
        .list_clusters()
        .send()
        .await
        .unwrap()
        .clusters()
        .is_empty());

    let stats = proxy.stats();
    let ops: Vec<&str> = stats.ops.keys().map(String::as_str).collect();
    assert_eq!(
        ops,
        [
            "ec2:CreateVpc",
            "eks:CreateCluster",
            "eks:CreateNodegroup",
            "eks:DeleteCluster",
            "eks:DeleteNodegroup",
            "eks:DescribeCluster",
            "eks:DescribeNodegroup",
            "eks:ListClusters",
            "eks:ListNodegroups",
            "events:PutRule",
            "iam:CreateRole",
            "sqs:CreateQueue",
            "sts:GetCallerIdentity",
        ]
    );
    assert!(stats.ops.values().all(|n| *n == 1), "{stats:?}");
    assert_eq!(stats.requests, 13);
    assert_eq!(stats.forwarded, 13);
    assert_eq!(
        (
            stats.throttled,
            stats.dependency_violations,
            stats.rewritten,
            stats.retries
        ),
        (0, 0, 0, 0)
    );
}

/// A canned upstream: records the one request it gets, answers with a chunked body.
fn canned_upstream() -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut got = Vec::new();
        // Headers, then a chunked body ending in "0\r\n\r\n".
        while !got.ends_with(b"0\r\n\r\n") {
            let n = reader.read_until(b'\n', &mut got).unwrap();
            assert!(
                n > 0,
                "client closed early: {}",
                String::from_utf8_lossy(&got)
            );
        }
        let mut conn = conn;
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n\
              6\r\n<ok>he\r\n8\r\nllo</ok>\r\n0\r\n\r\n",
        )
        .unwrap();
        got
    });
    (endpoint, handle)
}

#[test]
fn forwards_bytes_unchanged_but_host_and_reframes_the_answer() {
    let (upstream, recorded) = canned_upstream();
    let proxy = FaultProxy::start(&upstream, Faults::default());
    let head = "POST / HTTP/1.1\r\n\
                Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
                X-Amz-Date: 20261128T000000Z\r\n\
                Authorization: AWS4-HMAC-SHA256 Credential=testing/20261128/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n\
                Transfer-Encoding: chunked\r\n";
    let body = "d\r\nAction=Descri\r\n16\r\nbeRegions&Version=2016\r\n6\r\n-11-15\r\n0\r\n\r\n";
    let upstream_host = upstream.trim_start_matches("http://");
    let proxy_host = proxy.endpoint().trim_start_matches("http://").to_string();

    let mut client = TcpStream::connect(&proxy_host).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(client, "{head}Host: {proxy_host}\r\n\r\n{body}").unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();

    let got = String::from_utf8(recorded.join().unwrap()).unwrap();
    assert_eq!(got, format!("{head}Host: {upstream_host}\r\n\r\n{body}"));
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 14\r\n\
         Connection: close\r\n\r\n<ok>hello</ok>"
    );
    let stats = proxy.stats();
    assert_eq!(
        stats.ops,
        BTreeMap::from([("ec2:DescribeRegions".into(), 1)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_throttling_fails_every_protocol_with_its_throttling_code_after_retries() {
    let moto = Moto::start();
    let faults = Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let sdk = through(&proxy, retries(2)).await;

    let got = one_read_each(&sdk).await;
    let code = |c: &str| Err::<(), _>(c.to_string());
    assert_eq!(
        got,
        BTreeMap::from([
            ("ec2:DescribeVpcs", code("RequestLimitExceeded")),
            ("iam:ListRoles", code("Throttling")),
            ("sts:GetCallerIdentity", code("Throttling")),
            ("eks:ListClusters", code("TooManyRequestsException")),
            ("sqs:ListQueues", code("RequestThrottled")),
            ("events:ListRules", code("ThrottlingException")),
        ])
    );
    // Two attempts each: the SDK took every one of them for a retryable error.
    let stats = proxy.stats();
    assert_eq!(
        (stats.requests, stats.throttled, stats.forwarded),
        (12, 12, 0)
    );
    assert_eq!(stats.retries, 6);
    assert!(stats.ops.values().all(|n| *n == 2), "{stats:?}");
}

/// An account's request bucket: writes past its capacity are throttled until it refills,
/// reads (with `writes_only`) and other services never are.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_bucket_throttles_writes_past_its_capacity_until_it_refills() {
    let moto = Moto::start();
    let faults = Faults {
        buckets: vec![RateBucket {
            service: "ec2".into(),
            writes_only: true,
            capacity: 3.0,
            // One token every 8 s: slow enough that five calls on a loaded machine still find
            // the bucket empty (at 1 a second they did not, under three concurrent builds).
            refill_per_sec: 0.125,
        }],
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let sdk = through(&proxy, retries(1)).await;
    let ec2 = &sdk.aws.ec2;
    let tag = |i: usize| async move {
        ec2.create_tags()
            .resources("vpc-00000000")
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("n")
                    .value(i.to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("(no code)").to_string())
            .err()
    };
    // Three writes take the three tokens (moto's own answer: no such VPC); the next ones find
    // the bucket empty, unless a token came back in between.
    let mut codes = Vec::new();
    for i in 0..5 {
        codes.push(tag(i).await);
    }
    let throttled = codes
        .iter()
        .filter(|c| c.as_deref() == Some("RequestLimitExceeded"))
        .count();
    assert!(throttled >= 1, "{codes:?}");
    assert!(
        codes[..3]
            .iter()
            .all(|c| c.as_deref() != Some("RequestLimitExceeded")),
        "{codes:?}"
    );
    // Reads and other services pass while the bucket is empty.
    assert!(sdk.aws.ec2.describe_vpcs().send().await.is_ok());
    assert!(sdk.aws.iam.list_roles().send().await.is_ok());
    // A token comes back within eight seconds.
    tokio::time::sleep(Duration::from_millis(8200)).await;
    assert_ne!(tag(9).await.as_deref(), Some("RequestLimitExceeded"));
    assert_eq!(proxy.stats().throttled as usize, throttled);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_calls_of_every_protocol_are_retried_until_they_succeed() {
    let moto = Moto::start();
    let ops = [
        "ec2:DescribeVpcs",
        "iam:ListRoles",
        "sts:GetCallerIdentity",
        "eks:ListClusters",
        "sqs:ListQueues",
        "events:ListRules",
    ];
    let faults = Faults {
        throttles: ops.iter().map(|op| (op.to_string(), 2)).collect(),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    // The SDK's default of 3 attempts: two throttled, the third goes through.
    let sdk = through(&proxy, retries(3)).await;

    let got = one_read_each(&sdk).await;
    assert!(got.values().all(Result::is_ok), "{got:?}");
    let stats = proxy.stats();
    assert_eq!(
        (stats.throttled, stats.forwarded, stats.retries),
        (12, 6, 12)
    );
    let expected: BTreeMap<String, u64> = ops.iter().map(|op| (op.to_string(), 3)).collect();
    assert_eq!(stats.ops, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_percent_throttling_is_absorbed_by_retries_and_reproduced_by_its_seed() {
    let moto = Moto::start();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let faults = Faults {
            seed: 20261128,
            throttle_rate: 0.3,
            ..Faults::default()
        };
        let proxy = FaultProxy::start(&moto.endpoint(), faults);
        // As many attempts as the binary allows itself.
        let sdk = through(&proxy, retries(meshstack::aws::MAX_ATTEMPTS)).await;
        for round in 0..10 {
            let aws = &sdk.aws;
            let results = [
                aws.ec2
                    .describe_vpcs()
                    .send()
                    .await
                    .map(|_| ())
                    .err()
                    .map(|e| e.to_string()),
                aws.iam
                    .list_roles()
                    .send()
                    .await
                    .map(|_| ())
                    .err()
                    .map(|e| e.to_string()),
                aws.eks
                    .list_clusters()
                    .send()
                    .await
                    .map(|_| ())
                    .err()
                    .map(|e| e.to_string()),
                aws.sqs
                    .list_queues()
                    .send()
                    .await
                    .map(|_| ())
                    .err()
                    .map(|e| e.to_string()),
                aws.events
                    .list_rules()
                    .send()
                    .await
                    .map(|_| ())
                    .err()
                    .map(|e| e.to_string()),
            ];
            assert_eq!(results, [None, None, None, None, None], "round {round}");
        }
        let stats = proxy.stats();
        assert_eq!(stats.forwarded, 50, "{stats:?}");
        assert!(stats.throttled > 0, "{stats:?}");
        assert_eq!(
            stats.retries, stats.throttled,
            "each throttled attempt retried"
        );
        runs.push(stats);
    }
    eprintln!(
        "30% throttling: {} of {} requests throttled",
        runs[0].throttled, runs[0].requests
    );
    assert_eq!(runs[0], runs[1], "same seed, same faults");
}

#[tokio::test(flavor = "multi_thread")]
async fn dependency_violation_answers_the_first_deletes_then_lets_one_through() {
    let moto = Moto::start();
    let direct = moto.clients().await;
    let vpc = direct
        .ec2
        .create_vpc()
        .cidr_block("10.2.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap();
    let faults = Faults {
        dependency_violations: BTreeMap::from([("ec2:DeleteVpc".into(), 2)]),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    // Default retries: DependencyViolation is not retryable, so each call is one request.
    let sdk = through(&proxy, retries(3)).await;

    for attempt in 1..=2 {
        let err = sdk
            .aws
            .ec2
            .delete_vpc()
            .vpc_id(vpc_id)
            .send()
            .await
            .expect_err("a DependencyViolation");
        assert_eq!(err.code(), Some("DependencyViolation"), "delete {attempt}");
        assert_eq!(
            err.message(),
            Some(format!("The vpc '{vpc_id}' has dependencies and cannot be deleted.").as_str())
        );
    }
    let still_there = direct.ec2.describe_vpcs().vpc_ids(vpc_id).send().await;
    assert_eq!(still_there.unwrap().vpcs().len(), 1);
    sdk.aws
        .ec2
        .delete_vpc()
        .vpc_id(vpc_id)
        .send()
        .await
        .unwrap();
    let gone = direct.ec2.describe_vpcs().vpc_ids(vpc_id).send().await;
    assert!(gone.is_err() || gone.unwrap().vpcs().is_empty());
    let stats = proxy.stats();
    assert_eq!(
        (stats.requests, stats.dependency_violations, stats.forwarded),
        (3, 2, 1)
    );
}

/// A NAT gateway made directly in moto; its id.
async fn nat_gateway(aws: &Clients) -> String {
    let vpc = aws.ec2.create_vpc().cidr_block("10.3.0.0/16").send().await;
    let vpc = vpc.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = aws
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.3.0.0/24")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    let eip = aws.ec2.allocate_address().send().await.unwrap();
    let nat = aws
        .ec2
        .create_nat_gateway()
        .subnet_id(subnet)
        .allocation_id(eip.allocation_id().unwrap())
        .send()
        .await
        .unwrap();
    nat.nat_gateway()
        .unwrap()
        .nat_gateway_id()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn still_creating_holds_cluster_nodegroup_and_nat_back_for_n_answers() {
    use aws_sdk_ec2::types::NatGatewayState;
    use aws_sdk_eks::types::{ClusterStatus, NodegroupStatus};

    let moto = Moto::start();
    let direct = moto.clients().await;
    cluster_with_nodegroup(&direct, "slow").await;
    let nat = nat_gateway(&direct).await;
    let faults = Faults {
        still_creating: BTreeMap::from([
            ("eks:DescribeCluster".into(), 3),
            ("eks:DescribeNodegroup".into(), 2),
            ("ec2:DescribeNatGateways".into(), 1),
        ]),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let sdk = through(&proxy, retries(1)).await;

    let mut cluster = Vec::new();
    for _ in 0..4 {
        let c = sdk.aws.eks.describe_cluster().name("slow").send().await;
        cluster.push(c.unwrap().cluster().unwrap().status().cloned().unwrap());
    }
    use ClusterStatus::{Active, Creating};
    assert_eq!(cluster, [Creating, Creating, Creating, Active]);

    let mut nodegroup = Vec::new();
    for _ in 0..3 {
        let n = sdk
            .aws
            .eks
            .describe_nodegroup()
            .cluster_name("slow")
            .nodegroup_name("ng")
            .send()
            .await;
        nodegroup.push(n.unwrap().nodegroup().unwrap().status().cloned().unwrap());
    }
    assert_eq!(
        nodegroup,
        [
            NodegroupStatus::Creating,
            NodegroupStatus::Creating,
            NodegroupStatus::Active
        ]
    );

    let mut nats = Vec::new();
    for _ in 0..2 {
        let n = sdk
            .aws
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(&nat)
            .send()
            .await
            .unwrap();
        nats.push(n.nat_gateways()[0].state().cloned().unwrap());
    }
    assert_eq!(nats, [NatGatewayState::Pending, NatGatewayState::Available]);
    assert_eq!(proxy.stats().rewritten, 3 + 2 + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_for_holds_a_cluster_back_for_a_duration_from_its_first_ready_answer() {
    use aws_sdk_eks::types::ClusterStatus;

    let moto = Moto::start();
    let direct = moto.clients().await;
    cluster_with_nodegroup(&direct, "timed").await;
    let hold = Duration::from_millis(500);
    let faults = Faults {
        creating_for: BTreeMap::from([("eks:DescribeCluster".into(), hold)]),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let sdk = through(&proxy, retries(1)).await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut polls = 0;
    loop {
        let c = sdk.aws.eks.describe_cluster().name("timed").send().await;
        let status = c.unwrap().cluster().unwrap().status().cloned().unwrap();
        polls += 1;
        if status == ClusterStatus::Active {
            break;
        }
        assert_eq!(status, ClusterStatus::Creating);
        assert!(Instant::now() < deadline, "still CREATING after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= hold,
        "ACTIVE after {:?}",
        started.elapsed()
    );
    assert!(polls > 1);
    assert_eq!(proxy.stats().rewritten, polls - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_is_added_to_every_answer() {
    let moto = Moto::start();
    let latency = Duration::from_millis(300);
    let faults = Faults {
        latency,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let sdk = through(&proxy, retries(1)).await;
    for _ in 0..2 {
        let started = Instant::now();
        sdk.aws.ec2.describe_vpcs().send().await.unwrap();
        assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_runs_up_and_down_through_the_proxy_untouched() {
    let moto = Moto::start();
    let direct = moto.clients().await;
    let proxy = FaultProxy::start(&moto.endpoint(), Faults::default());
    let ms = Meshstack::new(Some(proxy.endpoint()));
    let stack = ms.stack_file(
        "stack.yaml",
        "name: proxied\nregion: us-east-1\nkubernetes_version: \"1.36\"\n",
    );
    let stack = stack.to_str().unwrap();
    let stages = "network,nat,iam,cluster,nodegroup,karpenter-infra";

    let out = ms.run(&["up", "--stack", stack, "--only", stages, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(direct.inventory("proxied").await, expected_full_inventory());
    let calls = api_calls(&out);
    let stats = proxy.stats();
    eprintln!("up through the proxy: {:?}", stats.ops);
    // Every attempt the binary counted reached the proxy, and every one went on to moto.
    let attempts = calls["reads"].as_u64().unwrap() + calls["writes"].as_u64().unwrap();
    assert_eq!(stats.requests, attempts, "{calls}");
    assert_eq!(stats.forwarded, stats.requests);
    assert_eq!(stats.retries, 0);
    // And every one was named: no protocol or route the proxy cannot place.
    for op in stats.ops.keys() {
        assert!(
            !op.starts_with("unknown:") && !op.ends_with(":Unknown"),
            "unnamed request {op}"
        );
    }

    let out = ms.run(&["down", "--yes", "--stack", stack, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(direct.inventory("proxied").await, Default::default());
    let stats = proxy.stats();
    assert_eq!(stats.forwarded, stats.requests);
    eprintln!("up and down through the proxy: {:?}", stats.ops);
}

/// The access-entries model answers as the EKS API Reference says, where the `access` stage
/// depends on it: on the cluster moto has (none: ResourceNotFoundException), one entry per
/// principal (a second: ResourceInUseException, unless the same idempotency token), STS
/// sessions refused, scopes checked, and the entries gone with their cluster.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_entries_model_answers_as_eks_does() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint(), Faults::default());
    let eks = Clients::at(&proxy.endpoint()).await.eks;
    let code = |e: &dyn ProvideErrorMetadata| e.code().map(str::to_string);
    let role = "arn:aws:iam::123456789012:role/alice";

    let err = eks
        .describe_access_entry()
        .cluster_name("c")
        .principal_arn(role)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err).as_deref(), Some("ResourceNotFoundException"));

    let create_cluster = || async {
        eks.create_cluster()
            .name("c")
            .role_arn("arn:aws:iam::123456789012:role/c-cluster")
            .resources_vpc_config(
                aws_sdk_eks::types::VpcConfigRequest::builder()
                    .subnet_ids("subnet-1")
                    .build(),
            )
            .send()
            .await
            .unwrap()
    };
    create_cluster().await;
    let create = |token: &'static str| {
        eks.create_access_entry()
            .cluster_name("c")
            .principal_arn(role)
            .tags("meshstack.io/stack", "c")
            .client_request_token(token)
            .send()
    };
    let first = create("t1").await.unwrap();
    assert_eq!(
        first.access_entry().unwrap().tags().unwrap()["meshstack.io/stack"],
        "c"
    );
    create("t1")
        .await
        .expect("the same request again is idempotent");
    let err = create("t2").await.unwrap_err().into_service_error();
    assert_eq!(code(&err).as_deref(), Some("ResourceInUseException"));
    let err = eks
        .create_access_entry()
        .cluster_name("c")
        .principal_arn("arn:aws:sts::123456789012:assumed-role/alice/s")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err).as_deref(), Some("InvalidParameterException"));

    let edit = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy";
    let scope = |t: aws_sdk_eks::types::AccessScopeType| {
        aws_sdk_eks::types::AccessScope::builder().r#type(t).build()
    };
    let err = eks
        .associate_access_policy()
        .cluster_name("c")
        .principal_arn(role)
        .policy_arn(edit)
        .access_scope(scope(aws_sdk_eks::types::AccessScopeType::Namespace))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err).as_deref(), Some("InvalidParameterException"));
    eks.associate_access_policy()
        .cluster_name("c")
        .principal_arn(role)
        .policy_arn(edit)
        .access_scope(scope(aws_sdk_eks::types::AccessScopeType::Cluster))
        .send()
        .await
        .unwrap();
    let listed = eks
        .list_associated_access_policies()
        .cluster_name("c")
        .principal_arn(role)
        .send()
        .await
        .unwrap();
    let policies = listed.associated_access_policies();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].policy_arn(), Some(edit));
    assert_eq!(
        policies[0].access_scope().and_then(|s| s.r#type()),
        Some(&aws_sdk_eks::types::AccessScopeType::Cluster)
    );
    let err = eks
        .disassociate_access_policy()
        .cluster_name("c")
        .principal_arn(role)
        .policy_arn("arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err).as_deref(), Some("ResourceNotFoundException"));
    let entries = eks
        .list_access_entries()
        .cluster_name("c")
        .send()
        .await
        .unwrap();
    assert_eq!(entries.access_entries(), [role]);

    // The cluster goes, and its entries with it: a new cluster of that name has none.
    eks.delete_cluster().name("c").send().await.unwrap();
    create_cluster().await;
    let entries = eks
        .list_access_entries()
        .cluster_name("c")
        .send()
        .await
        .unwrap();
    assert!(entries.access_entries().is_empty());
}
