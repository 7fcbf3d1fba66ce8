//! `down` removes what the cluster made behind meshstack's back, tagged with the cluster's name
//! and not the stack's — the ingress gateway's load balancers, Karpenter's instances, a
//! `k8s-elb-*` security group and a detached network interface in the stack's VPC — and leaves
//! alone the same kinds of things belonging to another cluster, another VPC or nobody.
//!
//! moto (5.2.5) answers every call the sweeps make; it does not refuse to delete a VPC's
//! subnets or the VPC while load balancers, groups or interfaces remain in it, so the test
//! checks what is left afterwards instead of relying on a `DependencyViolation`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    Filter, InstanceNetworkInterfaceSpecification, InstanceStateName, ResourceType, Tag,
    TagSpecification,
};

use crate::support::fault_proxy::{FaultProxy, Faults, Guard, Hook};
use crate::support::{describe, Clients, LbClients, Meshstack, Moto, STACK_TAG};

const AWS_STAGES: &str = "network,nat,iam,cluster,nodegroup,karpenter-infra";
/// The stack, and so the cluster (`cluster_name()` is the stack name).
const NAME: &str = "sweep";
const OWNED: (&str, &str) = ("kubernetes.io/cluster/sweep", "owned");
/// What moto accepts as an image; the instances never boot.
const AMI: &str = "ami-12c6146b";

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn ec2_tags(kind: ResourceType, tags: &[(&str, &str)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build()
}

/// The stack's VPC and its (public, private) subnets, found by tag.
async fn stack_network(aws: &Clients) -> (String, Vec<String>, Vec<String>) {
    let vpcs = aws
        .ec2
        .describe_vpcs()
        .filters(filter(&format!("tag:{STACK_TAG}"), NAME))
        .send()
        .await
        .unwrap();
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc))
        .send()
        .await
        .unwrap();
    let (mut public, mut private) = (Vec::new(), Vec::new());
    for s in subnets.subnets() {
        let key = s
            .tags()
            .iter()
            .find(|t| t.key() == Some("meshstack.io/resource"))
            .and_then(|t| t.value())
            .unwrap_or_default();
        let id = s.subnet_id().unwrap().to_string();
        if key.starts_with("subnet/public/") {
            public.push(id);
        } else if key.starts_with("subnet/private/") {
            private.push(id);
        }
    }
    assert!(!public.is_empty() && !private.is_empty(), "{subnets:?}");
    (vpc, public, private)
}

async fn security_group(aws: &Clients, vpc: &str, name: &str, tags: &[(&str, &str)]) -> String {
    let mut req = aws
        .ec2
        .create_security_group()
        .group_name(name)
        .description("made behind meshstack's back")
        .vpc_id(vpc);
    if !tags.is_empty() {
        req = req.tag_specifications(ec2_tags(ResourceType::SecurityGroup, tags));
    }
    req.send().await.unwrap().group_id().unwrap().to_string()
}

async fn classic_elb(lb: &LbClients, name: &str, subnets: &[String], sg: &str, tag: (&str, &str)) {
    use aws_sdk_elasticloadbalancing::types::{Listener, Tag};
    lb.elb
        .create_load_balancer()
        .load_balancer_name(name)
        .listeners(
            Listener::builder()
                .protocol("TCP")
                .load_balancer_port(80)
                .instance_protocol("TCP")
                .instance_port(30080)
                .build()
                .unwrap(),
        )
        .set_subnets(Some(subnets.to_vec()))
        .security_groups(sg)
        .tags(Tag::builder().key(tag.0).value(tag.1).build().unwrap())
        .send()
        .await
        .unwrap();
}

async fn nlb(lb: &LbClients, name: &str, subnets: &[String], tag: (&str, &str)) -> String {
    use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerTypeEnum, Tag};
    let out = lb
        .elbv2
        .create_load_balancer()
        .name(name)
        .r#type(LoadBalancerTypeEnum::Network)
        .set_subnets(Some(subnets.to_vec()))
        .tags(Tag::builder().key(tag.0).value(tag.1).build())
        .send()
        .await
        .unwrap();
    out.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string()
}

/// An instance whose primary interface goes with it, as Karpenter's do.
async fn instance(aws: &Clients, subnet: &str, tags: &[(&str, &str)]) -> String {
    let mut req = aws
        .ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(subnet)
                .delete_on_termination(true)
                .build(),
        );
    if !tags.is_empty() {
        req = req.tag_specifications(ec2_tags(ResourceType::Instance, tags));
    }
    let out = req.send().await.unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

async fn interface(aws: &Clients, subnet: &str, description: &str) -> String {
    aws.ec2
        .create_network_interface()
        .subnet_id(subnet)
        .description(description)
        .send()
        .await
        .unwrap()
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_string()
}

async fn instance_state(aws: &Clients, id: &str) -> InstanceStateName {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .clone()
}

async fn classic_names(lb: &LbClients) -> BTreeSet<String> {
    let out = lb.elb.describe_load_balancers().send().await.unwrap();
    out.load_balancer_descriptions()
        .iter()
        .map(|d| d.load_balancer_name().unwrap().to_string())
        .collect()
}

async fn v2_arns(lb: &LbClients) -> BTreeSet<String> {
    let out = lb.elbv2.describe_load_balancers().send().await.unwrap();
    out.load_balancers()
        .iter()
        .map(|l| l.load_balancer_arn().unwrap().to_string())
        .collect()
}

async fn group_ids(aws: &Clients, vpc: &str) -> BTreeSet<String> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc))
        .send()
        .await
        .unwrap();
    out.security_groups()
        .iter()
        .map(|g| g.group_id().unwrap().to_string())
        .collect()
}

async fn interface_ids(aws: &Clients, vpc: &str) -> BTreeSet<String> {
    let out = aws
        .ec2
        .describe_network_interfaces()
        .filters(filter("vpc-id", vpc))
        .send()
        .await
        .unwrap();
    out.network_interfaces()
        .iter()
        .map(|n| n.network_interface_id().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn down_sweeps_what_the_cluster_left_and_nothing_of_anyone_elses() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let lb = moto.lb_clients().await;
    let mut ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file(
        "stack.yaml",
        &format!("name: {NAME}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
    );
    let stack = stack.to_str().unwrap();

    let out = ms.run(&["up", "--stack", stack, "--only", AWS_STAGES]);
    assert!(out.status.success(), "{}", describe(&out));
    let (vpc, public, private) = stack_network(&aws).await;

    // What the cluster makes on its own: the in-tree provider's classic ELB and its k8s-elb-*
    // group, the AWS Load Balancer Controller's NLB, a detached interface the VPC CNI left,
    // and two of Karpenter's nodes (current and legacy tags).
    let elb_group = security_group(&aws, &vpc, "k8s-elb-abc123", &[OWNED]).await;
    let elb_name = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    classic_elb(&lb, elb_name, &public, &elb_group, OWNED).await;
    let nlb_arn = nlb(
        &lb,
        "k8s-istioing-istioing-1a2b3c4d5e",
        &public,
        ("elbv2.k8s.aws/cluster", NAME),
    )
    .await;
    let eni = interface(&aws, &private[0], "aws-K8S-i-0123456789abcdef0").await;
    let nodes = [
        instance(
            &aws,
            &private[0],
            &[("karpenter.sh/nodepool", "ecommerce"), OWNED],
        )
        .await,
        instance(
            &aws,
            &private[1 % private.len()],
            &[
                ("karpenter.sh/provisioner-name", "default"),
                ("karpenter.sh/discovery", NAME),
            ],
        )
        .await,
    ];

    // Someone else's: another VPC with a k8s-elb-* group, a load balancer of each kind and an
    // available interface of another cluster's; an untagged instance; another cluster's
    // Karpenter node.
    let other_vpc = aws
        .ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let other_subnet = aws
        .ec2
        .create_subnet()
        .vpc_id(&other_vpc)
        .cidr_block("10.9.1.0/24")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let other_subnets = vec![other_subnet.clone()];
    let other_owned = ("kubernetes.io/cluster/other", "owned");
    let other_group = security_group(&aws, &other_vpc, "k8s-elb-other", &[]).await;
    classic_elb(
        &lb,
        "other-cluster-elb",
        &other_subnets,
        &other_group,
        other_owned,
    )
    .await;
    let other_nlb = nlb(
        &lb,
        "other-cluster-nlb",
        &other_subnets,
        ("elbv2.k8s.aws/cluster", "other"),
    )
    .await;
    let other_eni = interface(&aws, &other_subnet, "aws-K8S-i-0fedcba987654321").await;
    let untagged = instance(&aws, &other_subnet, &[]).await;
    let other_node = instance(
        &aws,
        &other_subnet,
        &[("karpenter.sh/nodepool", "default"), other_owned],
    )
    .await;

    // Karpenter's instance profiles for the cluster (one under its path, one at the root as
    // older releases made them) and look-alikes of another cluster's and another region's.
    let karpenter_tags = |cluster: &str, region: &str| {
        vec![
            (
                format!("kubernetes.io/cluster/{cluster}"),
                "owned".to_string(),
            ),
            ("karpenter.k8s.aws/ec2nodeclass".into(), "ecommerce".into()),
            ("topology.kubernetes.io/region".into(), region.to_string()),
            ("eks:eks-cluster-name".into(), cluster.to_string()),
        ]
    };
    let profiles = [
        (
            format!("{NAME}_1111"),
            "/karpenter/us-east-1/sweep/uid-1/",
            karpenter_tags(NAME, "us-east-1"),
        ),
        (
            format!("{NAME}_2222"),
            "/",
            karpenter_tags(NAME, "us-east-1"),
        ),
    ];
    let foreign_profiles = [
        (
            "other_3333".to_string(),
            "/karpenter/us-east-1/other/uid-3/",
            karpenter_tags("other", "us-east-1"),
        ),
        (
            format!("{NAME}_4444"),
            "/",
            karpenter_tags(NAME, "eu-west-1"),
        ),
    ];
    for (name, path, tags) in profiles.iter().chain(&foreign_profiles) {
        aws.iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path(*path)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| {
                        aws_sdk_iam::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .unwrap()
                    })
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
    }
    aws.iam
        .add_role_to_instance_profile()
        .instance_profile_name(&profiles[0].0)
        .role_name(format!("{NAME}-node"))
        .send()
        .await
        .unwrap();

    // plan --destroy names each thing the sweeps will delete, and nothing of anyone else's.
    let out = ms.run(&["plan", "--destroy", "--stack", stack, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned: Vec<String> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["changes"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            format!(
                "{} {}",
                c["resource"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        format!("classic-load-balancer {elb_name}"),
        format!("load-balancer k8s-istioing-istioing-1a2b3c4d5e ({nlb_arn})"),
        format!("security-group k8s-elb-abc123 ({elb_group})"),
        format!("network-interface aws-K8S-i-0123456789abcdef0 ({eni})"),
        format!("ec2-instance {}", nodes[0]),
        format!("ec2-instance {}", nodes[1]),
        format!("instance-profile {}", profiles[0].0),
        format!("instance-profile {}", profiles[1].0),
    ] {
        assert!(planned.contains(&want), "{want} not in plan:\n{planned:#?}");
    }
    for foreign in [
        "other-cluster-elb",
        &other_nlb,
        &other_group,
        &other_eni,
        &untagged,
        &other_node,
        &foreign_profiles[0].0,
        &foreign_profiles[1].0,
    ] {
        assert!(
            !planned.iter().any(|p| p.contains(foreign)),
            "{foreign} planned for deletion:\n{planned:#?}"
        );
    }

    // Scenario 3: through the fault proxy, the deletes first meet DependencyViolation, as AWS
    // answers while interfaces and load balancers let go; `down` retries them with back-off.
    // And an interface appears in the VPC after the first sweep (when the first subnet is
    // deleted), as interfaces do that let go mid-teardown: it must be swept too.
    let late_subnet = private.last().unwrap().clone();
    let late_endpoint = moto.endpoint();
    let late_eni = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let late = late_eni.clone();
    let hook = Hook(std::sync::Arc::new(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let id = rt.block_on(async {
            let aws = Clients::at(&late_endpoint).await;
            interface(&aws, &late_subnet, "aws-K8S-i-late").await
        });
        *late.lock().unwrap() = id;
    }));
    let proxy = FaultProxy::start(
        &moto.endpoint(),
        Faults {
            on_first: [("ec2:DeleteSubnet".to_string(), hook)].into(),
            dependency_violations: [
                ("ec2:DeleteSecurityGroup".to_string(), 2),
                ("ec2:DeleteNetworkInterface".to_string(), 1),
                ("ec2:DeleteSubnet".to_string(), 1),
                ("ec2:DeleteVpc".to_string(), 2),
            ]
            .into(),
            ..Faults::default()
        },
    );
    ms.endpoint = Some(proxy.endpoint());
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    let out = ms.run(&["down", "--yes", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        proxy.stats().dependency_violations,
        6,
        "{:?}",
        proxy.stats()
    );
    ms.endpoint = Some(moto.endpoint());

    // Nothing of the stack's, nothing of its cluster's.
    assert_eq!(aws.inventory(NAME).await, Default::default());
    assert!(!classic_names(&lb).await.contains(elb_name));
    assert!(!v2_arns(&lb).await.contains(&nlb_arn));
    for node in &nodes {
        assert_eq!(
            instance_state(&aws, node).await,
            InstanceStateName::Terminated,
            "{node}"
        );
    }
    assert_eq!(group_ids(&aws, &vpc).await, BTreeSet::new(), "groups left");
    let late_eni = late_eni.lock().unwrap().clone();
    assert!(late_eni.starts_with("eni-"), "the hook ran: {late_eni:?}");
    assert_eq!(
        interface_ids(&aws, &vpc).await,
        BTreeSet::new(),
        "interfaces left (the late one was {late_eni})"
    );
    let left_profiles: BTreeSet<String> = aws
        .iam
        .list_instance_profiles()
        .send()
        .await
        .unwrap()
        .instance_profiles()
        .iter()
        .map(|p| p.instance_profile_name().to_string())
        .collect();
    for (name, ..) in &profiles {
        assert!(
            !left_profiles.contains(name),
            "{name} left: {left_profiles:?}"
        );
    }
    for (name, ..) in &foreign_profiles {
        assert!(
            left_profiles.contains(name),
            "{name} removed: {left_profiles:?}"
        );
    }

    // Everything of anyone else's.
    assert!(classic_names(&lb).await.contains("other-cluster-elb"));
    assert!(v2_arns(&lb).await.contains(&other_nlb));
    assert!(group_ids(&aws, &other_vpc).await.contains(&other_group));
    assert!(interface_ids(&aws, &other_vpc).await.contains(&other_eni));
    for i in [&untagged, &other_node] {
        assert_eq!(
            instance_state(&aws, i).await,
            InstanceStateName::Running,
            "{i}"
        );
    }

    // A second down finds nothing to sweep and writes nothing.
    moto.start_recording();
    let out = ms.run(&["down", "--yes", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());
}

/// What cannot be deleted ends `down` with exit 1 naming it and why; the rest is still
/// removed, and a `down` after the cause is gone finishes the job.
#[tokio::test(flavor = "multi_thread")]
async fn down_names_what_it_could_not_sweep_and_a_rerun_finishes() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let lb = moto.lb_clients().await;
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file(
        "stack.yaml",
        &format!("name: {NAME}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
    );
    let stack = stack.to_str().unwrap();
    let out = ms.run(&["up", "--stack", stack, "--only", AWS_STAGES]);
    assert!(out.status.success(), "{}", describe(&out));
    let (_, public, private) = stack_network(&aws).await;

    let elb_name = "b2c3d4e5f60718293a4b5c6d7e8f90a1";
    let group = security_group(&aws, &stack_network(&aws).await.0, "k8s-elb-b2c3", &[OWNED]).await;
    classic_elb(&lb, elb_name, &public, &group, OWNED).await;
    let protected = instance(
        &aws,
        &private[0],
        &[("karpenter.sh/nodepool", "ecommerce"), OWNED],
    )
    .await;
    aws.ec2
        .modify_instance_attribute()
        .instance_id(&protected)
        .disable_api_termination(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(true)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let out = ms.run(&["down", "--yes", "--stack", stack]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!("ec2-instance {protected}"))
            && said.contains("OperationNotPermitted"),
        "the protected instance and why are named:\n{}",
        describe(&out)
    );
    // The load balancer went regardless; the instance is still running.
    assert!(!classic_names(&lb).await.contains(elb_name));
    assert_eq!(
        instance_state(&aws, &protected).await,
        InstanceStateName::Running
    );

    aws.ec2
        .modify_instance_attribute()
        .instance_id(&protected)
        .disable_api_termination(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = ms.run(&["down", "--yes", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        instance_state(&aws, &protected).await,
        InstanceStateName::Terminated
    );
    assert_eq!(aws.inventory(NAME).await, Default::default());
}

/// The (non-deleted) VPC endpoints in `vpc`, by id.
async fn endpoint_ids(aws: &Clients, vpc: &str) -> BTreeSet<String> {
    let out = aws
        .ec2
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", vpc))
        .send()
        .await
        .unwrap();
    out.vpc_endpoints()
        .iter()
        .filter(|e| e.vpc_id() == Some(vpc))
        .filter(|e| e.state().map(|s| s.as_str().to_ascii_lowercase()) != Some("deleted".into()))
        .map(|e| e.vpc_endpoint_id().unwrap().to_string())
        .collect()
}

/// What GuardDuty's runtime monitoring adds to a monitored cluster's VPC: an interface
/// endpoint for `guardduty-data` in the given subnets, with a security group of its own, both
/// tagged `GuardDutyManaged=true`. Returns (endpoint, group).
async fn guardduty_endpoint(aws: &Clients, vpc: &str, subnets: &[String]) -> (String, String) {
    let managed = [("GuardDutyManaged", "true")];
    let group = security_group(
        aws,
        vpc,
        &format!("GuardDutyManagedSecurityGroup-{vpc}"),
        &managed,
    )
    .await;
    let out = aws
        .ec2
        .create_vpc_endpoint()
        .vpc_id(vpc)
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
        .service_name("com.amazonaws.us-east-1.guardduty-data")
        .set_subnet_ids(Some(subnets.to_vec()))
        .security_group_ids(&group)
        .tag_specifications(ec2_tags(ResourceType::VpcEndpoint, &managed))
        .send()
        .await
        .unwrap();
    let id = out.vpc_endpoint().unwrap().vpc_endpoint_id().unwrap();
    (id.to_string(), group)
}

/// The planned deletions of `plan --destroy -o json`, as `"<resource> <name>"` -> detail.
fn planned_deletions(out: &std::process::Output) -> BTreeMap<String, String> {
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["changes"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                format!(
                    "{} {}",
                    c["resource"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                ),
                c["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Defect: GuardDuty's runtime monitoring puts a VPC endpoint and its security group in the
/// stack's VPC; AWS refuses to delete the subnets and the VPC while they are there, and `down`
/// retried until its deadline and ended with them remaining. Now `plan --destroy` names them
/// and why, and `down` deletes them (waiting for the endpoint to go) before the subnets; the
/// same in another VPC is left alone.
///
/// moto deletes subnets and VPCs whatever is in them: the fault proxy answers DeleteSubnet and
/// DeleteVpc with `DependencyViolation` while an endpoint (or, for the VPC, a group other than
/// `default`) is still in the stack's VPC, as AWS does.
#[tokio::test(flavor = "multi_thread")]
async fn down_deletes_the_vpc_endpoints_others_put_in_the_stacks_vpc_and_nothing_elsewhere() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let mut ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file(
        "stack.yaml",
        &format!("name: {NAME}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
    );
    let stack = stack.to_str().unwrap();
    let out = ms.run(&["up", "--stack", stack, "--only", AWS_STAGES]);
    assert!(out.status.success(), "{}", describe(&out));
    let (vpc, _, private) = stack_network(&aws).await;
    let (endpoint, group) = guardduty_endpoint(&aws, &vpc, &private).await;

    // The same in a VPC that is not the stack's.
    let other_vpc = aws
        .ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let other_subnet = aws
        .ec2
        .create_subnet()
        .vpc_id(&other_vpc)
        .cidr_block("10.9.1.0/24")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let (other_endpoint, other_group) = guardduty_endpoint(&aws, &other_vpc, &[other_subnet]).await;

    let out = ms.run(&["plan", "--destroy", "--stack", stack, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let planned = planned_deletions(&out);
    for want in [
        format!("vpc-endpoint com.amazonaws.us-east-1.guardduty-data ({endpoint})"),
        format!("security-group GuardDutyManagedSecurityGroup-{vpc} ({group})"),
    ] {
        let why = planned
            .get(&want)
            .unwrap_or_else(|| panic!("{want} not in plan:\n{planned:#?}"));
        assert!(
            why.contains("not meshstack's") && why.contains("the VPC cannot be deleted"),
            "{want}: why is {why:?}"
        );
    }
    for foreign in [&other_endpoint, &other_group] {
        assert!(
            !planned.keys().any(|p| p.contains(foreign.as_str())),
            "{foreign} planned for deletion:\n{planned:#?}"
        );
    }

    let guard_endpoint = moto.endpoint();
    let live = move |groups_too: bool| {
        let (endpoint, vpc) = (guard_endpoint.clone(), vpc.clone());
        Guard(std::sync::Arc::new(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let aws = Clients::at(&endpoint).await;
                let groups = group_ids(&aws, &vpc).await;
                let default = aws
                    .ec2
                    .describe_security_groups()
                    .filters(filter("vpc-id", &vpc))
                    .filters(filter("group-name", "default"))
                    .send()
                    .await
                    .unwrap();
                let defaults = default.security_groups().len();
                !endpoint_ids(&aws, &vpc).await.is_empty()
                    || (groups_too && groups.len() > defaults)
            })
        }))
    };
    let proxy = FaultProxy::start(
        &moto.endpoint(),
        Faults {
            dependency_while: [
                ("ec2:DeleteSubnet".to_string(), live(false)),
                ("ec2:DeleteVpc".to_string(), live(true)),
            ]
            .into(),
            ..Faults::default()
        },
    );
    ms.endpoint = Some(proxy.endpoint());
    // The dependency deadline at 6 s: before the fix `down` gave up on each subnet after it.
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "100".into()));
    let out = ms.run(&["down", "--yes", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        proxy.stats().dependency_violations,
        0,
        "the endpoint and its group went before the subnets and the VPC: {:?}",
        proxy.stats()
    );
    ms.endpoint = Some(moto.endpoint());

    assert_eq!(aws.inventory(NAME).await, Default::default());
    assert_eq!(
        endpoint_ids(&aws, &other_vpc).await,
        BTreeSet::from([other_endpoint.clone()])
    );
    assert!(group_ids(&aws, &other_vpc).await.contains(&other_group));
    let gone = aws
        .ec2
        .describe_security_groups()
        .group_ids(&group)
        .send()
        .await;
    assert!(gone.is_err(), "{group} is still there: {gone:?}");
}

async fn target_group(lb: &LbClients, vpc: &str, name: &str, tags: &[(&str, &str)]) -> String {
    use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, Tag, TargetTypeEnum};
    let out = lb
        .elbv2
        .create_target_group()
        .name(name)
        .protocol(ProtocolEnum::Tcp)
        .port(30080)
        .vpc_id(vpc)
        .target_type(TargetTypeEnum::Instance)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    out.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string()
}

async fn target_group_arns(lb: &LbClients) -> BTreeSet<String> {
    let out = lb.elbv2.describe_target_groups().send().await.unwrap();
    out.target_groups()
        .iter()
        .map(|g| g.target_group_arn().unwrap().to_string())
        .collect()
}

/// Defect: when the cluster's API cannot delete the ingress gateway's Service, the sweep
/// deletes its NLB directly, and the NLB's target groups were left behind (the in-tree
/// controller deletes them after the load balancer; nothing did). Now the sweep finds them by
/// the cluster's tags — the in-tree controller's `kubernetes.io/cluster/<cluster>=owned` and
/// `kubernetes.io/service-name`, the AWS Load Balancer Controller's `elbv2.k8s.aws/cluster` —
/// and deletes them after the load balancers; another cluster's and untagged ones stay.
#[tokio::test(flavor = "multi_thread")]
async fn down_deletes_the_target_groups_of_the_clusters_load_balancers() {
    use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
    let moto = Moto::start();
    let aws = moto.clients().await;
    let lb = moto.lb_clients().await;
    let ms = Meshstack::with_moto(&moto);
    let stack = ms.stack_file(
        "stack.yaml",
        &format!("name: {NAME}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
    );
    let stack = stack.to_str().unwrap();
    let out = ms.run(&["up", "--stack", stack, "--only", AWS_STAGES]);
    assert!(out.status.success(), "{}", describe(&out));
    let (vpc, public, _) = stack_network(&aws).await;

    // The gateway's NLB as the in-tree controller makes it: load balancer, target group and
    // listener, all tagged alike.
    let service = (
        "kubernetes.io/service-name",
        "istio-system/istio-ingressgateway",
    );
    let nlb_arn = nlb(&lb, "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5", &public, OWNED).await;
    let in_tree = target_group(
        &lb,
        &vpc,
        "k8s-istiosys-istioing-0a1b2c3d4e",
        &[OWNED, service],
    )
    .await;
    lb.elbv2
        .create_listener()
        .load_balancer_arn(&nlb_arn)
        .protocol(ProtocolEnum::Tcp)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&in_tree)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // One the AWS Load Balancer Controller left, and look-alikes that are not the cluster's.
    let controllers = target_group(
        &lb,
        &vpc,
        "k8s-istiosys-istioing-5f6e7d8c9b",
        &[
            ("elbv2.k8s.aws/cluster", NAME),
            ("service.k8s.aws/stack", "istio-system/istio-ingressgateway"),
        ],
    )
    .await;
    let other = target_group(
        &lb,
        &vpc,
        "k8s-other-web-1234567890",
        &[("kubernetes.io/cluster/other", "owned"), service],
    )
    .await;
    let shared = target_group(
        &lb,
        &vpc,
        "shared-web",
        &[("kubernetes.io/cluster/sweep", "shared")],
    )
    .await;
    let untagged = target_group(&lb, &vpc, "someones-web", &[]).await;

    let out = ms.run(&["plan", "--destroy", "--stack", stack, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let planned = planned_deletions(&out);
    for want in [
        format!("target-group k8s-istiosys-istioing-0a1b2c3d4e ({in_tree})"),
        format!("target-group k8s-istiosys-istioing-5f6e7d8c9b ({controllers})"),
    ] {
        assert!(
            planned.contains_key(&want),
            "{want} not in plan:\n{planned:#?}"
        );
    }
    for foreign in [&other, &shared, &untagged] {
        assert!(
            !planned.keys().any(|p| p.contains(foreign.as_str())),
            "{foreign} planned for deletion:\n{planned:#?}"
        );
    }

    let out = ms.run(&["down", "--yes", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!v2_arns(&lb).await.contains(&nlb_arn));
    assert_eq!(
        target_group_arns(&lb).await,
        BTreeSet::from([other, shared, untagged]),
        "the cluster's target groups are gone, and only those"
    );
    assert_eq!(aws.inventory(NAME).await, Default::default());
}
