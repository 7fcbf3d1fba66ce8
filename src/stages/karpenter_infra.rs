//! Stage `karpenter-infra`: what Karpenter needs from AWS besides IAM — the SQS interruption
//! queue (with a policy that lets EventBridge deliver to it and refuses plain HTTP), the four
//! EventBridge rules that feed it (spot interruption, rebalance, instance state change,
//! scheduled health events), and the `karpenter.sh/discovery` tag on the cluster security
//! group so Karpenter's nodes get it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;

use super::{cluster, outcome, Action, Change, Context, Plan, Stage, StageError};
use crate::aws::{resource_tags, same_json, sdk_err, tags, Answer, AwsClients, STACK_TAG};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::{names, policies, versions};

pub const ID: StageId = "karpenter-infra";
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";
const TARGET_ID: &str = "karpenter-interruption-queue";
/// Karpenter reads messages well within this; older ones are stale.
const RETENTION_SECONDS: &str = "300";

pub struct KarpenterInfra;

pub fn queue_name(stack: &Stack) -> String {
    names::interruption_queue(stack)
}

/// The EventBridge rules: (name suffix, event pattern).
pub fn rules(stack: &Stack) -> Vec<(String, serde_json::Value)> {
    let mut all = every_rule(stack);
    if !versions::capacity_reservation_interruptions(stack.karpenter.version) {
        all.retain(|(name, _)| *name != names::interruption_rule(stack, CAPACITY_RESERVATION));
    }
    all
}

/// The suffix of the rule Karpenter 1.11 added: capacity-reservation interruption warnings
/// (upstream's CloudFormation `CapacityReservationInterruptionRule`, from 1.11).
const CAPACITY_RESERVATION: &str = "capacity-reservation";

/// Every rule any Karpenter release gets: what `down` removes, whichever release the stack
/// names now (a stack moved from 1.14 to 1.10 still has the fifth rule until then).
pub fn every_rule(stack: &Stack) -> Vec<(String, serde_json::Value)> {
    let rule = |suffix: &str, source: &str, detail: &str| {
        (
            names::interruption_rule(stack, suffix),
            serde_json::json!({"source": [source], "detail-type": [detail]}),
        )
    };
    vec![
        rule(
            "spot-interruption",
            "aws.ec2",
            "EC2 Spot Instance Interruption Warning",
        ),
        rule(
            "rebalance",
            "aws.ec2",
            "EC2 Instance Rebalance Recommendation",
        ),
        rule(
            "instance-state",
            "aws.ec2",
            "EC2 Instance State-change Notification",
        ),
        rule("scheduled-change", "aws.health", "AWS Health Event"),
        rule(
            CAPACITY_RESERVATION,
            "aws.ec2",
            "EC2 Capacity Reservation Instance Interruption Warning",
        ),
    ]
}

pub fn queue_arn(partition: &str, region: &str, account: &str, stack: &Stack) -> String {
    names::interruption_queue_arn(stack, partition, region, account)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeenQueue {
    pub url: String,
    pub ours: bool,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeenRule {
    pub ours: bool,
    pub pattern: String,
    /// Target ARNs.
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Seen {
    pub queue: Option<SeenQueue>,
    pub rules: BTreeMap<String, SeenRule>,
    /// The cluster security group and whether it carries the discovery tag; `None` when there
    /// is no cluster (yet) or it reports no security group.
    pub security_group: Option<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateQueue,
    SetQueueAttributes,
    PutRule(String),
    PutTarget(String),
    TagSecurityGroup(String),
}

fn wanted_attributes(policy: &serde_json::Value) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "MessageRetentionPeriod".to_string(),
            RETENTION_SECONDS.to_string(),
        ),
        ("SqsManagedSseEnabled".to_string(), "true".to_string()),
        ("Policy".to_string(), policy.to_string()),
    ])
}

/// The pure diff.
pub fn plan(stack: &Stack, queue_arn: &str, seen: &Seen) -> Plan<Step> {
    let mut steps = Plan::new();
    let policy = policies::interruption_queue(queue_arn);
    match &seen.queue {
        None => steps.push(Step::CreateQueue),
        Some(q) if !q.ours => steps.conflict(
            "karpenter-infra",
            queue_name(stack),
            format!(
                "SQS queue exists without the tag {STACK_TAG}={}",
                stack.name
            ),
        ),
        Some(q) => {
            let differs = wanted_attributes(&policy).iter().any(|(k, want)| {
                match (k.as_str(), q.attributes.get(k)) {
                    ("Policy", Some(have)) => !same_json(have, &policy),
                    (_, Some(have)) => have != want,
                    (_, None) => true,
                }
            });
            if differs {
                steps.push(Step::SetQueueAttributes);
            }
        }
    }
    for (name, pattern) in rules(stack) {
        match seen.rules.get(&name) {
            Some(r) if !r.ours => {
                steps.conflict(
                    "karpenter-infra",
                    name,
                    format!("EventBridge rule exists without the tag {STACK_TAG}"),
                );
                continue;
            }
            Some(r) if same_json(&r.pattern, &pattern) => {}
            _ => steps.push(Step::PutRule(name.clone())),
        }
        if !seen
            .rules
            .get(&name)
            .is_some_and(|r| r.targets.iter().any(|t| t == queue_arn))
        {
            steps.push(Step::PutTarget(name));
        }
    }
    if let Some((sg, false)) = &seen.security_group {
        steps.push(Step::TagSecurityGroup(sg.clone()));
    }
    steps
}

impl Step {
    fn change(&self, stack: &Stack) -> Change {
        match self {
            Step::CreateQueue => Change::new(Action::Create, "sqs-queue", queue_name(stack)),
            Step::SetQueueAttributes => Change::new(Action::Update, "sqs-queue", queue_name(stack))
                .detail("policy, retention, encryption"),
            Step::PutRule(name) => Change::new(Action::Create, "eventbridge-rule", name.clone()),
            Step::PutTarget(name) => {
                Change::new(Action::Create, "eventbridge-target", name.clone())
                    .detail(format!("-> {}", queue_name(stack)))
            }
            Step::TagSecurityGroup(sg) => Change::new(Action::Update, "security-group", sg.clone())
                .detail(format!("tag {DISCOVERY_TAG}={}", stack.cluster_name())),
        }
    }
}

async fn find_queue(aws: &AwsClients, stack: &Stack) -> Result<Option<SeenQueue>, StageError> {
    let req = aws.sqs.get_queue_url().queue_name(queue_name(stack));
    let url = req.send().await.lookup("sqs:GetQueueUrl")?;
    let url = url.and_then(|o| o.queue_url().map(str::to_string));
    let Some(url) = url else { return Ok(None) };
    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(sdk_err("sqs:GetQueueAttributes"))?;
    let listed = aws
        .sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .map_err(sdk_err("sqs:ListQueueTags"))?;
    Ok(Some(SeenQueue {
        ours: tags::of_stack(stack, listed.tags().into_iter().flatten()),
        attributes: attrs
            .attributes()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        url,
    }))
}

async fn find_rule(
    aws: &AwsClients,
    stack: &Stack,
    name: &str,
) -> Result<Option<SeenRule>, StageError> {
    let rule = aws
        .events
        .describe_rule()
        .name(name)
        .send()
        .await
        .lookup("events:DescribeRule")?;
    let Some(rule) = rule else { return Ok(None) };
    let arn = rule.arn().unwrap_or_default();
    let listed = aws
        .events
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(sdk_err("events:ListTagsForResource"))?;
    let targets = aws
        .events
        .list_targets_by_rule()
        .rule(name)
        .send()
        .await
        .map_err(sdk_err("events:ListTargetsByRule"))?;
    Ok(Some(SeenRule {
        ours: tags::of_stack(stack, listed.tags()),
        pattern: rule.event_pattern().unwrap_or_default().to_string(),
        targets: targets
            .targets()
            .iter()
            .map(|t| t.arn().to_string())
            .collect(),
    }))
}

async fn observe(cx: &Context) -> Result<Seen, StageError> {
    let Some(aws) = &cx.aws else {
        return Ok(Seen::default());
    };
    let stack = &cx.stack;
    let mut seen = Seen {
        queue: find_queue(aws, stack).await?,
        ..Seen::default()
    };
    for (name, _) in every_rule(stack) {
        if let Some(rule) = find_rule(aws, stack, &name).await? {
            seen.rules.insert(name, rule);
        }
    }
    // The security group exists only once the cluster does.
    if let Ok(c) = cluster::facts(cx).await {
        if let Some(sg) = c.security_group_id {
            let out = aws
                .ec2
                .describe_security_groups()
                .group_ids(&sg)
                .send()
                .await
                .map_err(sdk_err("ec2:DescribeSecurityGroups"))?;
            let tagged = out
                .security_groups()
                .iter()
                .any(|g| tags::has(g.tags(), DISCOVERY_TAG, stack.cluster_name()));
            seen.security_group = Some((sg, tagged));
        }
    }
    Ok(seen)
}

fn this_queue_arn(cx: &Context) -> String {
    let region = cx.aws.as_ref().map_or("us-east-1", |a| a.region.as_str());
    queue_arn(cx.partition(), region, cx.account(), &cx.stack)
}

#[async_trait]
impl Stage for KarpenterInfra {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[cluster::ID]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe(cx).await?;
        Ok(plan(&cx.stack, &this_queue_arn(cx), &seen).changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe(cx).await?;
        let mut changes: Vec<Change> = seen
            .rules
            .iter()
            .filter(|(_, r)| r.ours)
            .map(|(name, _)| Change::new(Action::Delete, "eventbridge-rule", name.clone()))
            .collect();
        if seen.queue.as_ref().is_some_and(|q| q.ours) {
            changes.push(Change::new(
                Action::Delete,
                "sqs-queue",
                queue_name(&cx.stack),
            ));
        }
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let seen = observe(cx).await?;
        let arn = this_queue_arn(cx);
        let steps = plan(stack, &arn, &seen).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(stack)).collect();
        let policy = policies::interruption_queue(&arn);
        let patterns: BTreeMap<String, serde_json::Value> = rules(stack).into_iter().collect();
        let mut queue_url = seen.queue.as_ref().map(|q| q.url.clone());
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            match step {
                Step::CreateQueue => {
                    let key = "queue";
                    cx.begin(ID, key)?;
                    let mut req = aws.sqs.create_queue().queue_name(queue_name(stack));
                    for (k, v) in wanted_attributes(&policy) {
                        req = req.attributes(QueueAttributeName::from(k.as_str()), v);
                    }
                    for (k, v) in resource_tags(stack, key, &queue_name(stack)) {
                        req = req.tags(k, v);
                    }
                    let out = req.send().await.map_err(sdk_err("sqs:CreateQueue"))?;
                    let url = out.queue_url().unwrap_or_default().to_string();
                    cx.complete(ID, key, &url)?;
                    queue_url = Some(url);
                }
                Step::SetQueueAttributes => {
                    let mut req = aws
                        .sqs
                        .set_queue_attributes()
                        .queue_url(queue_url.clone().unwrap_or_default());
                    for (k, v) in wanted_attributes(&policy) {
                        req = req.attributes(QueueAttributeName::from(k.as_str()), v);
                    }
                    req.send()
                        .await
                        .map_err(sdk_err("sqs:SetQueueAttributes"))?;
                }
                Step::PutRule(name) => {
                    let tags = tags::eventbridge(stack, &format!("rule/{name}"), name);
                    aws.events
                        .put_rule()
                        .name(name)
                        .event_pattern(patterns[name].to_string())
                        .description(format!(
                            "meshstack {}: Karpenter interruption handling",
                            stack.name
                        ))
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .map_err(sdk_err("events:PutRule"))?;
                }
                Step::PutTarget(name) => {
                    let target = aws_sdk_eventbridge::types::Target::builder()
                        .id(TARGET_ID)
                        .arn(&arn)
                        .build()
                        .expect("id and arn set");
                    let out = aws
                        .events
                        .put_targets()
                        .rule(name)
                        .targets(target)
                        .send()
                        .await
                        .map_err(sdk_err("events:PutTargets"))?;
                    if out.failed_entry_count() > 0 {
                        return Err(StageError::Conflict(format!(
                            "EventBridge refused target for rule {name}: {:?}",
                            out.failed_entries()
                        )));
                    }
                }
                Step::TagSecurityGroup(sg) => {
                    aws.ec2
                        .create_tags()
                        .resources(sg)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key(DISCOVERY_TAG)
                                .value(stack.cluster_name())
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(sdk_err("ec2:CreateTags"))?;
                }
            }
        }
        if seen.security_group.is_none() {
            h.warn("the cluster reports no cluster security group; Karpenter's EC2NodeClass will find none by the discovery tag");
        }
        cx.set_output(ID, "queue_name", queue_name(stack).into())?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let mut deleted = 0;
        for (name, _) in every_rule(stack) {
            let Some(rule) = find_rule(aws, stack, &name).await? else {
                continue;
            };
            if !rule.ours {
                h.warn(format!(
                    "EventBridge rule {name} is not tagged for this stack; left alone"
                ));
                continue;
            }
            h.step(format!("deleting EventBridge rule {name}"));
            if !rule.targets.is_empty() {
                let ids = aws
                    .events
                    .list_targets_by_rule()
                    .rule(&name)
                    .send()
                    .await
                    .map_err(sdk_err("events:ListTargetsByRule"))?;
                let ids: Vec<String> = ids.targets().iter().map(|t| t.id().to_string()).collect();
                let req = aws.events.remove_targets().rule(&name).set_ids(Some(ids));
                req.send().await.ack("events:RemoveTargets")?;
            }
            let req = aws.events.delete_rule().name(&name);
            req.send().await.gone("events:DeleteRule")?;
            deleted += 1;
        }
        if let Some(q) = find_queue(aws, stack).await? {
            if q.ours {
                h.step(format!("deleting SQS queue {}", queue_name(stack)));
                let req = aws.sqs.delete_queue().queue_url(&q.url);
                req.send().await.gone("sqs:DeleteQueue")?;
                deleted += 1;
            } else {
                h.warn(format!(
                    "SQS queue {} is not tagged for this stack; left alone",
                    queue_name(stack)
                ));
            }
        }
        Ok(super::deleted(deleted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:sqs:us-east-1:1:demo-karpenter";

    fn converged(stack: &Stack) -> Seen {
        Seen {
            queue: Some(SeenQueue {
                url: "u".into(),
                ours: true,
                attributes: wanted_attributes(&policies::interruption_queue(ARN)),
            }),
            rules: rules(stack)
                .into_iter()
                .map(|(n, p)| {
                    (
                        n,
                        SeenRule {
                            ours: true,
                            pattern: p.to_string(),
                            targets: vec![ARN.into()],
                        },
                    )
                })
                .collect(),
            security_group: Some(("sg-1".into(), true)),
        }
    }

    #[test]
    fn plans() {
        let s = Stack::parse("name: demo\n", "t.yaml").unwrap();
        let empty = plan(&s, ARN, &Seen::default());
        assert_eq!(
            empty
                .iter()
                .filter(|s| matches!(s, Step::PutRule(_)))
                .count(),
            5
        );
        assert_eq!(
            empty
                .iter()
                .filter(|s| matches!(s, Step::PutTarget(_)))
                .count(),
            5
        );
        assert_eq!(empty[0], Step::CreateQueue);

        assert_eq!(plan(&s, ARN, &converged(&s)), vec![]);

        let mut untagged = converged(&s);
        untagged.security_group = Some(("sg-1".into(), false));
        assert_eq!(
            plan(&s, ARN, &untagged),
            vec![Step::TagSecurityGroup("sg-1".into())]
        );

        let mut drifted = converged(&s);
        drifted
            .queue
            .as_mut()
            .unwrap()
            .attributes
            .insert("MessageRetentionPeriod".into(), "60".into());
        let first = rules(&s)[0].0.clone();
        drifted.rules.get_mut(&first).unwrap().targets.clear();
        assert_eq!(
            plan(&s, ARN, &drifted),
            vec![Step::SetQueueAttributes, Step::PutTarget(first)]
        );
    }

    #[test]
    fn karpenter_1_11_and_later_get_the_capacity_reservation_rule() {
        let stack = |karpenter: &str, k8s: &str| {
            Stack::parse(
                &format!(
                    "name: x\nkubernetes_version: '{k8s}'\nkarpenter: {{version: {karpenter}}}\n"
                ),
                "t.yaml",
            )
            .unwrap()
        };
        let details = |s: &Stack| -> Vec<String> {
            rules(s)
                .iter()
                .map(|(_, p)| p["detail-type"][0].as_str().unwrap().to_string())
                .collect()
        };
        let new = stack("1.14.1", "1.36");
        assert_eq!(rules(&new).len(), 5);
        assert!(details(&new)
            .contains(&"EC2 Capacity Reservation Instance Interruption Warning".to_string()));
        assert_eq!(rules(&stack("1.11.0", "1.34")).len(), 5);
        let old = stack("1.10.2", "1.34");
        assert_eq!(rules(&old).len(), 4);
        // `down` removes all five whatever the release says now.
        assert_eq!(every_rule(&old).len(), 5);
    }

    #[test]
    fn rule_names_fit_eventbridge_limits() {
        let s = Stack::parse("name: abcdefghijklmnopqrstuvwx\n", "t.yaml").unwrap();
        for (name, _) in every_rule(&s) {
            assert!(name.len() <= 64, "{name}");
        }
        assert!(queue_name(&s).len() <= 80);
    }
}
