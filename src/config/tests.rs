use super::errors::edit_distance;
use super::resolve::{is_instance_type, is_region, suggest_name, zone_region};
use super::state::is_kms_key;
use super::*;

fn parse(yaml: &str) -> Result<Stack, ConfigError> {
    Stack::parse(yaml, "test.yaml")
}

fn err(yaml: &str) -> String {
    parse(yaml).expect_err(yaml).to_string()
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

#[test]
fn minimal_file_gets_every_default() {
    let stack = parse("name: x\n").unwrap();
    assert_eq!(
        stack,
        Stack {
            name: "x".into(),
            region: None,
            zones: ZoneSpec::Count(3),
            kubernetes_version: "1.36".into(),
            network: NetworkSpec {
                vpc_cidr: cidr("10.0.0.0/16"),
                nat: NatMode::PerZone,
            },
            node_group: NodeGroupSpec {
                instance_types: vec!["m5.large".into()],
                size: 3,
                disk_size_gib: 20,
                capacity_type: CapacityType::OnDemand,
            },
            cluster: ClusterSpec {
                endpoint_public_access: true,
                endpoint_private_access: true,
                public_access_cidrs: vec![cidr("0.0.0.0/0")],
                support: crate::versions::SupportType::Standard,
                existing: None,
            },
            allowed_account_ids: vec![],
            tags: BTreeMap::new(),
            karpenter: KarpenterSpec {
                version: ReleaseVersion::new(1, 14, 1),
                capacity_types: vec![CapacityType::Spot, CapacityType::OnDemand],
            },
            istio: IstioSpec {
                version: ReleaseVersion::new(1, 18, 7),
                tracing_sampling: Percent(100.0),
                ingress_source_ranges: vec![],
            },
            locality: LocalitySpec {
                mode: LocalityMode::Failover,
                local_weight: None,
                distribute: BTreeMap::new(),
                connection_pool: ConnectionPoolSpec {
                    http2_max_requests: 10,
                    max_requests_per_connection: 10,
                },
                outlier_detection: OutlierDetectionSpec {
                    consecutive_gateway_errors: 1,
                    interval: "1m".into(),
                    base_ejection_time: "30s".into(),
                },
                verify: LocalityVerifySpec {
                    orders_in_zone_min: Percent(80.0),
                    products_on_node_min: Percent(100.0),
                    failed_requests_max: Percent(0.0),
                },
            },
            charts: ChartSources::default(),
            state: StateSpec::default(),
            expires_in: None,
            images: BTreeMap::new(),
            access: AccessSpec::default(),
        }
    );
    assert_eq!(stack.cluster_name(), "x");
    assert_eq!(stack.zone_count(), 3);
    // Empty sections mean "all defaults", like absent ones.
    assert_eq!(
        parse("name: x\nnetwork:\nnode_group: {}\ncluster: ~\nkarpenter: {}\nistio:\nlocality:\n")
            .unwrap(),
        stack
    );
}

#[test]
fn state_locations() {
    let s3 = |bucket: &str, prefix: &str, region: Option<&str>| {
        StateLocation::S3(S3Location {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: region.map(str::to_string),
            owner: None,
        })
    };
    let good = [
        ("local", StateLocation::Local, "local"),
        ("s3://my-state", s3("my-state", "", None), "s3://my-state"),
        ("s3://my-state/", s3("my-state", "", None), "s3://my-state"),
        (
            "s3://my.state-1/team/meshstack/",
            s3("my.state-1", "team/meshstack", None),
            "s3://my.state-1/team/meshstack",
        ),
        (
            "s3://abc/p?region=eu-west-1",
            s3("abc", "p", Some("eu-west-1")),
            "s3://abc/p?region=eu-west-1",
        ),
        (
            "s3://abc/p?owner=111122223333&region=eu-west-1",
            StateLocation::S3(S3Location {
                owner: Some("111122223333".into()),
                ..match s3("abc", "p", Some("eu-west-1")) {
                    StateLocation::S3(l) => l,
                    StateLocation::Local => unreachable!(),
                }
            }),
            "s3://abc/p?region=eu-west-1&owner=111122223333",
        ),
    ];
    for (text, want, shown) in good {
        let got: StateLocation = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want, "{text}");
        assert_eq!(got.to_string(), shown, "{text}");
        assert_eq!(shown.parse::<StateLocation>().unwrap(), want, "round trip");
    }
    let bad = [
        (
            ".meshstack",
            "is not a state location; write s3://BUCKET/PREFIX",
        ),
        ("https://my-state/x", "is not a state location"),
        ("s3://", "the bucket name is missing"),
        (
            "s3://ab/x",
            "S3 bucket names have 3 to 63 characters; `ab` has 2",
        ),
        (
            "s3://My-State/x",
            "contains 'M'; S3 bucket names use lowercase",
        ),
        ("s3://my_state/x", "contains '_'"),
        ("s3://-state/x", "must begin and end with a letter or digit"),
        ("s3://a..b/x", "must not contain \"..\""),
        ("s3://10.0.0.1/x", "is an IP address"),
        ("s3://bucket//x", "has an empty segment"),
        ("s3://bucket/a/../b", "has a `..` segment"),
        ("s3://bucket/a b", "contains ' '"),
        (
            "s3://bucket/p?region=moon-1",
            "`moon-1` is not an AWS region name",
        ),
        (
            "s3://bucket/p?versioning=on",
            "unknown option `versioning=on`",
        ),
        (
            "s3://bucket/p?owner=12345",
            "`12345` is not an AWS account ID",
        ),
    ];
    for (text, want) in bad {
        let err = text.parse::<StateLocation>().expect_err(text);
        assert!(err.contains(want), "{text}: {err}");
    }
    let loc = S3Location {
        bucket: "b".into(),
        prefix: "team".into(),
        region: None,
        owner: None,
    };
    assert_eq!(loc.key("demo", "state.json"), "team/demo/state.json");
    assert_eq!(
        loc.url_of(&loc.key("demo", "lock.json")),
        "s3://b/team/demo/lock.json"
    );
    let root = S3Location {
        prefix: String::new(),
        ..loc
    };
    assert_eq!(root.key("demo", "state.json"), "demo/state.json");
}

#[test]
fn state_settings_in_the_stack_file() {
    let stack = parse(
        "name: x\nstate: s3://team-state/meshstack\nstate_require_versioning: true\n\
         state_kms_key: alias/meshstack-state\n",
    )
    .unwrap();
    assert_eq!(
        stack.state,
        StateSpec {
            location: Some("s3://team-state/meshstack".parse().unwrap()),
            require_versioning: true,
            kms_key: Some("alias/meshstack-state".into()),
        }
    );
    assert_eq!(parse("name: x\n").unwrap().state, StateSpec::default());
    for key in [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:eu-west-1:123456789012:alias/state",
    ] {
        assert!(is_kms_key(key), "{key}");
    }
    for key in ["", "my key", "alias/aws/s3", "arn:aws:s3:::bucket", "1234"] {
        assert!(!is_kms_key(key), "{key}");
    }
    let cases = [
        (
            "name: x\nstate: ./state\n",
            "state",
            "is not a state location",
        ),
        (
            "name: x\nstate: s3://Bad-state/x\n",
            "state",
            "S3 bucket names use lowercase",
        ),
        (
            "name: x\nstate_kms_key: my-key\n",
            "state_kms_key",
            "is not a KMS key",
        ),
        (
            "name: x\nstate_require_versioning: yes please\n",
            "state_require_versioning",
            "",
        ),
    ];
    for (yaml, field, want) in cases {
        let e = parse(yaml).expect_err(yaml);
        assert_eq!(e.field(), Some(field), "{yaml}: {e}");
        assert!(e.to_string().contains(want), "{yaml}: {e}");
    }
}

#[test]
fn locality_settings() {
    let zones = "zones: [us-east-1a, us-east-1b, us-east-1c]\n";
    let ok = |yaml: &str| parse(&format!("name: x\n{zones}{yaml}")).unwrap().locality;
    let distribute = ok("locality: {mode: distribute, local_weight: 90}");
    assert_eq!(distribute.mode, LocalityMode::Distribute);
    assert_eq!(distribute.local_weight, Some(90));
    // The verify threshold follows the weight unless set.
    assert_eq!(distribute.verify.orders_in_zone_min, Percent(85.0));
    let explicit = ok("locality:\n  mode: distribute\n  distribute:\n    \
                       us-east-1a: {us-east-1a: 70, us-east-1b: 30}\n");
    assert_eq!(
        explicit.distribute["us-east-1a"],
        BTreeMap::from([("us-east-1a".into(), 70), ("us-east-1b".into(), 30)])
    );
    let tuned = ok(
        "locality:\n  outlier_detection: {interval: 10s, base_ejection_time: 500ms}\n  \
                    verify: {orders_in_zone_min: 95, products_on_node_min: 99.5, \
                    failed_requests_max: 2.5}\n",
    );
    assert_eq!(tuned.outlier_detection.interval, "10s");
    assert_eq!(tuned.outlier_detection.base_ejection_time, "500ms");
    assert_eq!(tuned.verify.orders_in_zone_min, Percent(95.0));
    assert_eq!(tuned.verify.products_on_node_min, Percent(99.5));
    assert_eq!(tuned.verify.failed_requests_max, Percent(2.5));
    assert_eq!(distribute.verify.failed_requests_max, Percent(0.0));

    // (locality yaml, field, message part)
    let bad = [
        ("locality: {mode: distribute, local_weight: 0}", "locality.local_weight", "between 1 and 100"),
        ("locality: {mode: distribute, local_weight: 101}", "locality.local_weight", "between 1 and 100"),
        ("locality: {local_weight: 80}", "locality.local_weight", "mode: distribute"),
        ("locality: {mode: nearest}", "locality.mode", "failover"),
        (
            "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-east-1a: 80, us-east-1b: 30}\n",
            "locality.distribute.us-east-1a",
            "add up to 110%",
        ),
        (
            "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-east-1a: 80}\n",
            "locality.distribute.us-east-1a",
            "add up to 80%",
        ),
        (
            "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-east-1a: 150, us-east-1b: -50}\n",
            "locality.distribute.us-east-1a.us-east-1a",
            "between 1 and 100",
        ),
        (
            "locality:\n  mode: distribute\n  distribute:\n    us-east-1x: {us-east-1a: 100}\n",
            "locality.distribute.us-east-1x",
            "not one of the stack's zones",
        ),
        (
            "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-west-2a: 100}\n",
            "locality.distribute.us-east-1a.us-west-2a",
            "not one of the stack's zones",
        ),
        ("locality: {outlier_detection: {interval: 1 minute}}", "locality.outlier_detection.interval", "duration"),
        ("locality: {outlier_detection: {base_ejection_time: 0s}}", "locality.outlier_detection.base_ejection_time", "duration"),
        ("locality: {connection_pool: {http2_max_requests: 0}}", "locality.connection_pool.http2_max_requests", "between 1"),
        ("locality: {verify: {orders_in_zone_min: 120}}", "locality.verify.orders_in_zone_min", "percentage"),
        ("locality: {verify: {products_on_node: 100}}", "locality.verify.products_on_node", "did you mean `products_on_node_min`"),
        ("locality: {verify: {failed_requests_max: -1}}", "locality.verify.failed_requests_max", "percentage"),
        ("locality: {verify: {failed_requests: 1}}", "locality.verify.failed_requests", "did you mean `failed_requests_max`"),
    ];
    for (yaml, field, part) in bad {
        let err = parse(&format!("name: x\n{zones}{yaml}")).unwrap_err();
        assert_eq!(err.field(), Some(field), "{yaml}: {err}");
        assert!(err.to_string().contains(part), "{yaml}: {err}");
    }
    // Named weights need named zones.
    let err = parse("name: x\nzones: 3\nlocality: {mode: distribute, distribute: {a: {a: 100}}}")
        .unwrap_err();
    assert!(err.to_string().contains("list its zones"), "{err}");
}

#[test]
fn embedded_default_is_the_demo_stack() {
    let stack = Stack::embedded_default();
    assert_eq!(stack.name, "meshstack-demo");
    assert_eq!(stack.region(), None);
    assert_eq!(stack.zone_count(), 3);
    assert_eq!(stack.node_group.instance_types, ["m5.large"]);
    assert_eq!(stack.node_group.size, 3);
    assert_eq!(stack.network.vpc_cidr, cidr("10.0.0.0/16"));
    assert_eq!(stack.network.nat, NatMode::PerZone);
    // The file says it shows every default; it must not drift from the code's.
    assert_eq!(stack, parse("name: meshstack-demo\n").unwrap());
}

#[test]
fn a_full_file_is_read_field_by_field() {
    let stack = parse(
        r#"
name: shop
region: eu-west-1
zones: [eu-west-1a, eu-west-1c]
kubernetes_version: "1.33"
network: {vpc_cidr: 172.20.0.0/18, nat: single}
node_group:
  instance_types: [m6i.large, m5.large]
  size: 4
  disk_size_gib: 50
  capacity_type: spot
cluster:
  endpoint_public_access: true
  endpoint_private_access: false
  public_access_cidrs: [203.0.113.0/24, 198.51.100.7/32]
allowed_account_ids: ["012345678901"]
tags:
  team: payments
  cost-center: "42"
  empty:
  tilde: ~
"#,
    )
    .unwrap();
    assert_eq!(stack.region(), Some("eu-west-1"));
    assert_eq!(
        stack.zones,
        ZoneSpec::Names(vec!["eu-west-1a".into(), "eu-west-1c".into()])
    );
    assert_eq!(stack.kubernetes_version, "1.33");
    assert_eq!(stack.network.vpc_cidr, cidr("172.20.0.0/18"));
    assert_eq!(stack.network.nat, NatMode::Single);
    assert_eq!(stack.node_group.instance_types, ["m6i.large", "m5.large"]);
    assert_eq!(stack.node_group.size, 4);
    assert_eq!(stack.node_group.disk_size_gib, 50);
    assert_eq!(stack.node_group.capacity_type.as_eks_str(), "SPOT");
    assert!(!stack.cluster.endpoint_private_access);
    assert_eq!(
        stack.cluster.public_access_cidrs,
        [cidr("203.0.113.0/24"), cidr("198.51.100.7/32")]
    );
    assert_eq!(stack.allowed_account_ids, ["012345678901"]);
    assert_eq!(stack.tags["cost-center"], "42");
    assert_eq!(stack.tags["empty"], "");
    assert_eq!(stack.tags["tilde"], "");
}

#[test]
fn zone_list_implies_region() {
    let stack = parse("name: x\nzones: [us-west-2b, us-west-2a, us-west-2d]\n").unwrap();
    assert_eq!(stack.region(), Some("us-west-2"));
    assert_eq!(stack.zone_count(), 3);
    let stack =
        parse("name: x\nregion: us-gov-west-1\nzones: [us-gov-west-1a, us-gov-west-1b]\n").unwrap();
    assert_eq!(stack.region(), Some("us-gov-west-1"));
    assert_eq!(parse("name: x\nzones: 4\n").unwrap().region(), None);
}

#[test]
fn region_and_zone_name_shapes() {
    for (region, ok) in [
        ("us-east-1", true),
        ("eu-central-2", true),
        ("us-gov-west-1", true),
        ("ap-southeast-4", true),
        ("cn-north-1", true),
        ("us-east", false),
        ("us-east-1a", false),
        ("US-EAST-1", false),
        ("use-east-1", false),
        ("us-gov-1-a", false),
        ("us--1", false),
        ("us-east-100", false),
        ("", false),
    ] {
        assert_eq!(is_region(region), ok, "{region}");
    }
    for (zone, region) in [
        ("us-east-1a", Some("us-east-1")),
        ("us-gov-west-1b", Some("us-gov-west-1")),
        ("us-east-1", None),
        ("us-east-1A", None),
        ("use1-az1", None),
        ("us-east-1ab", None),
    ] {
        assert_eq!(zone_region(zone), region, "{zone}");
    }
}

#[test]
fn instance_type_shapes() {
    for (ty, ok) in [
        ("m5.large", true),
        ("c6gn.16xlarge", true),
        ("m7i-flex.large", true),
        ("u-6tb1.metal", true),
        ("t3.micro", true),
        ("m5large", false),
        ("M5.large", false),
        ("m.large", false),
        ("m5.", false),
        (".large", false),
        ("5m.large", false),
        ("m5.large.x", false),
        ("m5.Large", false),
    ] {
        assert_eq!(is_instance_type(ty), ok, "{ty}");
    }
}

#[test]
fn kubernetes_versions() {
    for (version, ok) in [
        ("\"1.29\"", true),
        ("'1.34'", true),
        ("\"1.28\"", false),
        ("\"1.37\"", false),
        ("\"1.034\"", false),
        ("\"v1.34\"", false),
        ("\"1.34.1\"", false),
        ("\"1.\"", false),
        ("1.34", false),
        ("1", false),
    ] {
        let result = parse(&format!("name: x\nkubernetes_version: {version}\n"));
        assert_eq!(result.is_ok(), ok, "{version}: {result:?}");
    }
    // 1.36 needs a newer Karpenter than 1.8, and says so naming the field and the oldest
    // release that works.
    let e =
        parse("name: x\nkubernetes_version: '1.36'\nkarpenter: {version: '1.8.1'}\n").unwrap_err();
    assert_eq!(e.field(), Some("karpenter.version"), "{e}");
    assert!(e.to_string().contains("1.13.0 or newer"), "{e}");
    parse("name: x\nkubernetes_version: '1.36'\nkarpenter: {version: '1.13.0'}\n").unwrap();
    // Any version the calendar knows parses; whether EKS still creates it is the day's
    // question, asked by plan/up/doctor (versions::check_kubernetes_support).
    parse("name: x\nkubernetes_version: '1.31'\nkarpenter: {version: '1.8.1'}\n").unwrap();
    let e = parse("name: x\nkubernetes_version: '1.28'\n").unwrap_err();
    assert!(e.to_string().contains("1.29 to 1.36"), "{e}");
}

#[test]
fn names() {
    for (name, ok) in [
        ("a", true),
        ("meshstack-demo", true),
        ("a1-b2", true),
        ("abcdefghijklmnopqrstuvwx", true),
        ("abcdefghijklmnopqrstuvwxy", false),
        ("", false),
        ("a--b", false),
        ("a-", false),
        ("-a", false),
        ("1a", false),
        ("a_b", false),
        ("Ab", false),
    ] {
        assert_eq!(name_problem(name).is_none(), ok, "{name:?}");
    }
    assert_eq!(suggest_name("My_Stack").as_deref(), Some("my-stack"));
    assert_eq!(suggest_name("demo--"), Some("demo".into()));
    assert_eq!(suggest_name("1st"), None);
    assert_eq!(suggest_name("meshstack-demo-extra-long"), None);
}

#[test]
fn cidr_parse_and_display() {
    for (text, parsed) in [
        ("10.0.0.0/16", Some(("10.0.0.0", 16))),
        ("0.0.0.0/0", Some(("0.0.0.0", 0))),
        ("203.0.113.7/32", Some(("203.0.113.7", 32))),
        ("10.0.0.1/16", Some(("10.0.0.1", 16))),
        ("10.0.0.0", None),
        ("10.0.0.0/", None),
        ("10.0.0.0/33", None),
        ("10.0.0.0/+8", None),
        ("10.0.0.0/08", None),
        ("10.0.0.0/16/1", None),
        ("10.0.0/16", None),
        ("10.0.0.256/16", None),
        ("010.0.0.0/16", None),
        (" 10.0.0.0/16", None),
        ("", None),
    ] {
        let result = text.parse::<Ipv4Cidr>();
        match parsed {
            Some((addr, prefix)) => {
                let cidr = result.unwrap();
                assert_eq!((cidr.addr, cidr.prefix), (addr.parse().unwrap(), prefix));
                assert_eq!(cidr.to_string(), text);
            }
            None => assert!(result.is_err(), "{text} parsed as {result:?}"),
        }
    }
    assert_eq!(
        "10.0.0/16".parse::<Ipv4Cidr>().unwrap_err().to_string(),
        "`10.0.0/16` is not an IPv4 CIDR block (bad address); write it like 10.0.0.0/16"
    );
}

#[test]
fn cidr_arithmetic() {
    let vpc = cidr("10.0.0.0/16");
    assert_eq!(cidr("10.0.3.4/16").network(), vpc);
    assert_eq!(cidr("1.2.3.4/0").network(), cidr("0.0.0.0/0"));
    assert_eq!(vpc.subnet(19, 1), Some(cidr("10.0.32.0/19")));
    assert_eq!(vpc.subnet(16, 0), Some(vpc));
    assert_eq!(vpc.subnet(19, 8), None);
    assert_eq!(vpc.subnet(15, 0), None);
    assert_eq!(vpc.subnet(33, 0), None);
    assert_eq!(
        cidr("0.0.0.0/0").subnet(32, u32::MAX),
        Some(cidr("255.255.255.255/32"))
    );
    assert!(vpc.contains(&cidr("10.0.255.0/24")));
    assert!(vpc.contains(&vpc));
    assert!(!vpc.contains(&cidr("10.1.0.0/24")));
    assert!(!vpc.contains(&cidr("10.0.0.0/8")));
    assert!(cidr("0.0.0.0/0").contains(&vpc));
}

#[test]
fn subnet_carving_table() {
    for (vpc, zone, public, private) in [
        ("10.0.0.0/16", 0, "10.0.224.0/22", "10.0.0.0/19"),
        ("10.0.0.0/16", 1, "10.0.228.0/22", "10.0.32.0/19"),
        ("10.0.0.0/16", 2, "10.0.232.0/22", "10.0.64.0/19"),
        ("10.0.0.0/16", 5, "10.0.244.0/22", "10.0.160.0/19"),
        ("172.16.0.0/20", 0, "172.16.14.0/26", "172.16.0.0/23"),
        ("172.16.0.0/20", 3, "172.16.14.192/26", "172.16.6.0/23"),
        ("192.168.64.0/18", 1, "192.168.121.0/24", "192.168.72.0/21"),
    ] {
        let stack = parse(&format!(
            "name: x\nzones: 6\nnetwork: {{vpc_cidr: {vpc}}}\n"
        ))
        .unwrap();
        assert_eq!(
            stack.subnet_cidrs(zone),
            (cidr(public), cidr(private)),
            "{vpc} zone {zone}"
        );
    }
}

#[test]
fn subnets_never_overlap() {
    for prefix in VPC_PREFIX_MIN..=VPC_PREFIX_MAX {
        for zones in ZONES_MIN..=ZONES_MAX {
            let yaml =
                format!("name: x\nzones: {zones}\nnetwork: {{vpc_cidr: 10.0.0.0/{prefix}}}\n");
            let stack = parse(&yaml).unwrap();
            let vpc = stack.network.vpc_cidr;
            let all: Vec<Ipv4Cidr> = (0..zones)
                .flat_map(|z| {
                    let (public, private) = stack.subnet_cidrs(z);
                    [public, private]
                })
                .collect();
            assert_eq!(all.len(), 2 * zones);
            for (i, a) in all.iter().enumerate() {
                assert!(vpc.contains(a), "{a} outside {vpc}");
                assert_eq!(*a, a.network(), "{a} has host bits");
                for b in &all[i + 1..] {
                    assert!(
                        !a.contains(b) && !b.contains(a),
                        "{a} overlaps {b} in {vpc}"
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "zone index 3 out of range")]
fn subnet_cidrs_rejects_a_zone_past_the_end() {
    parse("name: x\n").unwrap().subnet_cidrs(3);
}

#[test]
fn display_formats_are_exact() {
    let field = ConfigError::Field {
        file: "f.yaml".into(),
        field: "network.vpc_cidr".into(),
        message: "m".into(),
    };
    assert_eq!(field.to_string(), "f.yaml: network.vpc_cidr: m");
    assert_eq!(field.field(), Some("network.vpc_cidr"));
    let file = ConfigError::File {
        file: "f.yaml".into(),
        message: "m".into(),
    };
    assert_eq!(file.to_string(), "f.yaml: m");
    assert_eq!(file.field(), None);

    for (yaml, expected) in [
        (
            "name: x\nnetwork:\n  vpc_cidr: 10.0.0.1/16\n",
            "test.yaml: network.vpc_cidr: 10.0.0.1/16 has host bits set; did you mean 10.0.0.0/16?",
        ),
        (
            "name: x\nnetwork:\n  natt: single\n",
            "test.yaml: network.natt: unknown field `natt`, expected `vpc_cidr` or `nat` \
             (line 3, column 3); did you mean `nat`?",
        ),
        (
            "name: x\nnode_group:\n  size: three\n",
            "test.yaml: node_group.size: invalid type: string \"three\", expected a whole \
             number (line 3, column 9)",
        ),
        (
            "name: x\nnetwork: 10.0.0.0/16\n",
            "test.yaml: network: invalid type: string \"10.0.0.0/16\", expected a mapping \
             of settings (line 2, column 10)",
        ),
        (
            "name: x\nnode_group:\n  capacity_type: on_demand\n",
            "test.yaml: node_group.capacity_type: unknown variant `on_demand`, expected \
             `on-demand` or `spot` (line 3, column 18); did you mean `on-demand`?",
        ),
        (
            "name: x\nname: y\n",
            "test.yaml: name: `name` appears more than once in the mapping at line 1, column 1; \
             each key may appear only once",
        ),
        (
            "name: x\ntags:\n  a: b\n  a: c\n",
            "test.yaml: tags.a: `a` appears more than once in the mapping at line 3, column 3; \
             each key may appear only once",
        ),
        (
            "name: x\nkubernetes_version: 1.30\n",
            "test.yaml: kubernetes_version: 1.3 is a number here, but this setting is \
             text: YAML reads an unquoted 1.30 as 1.3, so quote the version, like \
             kubernetes_version: \"1.34\" (line 2, column 21)",
        ),
        ("", "test.yaml: the file is empty; a stack needs at least `name: <stack-name>` (see stacks/demo.yaml for every setting)"),
        ("42\n", "test.yaml: expected a mapping of settings like `name: meshstack-demo`, found the single value `42`"),
        (
            "name: x\n  bad: 1\n",
            "test.yaml: invalid YAML: mapping values are not allowed in this context (line 2, column 6)",
        ),
        (
            "@\n",
            "test.yaml: invalid YAML: found character that cannot start any token, while \
             scanning for the next token (line 1, column 1)",
        ),
    ] {
        assert_eq!(err(yaml), expected, "{yaml}");
    }
    let top = err("name: x\nregoin: us-east-1\n");
    assert!(
        top.starts_with(
            "test.yaml: regoin: unknown field `regoin`, expected one of `name`, `region`"
        ),
        "{top}"
    );
    assert!(
        top.ends_with("(line 2, column 1); did you mean `region`?"),
        "{top}"
    );
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let error = Stack::load(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: cannot read the stack file", path.display())
    );
    let ConfigError::Io { source, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);

    let path = dir.path().join("ok.yaml");
    std::fs::write(&path, "name: from-disk\n").unwrap();
    assert_eq!(Stack::load(&path).unwrap().name, "from-disk");
    std::fs::write(&path, "name: Bad\n").unwrap();
    let error = Stack::load(&path).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: name: ", path.display())),
        "{error}"
    );
}

#[test]
fn serialized_stack_parses_back_to_itself() {
    let full = parse(
        "name: x\nzones: [us-east-1a, us-east-1b]\nkubernetes_version: '1.30'\n\
         network: {nat: single}\nnode_group: {capacity_type: spot}\n\
         allowed_account_ids: ['000000000001']\ntags: {a: '1'}\n\
         karpenter: {version: 1.9.0, capacity_types: [on-demand]}\n\
         istio: {version: 1.18.1, tracing_sampling: 12.5}\n",
    )
    .unwrap();
    for stack in [Stack::embedded_default(), full] {
        let yaml = serde_yaml::to_string(&stack).unwrap();
        assert_eq!(Stack::parse(&yaml, "round trip").unwrap(), stack, "{yaml}");
    }
    let json = serde_json::to_value(Stack::embedded_default()).unwrap();
    assert_eq!(
        json["network"],
        serde_json::json!({"vpc_cidr": "10.0.0.0/16", "nat": "per-zone"})
    );
    assert_eq!(json["zones"], 3);
    assert_eq!(json["node_group"]["capacity_type"], "on-demand");
    assert_eq!(
        json["karpenter"],
        serde_json::json!({"version": "1.14.1", "capacity_types": ["spot", "on-demand"]})
    );
    assert_eq!(
        json["istio"],
        serde_json::json!({"version": "1.18.7", "tracing_sampling": 100.0})
    );
    assert!(json.get("region").is_none());
}

#[test]
fn typo_suggestions() {
    assert_eq!(
        closest("regoin", ["name", "region"].into_iter()),
        Some("region")
    );
    assert_eq!(
        closest("node-group", ["node_group"].into_iter()),
        Some("node_group")
    );
    assert_eq!(closest("karpenter", ["name", "region"].into_iter()), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn release_versions() {
    for (text, parsed) in [
        ("1.8.1", Some((1, 8, 1))),
        ("0.32.10", Some((0, 32, 10))),
        ("1.18.7", Some((1, 18, 7))),
        ("10.0.0", Some((10, 0, 0))),
        ("1.8", None),
        ("v1.8.1", None),
        ("1.8.1-rc.0", None),
        ("1.8.1+build", None),
        ("1.08.1", None),
        ("1.8.1.2", None),
        ("1..1", None),
        ("1.8.x", None),
        ("", None),
        ("1.8.9999999999", None),
    ] {
        let result = text.parse::<ReleaseVersion>();
        match parsed {
            Some((a, b, c)) => {
                assert_eq!(result, Ok(ReleaseVersion::new(a, b, c)), "{text}");
                assert_eq!(result.unwrap().to_string(), text);
            }
            None => assert!(result.is_err(), "{text} parsed as {result:?}"),
        }
    }
    assert!(ReleaseVersion::new(0, 33, 0) > ReleaseVersion::new(0, 32, 10));
    assert!(ReleaseVersion::new(1, 10, 0) > ReleaseVersion::new(1, 9, 5));
}

#[test]
fn karpenter_and_istio_sections() {
    let stack = parse("name: x\n").unwrap();
    assert_eq!(stack.karpenter.version, ReleaseVersion::new(1, 14, 1));
    assert_eq!(
        stack.karpenter.capacity_types,
        [CapacityType::Spot, CapacityType::OnDemand]
    );
    assert_eq!(stack.istio.version, ReleaseVersion::new(1, 18, 7));
    assert_eq!(stack.istio.tracing_sampling.get(), 100.0);

    let stack = parse(
        "name: x\nkubernetes_version: '1.35'\n\
         karpenter: {version: 1.9.0, capacity_types: [on-demand]}\n\
         istio: {version: 1.18.3, tracing_sampling: 0.5}\n",
    )
    .unwrap();
    assert_eq!(stack.karpenter.version, ReleaseVersion::new(1, 9, 0));
    assert_eq!(stack.karpenter.capacity_types, [CapacityType::OnDemand]);
    assert_eq!(stack.istio.version, ReleaseVersion::new(1, 18, 3));
    assert_eq!(stack.istio.tracing_sampling.get(), 0.5);
    // Whole numbers are percentages too.
    let stack = parse("name: x\nistio: {tracing_sampling: 0}\n").unwrap();
    assert_eq!(stack.istio.tracing_sampling.get(), 0.0);

    for (yaml, field, message) in [
        ("karpenter: {version: 1.8}", "karpenter.version", "quote"),
        (
            "karpenter: {version: v1.8.1}",
            "karpenter.version",
            "without the 'v'",
        ),
        (
            "karpenter: {version: '1.8'}",
            "karpenter.version",
            "no patch number",
        ),
        (
            "karpenter: {capacity_types: []}",
            "karpenter.capacity_types",
            "is empty",
        ),
        (
            "karpenter: {capacity_types: [spot, spot]}",
            "karpenter.capacity_types[1]",
            "listed twice",
        ),
        (
            "karpenter: {capacity_types: [reserved]}",
            "karpenter.capacity_types[0]",
            "unknown variant `reserved`",
        ),
        (
            "istio: {version: 1.18.7-beta.1}",
            "istio.version",
            "pre-release",
        ),
        (
            "istio: {tracing_sampling: 100.5}",
            "istio.tracing_sampling",
            "from 0 to 100",
        ),
        (
            "istio: {tracing_sampling: -1}",
            "istio.tracing_sampling",
            "from 0 to 100",
        ),
        (
            "istio: {tracing_sampling: .nan}",
            "istio.tracing_sampling",
            "from 0 to 100",
        ),
        (
            "istio: {tracing_sampling: all}",
            "istio.tracing_sampling",
            "expected a number",
        ),
        ("istio: {sampling: 1}", "istio.sampling", "unknown field"),
    ] {
        let error = parse(&format!("name: x\n{yaml}\n")).unwrap_err();
        assert_eq!(error.field(), Some(field), "{yaml}: {error}");
        assert!(error.to_string().contains(message), "{yaml}: {error}");
    }
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bad-stacks");

/// Every file in tests/fixtures/bad-stacks fails as expected.tsv says, and every
/// fixture is listed there.
#[test]
fn bad_stack_fixtures_fail_with_the_expected_error() {
    let dir = Path::new(FIXTURES);
    let manifest = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut listed = Vec::new();
    for line in manifest
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, field, message] = cols[..] else {
            panic!("expected.tsv: want 3 tab-separated columns: {line:?}")
        };
        listed.push(file.to_owned());
        let error = Stack::load(&dir.join(file)).expect_err(file);
        let shown = error.to_string();
        assert!(shown.contains(file), "{file}: {shown}");
        match field {
            "-" => assert_eq!(error.field(), None, "{file}: {shown}"),
            field => {
                assert_eq!(error.field(), Some(field), "{file}: {shown}");
                assert!(shown.contains(&format!(": {field}: ")), "{file}: {shown}");
            }
        }
        assert!(
            shown.contains(message),
            "{file}: want {message:?} in {shown}"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    listed.sort();
    assert_eq!(on_disk, listed, "fixtures on disk vs expected.tsv");
    assert!(listed.len() >= 34, "only {} fixtures", listed.len());
}

#[test]
fn lifetimes_parse_print_and_refuse_what_is_ambiguous() {
    for (text, secs, shown) in [
        ("8h", 8 * 3600, "8h"),
        ("90m", 90 * 60, "1h30m"),
        ("1h30m", 90 * 60, "1h30m"),
        ("2d", 2 * 86_400, "2d"),
        ("45s", 45, "45s"),
        (" 1d2h3m4s ", 86_400 + 7_384, "1d2h3m4s"),
    ] {
        let l: Lifetime = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(l.duration().as_secs(), secs, "{text}");
        assert_eq!(l.to_string(), shown, "{text}");
    }
    for (text, why) in [
        ("", "empty"),
        ("8", "no unit"),
        ("h", "without a number"),
        ("8 hours", "not a unit"),
        ("30m1h", "largest first"),
        ("1h1h", "largest first"),
        ("0h", "zero"),
        ("400d", "more than a year"),
        ("99999999999999999999d", "too long"),
    ] {
        let err = text.parse::<Lifetime>().unwrap_err();
        assert!(err.contains(why), "{text:?}: {err}");
    }
}

#[test]
fn expires_in_is_read_from_the_stack_file() {
    let s = Stack::parse("name: t\nexpires_in: 8h\n", "t.yaml").unwrap();
    assert_eq!(s.expires_in.unwrap().duration().as_secs(), 8 * 3600);
    assert_eq!(
        Stack::parse("name: t\n", "t.yaml").unwrap().expires_in,
        None
    );
    let err = Stack::parse("name: t\nexpires_in: 8\n", "t.yaml").unwrap_err();
    assert_eq!(err.field(), Some("expires_in"), "{err}");
}

#[test]
fn fleet_names_leave_room_for_the_suffix_and_say_how_much() {
    assert_eq!(fleet_env_name("demo", "01").unwrap(), "demo-01");
    assert_eq!(fleet_env_name("demo", "alice").unwrap(), "demo-alice");
    // 21 + "-01" = 24: fits exactly.
    let name21 = "a".repeat(21);
    assert!(fleet_env_name(&name21, "01").is_ok());
    let name22 = "a".repeat(22);
    let err = fleet_env_name(&name22, "01").unwrap_err();
    assert!(err.contains("25 characters"), "{err}");
    assert!(err.contains("may have at most 21"), "{err}");
    assert!(err.contains("make the fleet smaller"), "{err}");
    let err = fleet_env_name("demo", "Alice").unwrap_err();
    assert!(err.contains("lowercase"), "{err}");
    let err = fleet_env_name("demo", "a-").unwrap_err();
    assert!(err.contains("must not end with '-'"), "{err}");
    let err = fleet_env_name(&"a".repeat(20), "alice").unwrap_err();
    assert!(err.contains("shorter --names"), "{err}");
}

#[test]
fn renamed_keeps_settings_and_checks_the_name() {
    let s = Stack::parse("name: t\nnetwork:\n  nat: single\n", "t.yaml").unwrap();
    let e = s.renamed("t-01").unwrap();
    assert_eq!(e.name, "t-01");
    assert_eq!(e.network, s.network);
    assert!(s.renamed("T").is_err());
}

#[test]
fn a_teardown_stack_needs_only_a_name_and_a_region() {
    let s = Stack::for_teardown("old-01", Some("eu-west-1"), "--name").unwrap();
    assert_eq!((s.name.as_str(), s.region()), ("old-01", Some("eu-west-1")));
    assert_eq!(
        Stack::for_teardown("old-01", None, "--name")
            .unwrap()
            .region(),
        None
    );
    let err = Stack::for_teardown("old-01", Some("eu-west-1a"), "--name").unwrap_err();
    assert_eq!(err.field(), Some("region"), "{err}");
    let err = Stack::for_teardown("Old\nx: 1", Some("eu-west-1"), "--name").unwrap_err();
    assert_eq!(err.field(), Some("name"), "{err}");
}

#[test]
fn defaults_name_where_each_chart_lives_now() {
    if std::env::var(crate::charts::MIRROR_ENV).is_ok() {
        return;
    }
    let stack = Stack::embedded_default();
    assert_eq!(
        stack.chart_pin(crate::charts::name::ISTIOD).repository,
        crate::charts::ISTIO_REPO
    );
    assert!(!crate::charts::ISTIO_REPO.contains("googleapis"));
    let k = stack.chart(crate::charts::name::KARPENTER);
    assert_eq!(k.repo, crate::charts::KARPENTER_REPO);
    assert_eq!(k.version, "1.14.1");
    assert_eq!(
        stack.chart_pin(crate::charts::name::KIALI_OPERATOR).version,
        "1.73.2",
        "Istio 1.18's Kiali"
    );
    assert_eq!(stack.chart_pins().len(), crate::charts::name::ALL.len());
}

#[test]
fn per_chart_repository_beats_the_mirror() {
    let stack = Stack::parse(
        "name: x\ncharts:\n  mirror: oci://registry.example/mirror/\n  repositories:\n    istiod: https://charts.example/istio\n",
        "t.yaml",
    )
    .unwrap();
    let istiod = stack.chart_pin(crate::charts::name::ISTIOD);
    assert_eq!(istiod.repository, "https://charts.example/istio");
    assert_eq!(istiod.origin, crate::charts::Origin::StackRepository);
    if std::env::var(crate::charts::MIRROR_ENV).is_err() {
        let base = stack.chart_pin(crate::charts::name::ISTIO_BASE);
        assert_eq!(base.repository, "oci://registry.example/mirror");
        assert_eq!(base.origin, crate::charts::Origin::StackMirror);
    }
}

#[test]
fn an_existing_cluster_names_its_kubeconfig_and_context() {
    let s = Stack::parse(
        "name: t\ncluster:\n  existing:\n    context: kind-demo\n    kubeconfig: /k/config\n",
        "t",
    )
    .unwrap();
    let e = s.existing_cluster().unwrap();
    assert_eq!(e.context.as_deref(), Some("kind-demo"));
    assert_eq!(
        e.kubeconfig.as_deref(),
        Some(std::path::Path::new("/k/config"))
    );
    let bare = Stack::parse("name: t\ncluster:\n  existing: {}\n", "t").unwrap();
    assert_eq!(
        bare.existing_cluster(),
        Some(&ExistingCluster {
            context: None,
            kubeconfig: None
        })
    );
    assert!(Stack::parse("name: t\n", "t")
        .unwrap()
        .existing_cluster()
        .is_none());
}

#[test]
fn an_existing_cluster_refuses_what_only_a_built_stack_has() {
    for (yaml, field) in [
        (
            "cluster:\n  existing:\n    context: \"\"\n",
            "cluster.existing.context",
        ),
        (
            "cluster:\n  existing:\n    kubeconfig: \" \"\n",
            "cluster.existing.kubeconfig",
        ),
        ("cluster:\n  existing: {}\nexpires_in: 8h\n", "expires_in"),
        ("cluster:\n  existing:\n    server: x\n", "server"),
    ] {
        let err = Stack::parse(&format!("name: t\n{yaml}"), "t").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(field), "{yaml}: {text}");
    }
}

#[test]
fn traffic_distribution_needs_kubernetes_1_35_and_istio_1_27() {
    let ok = Stack::parse(
        "name: t\nistio: {version: 1.30.3}\nlocality: {mode: traffic-distribution}\n",
        "t",
    )
    .unwrap();
    assert_eq!(ok.locality.mode, LocalityMode::TrafficDistribution);
    assert!(!ok.locality.mode.uses_destination_rule());
    for (yaml, wanted) in [
        (
            "kubernetes_version: \"1.34\"\ncluster: {support: extended}\nistio: {version: 1.30.3}\n",
            "Kubernetes 1.35 or newer",
        ),
        ("", "Istio 1.27 or newer"),
        ("", "istio.version: 1.30.3"),
    ] {
        let err = Stack::parse(
            &format!("name: t\n{yaml}locality: {{mode: traffic-distribution}}\n"),
            "t",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("locality.mode") && text.contains(wanted),
            "{yaml}: {text}"
        );
    }
    let err = Stack::parse(
        "name: t\nistio: {version: 1.30.3}\nlocality:\n  mode: traffic-distribution\n  \
         outlier_detection: {interval: 5s}\n",
        "t",
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("locality.outlier_detection"),
        "{err:#}"
    );
}

#[test]
fn deep_nesting_is_refused_before_the_yaml_parser() {
    let deep = format!(
        "name: t\ntags: {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let err = Stack::parse(&deep, "t").unwrap_err();
    assert!(
        format!("{err:#}").contains("more than 32 deep (line 2)"),
        "{err:#}"
    );
    // Quoted and commented brackets do not count; real settings nest a few levels.
    let fine = format!(
        "name: t # {}\ntags: {{note: \"{}\"}}\nlocality: {{mode: distribute, distribute: {{us-east-1a: {{us-east-1a: 100}}}}}}\n",
        "[".repeat(100),
        "{".repeat(100)
    );
    assert!(super::too_deep(&fine).is_none());
}
