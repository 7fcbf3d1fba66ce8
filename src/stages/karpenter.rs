//! Stage `karpenter`: lets the nodes Karpenter launches join the cluster (a node-role entry in
//! the `aws-auth` ConfigMap), installs Karpenter as helm release `karpenter` in namespace
//! `karpenter` (chart `oci://public.ecr.aws/karpenter/karpenter` at the stack's
//! `karpenter.version`, values `karpenter/values.yaml`), then, once the chart's CRDs are
//! established, the ecommerce NodePool and EC2NodeClass — or, for a Karpenter before 0.33, the
//! v1alpha5 Provisioner and AWSNodeTemplate. Which manifests, and whether the stack's
//! Karpenter/Kubernetes pair can work at all, is decided by stack validation ([`crate::versions`]).
//!
//! # aws-auth
//! `aws-auth` (namespace `kube-system`) maps IAM roles to Kubernetes users; a node whose role
//! is not mapped cannot register. Its `data.mapRoles` is one YAML string holding every
//! mapping, some written by EKS, so server-side apply of that key would replace the others:
//! the stage reads the ConfigMap, adds its entry to the parsed list only if the role is not
//! mapped yet, and writes the whole object back with the `resourceVersion` it read (a
//! concurrent writer makes the write fail with a conflict, and the stage reads again).
//!
//! Karpenter's nodes use the same role as the managed node group (`<stack>-node`, from the
//! `iam` stage), which EKS may already have mapped for the node group. So `down` must not
//! remove an entry meshstack did not add: the roles meshstack added are listed in the
//! ConfigMap's [`MAPPED_ROLES_ANNOTATION`], and only those are ever removed. The cluster holds
//! that record, not the journal, so it survives a lost state directory.
//!
//! EKS access entries (an `EC2_LINUX` entry for the node role) are the newer way to let nodes
//! join, and the cluster is created with `API_AND_CONFIG_MAP`, in which EKS itself creates an
//! access entry for the managed node group's role, which Karpenter's nodes share. meshstack
//! still maps the role in aws-auth because that path works in every authentication mode that
//! has a ConfigMap and can be tested here; moto (the AWS stand-in of the tests) does not
//! implement the access-entry API.
//!
//! # Teardown
//! `down` deletes the NodePool and node class first and waits until they, and the nodes
//! labelled with the pool, are gone: Karpenter drains and terminates the instances it launched
//! and removes its finalizers, which it can only do while its controller still runs. Then the
//! chart is uninstalled, then the aws-auth entry removed. Instances left behind anyway (the
//! cluster's API gone, a controller that died) are terminated by the `cluster` stage's sweep.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_yaml::{Mapping, Value as Yaml};

use super::kubernetes::{self, objects};
use super::{karpenter_infra, nodegroup, outcome, Action, Change, Context, Stage, StageError};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ApplyError, ObjectRef, Wait};
use crate::k8s::helm::Release;
use crate::names::Role;
use crate::render::RenderedFile;
use crate::versions::KarpenterApi;

pub const ID: StageId = "karpenter";
pub const RELEASE: &str = "karpenter";
/// Where the controller runs: its service account `karpenter/karpenter` is the one the
/// `cluster` stage's IRSA trust names ([`crate::names::KARPENTER_SERVICE_ACCOUNT`]).
pub const NAMESPACE: &str = crate::names::namespace::KARPENTER;
const VALUES: &str = "karpenter/values.yaml";

/// The ConfigMap that maps IAM roles to Kubernetes users.
pub const AWS_AUTH_NAMESPACE: &str = crate::names::namespace::KUBE_SYSTEM;
pub const AWS_AUTH_NAME: &str = "aws-auth";
/// Annotation on aws-auth listing (comma-separated) the role ARNs meshstack added to
/// `mapRoles`; `down` removes only those.
pub const MAPPED_ROLES_ANNOTATION: &str = "meshstack.io/mapped-roles";
/// What a node's role is mapped to: EKS's own convention for worker nodes.
const NODE_USERNAME: &str = "system:node:{{EC2PrivateDNSName}}";
const NODE_GROUPS: [&str; 2] = ["system:bootstrappers", "system:nodes"];

pub struct Karpenter;

/// The manifests and CRDs of one Karpenter API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifests {
    /// Rendered files, in apply order (the node class before the pool that names it).
    pub paths: &'static [&'static str],
    /// The CRDs (installed by the chart) that must be Established before the files apply.
    pub crds: &'static [&'static str],
}

/// The manifests for `api`.
///
/// # Errors
/// [`StageError::Conflict`] for `v1beta1`, which meshstack has no manifests for (and which
/// stack validation already refuses).
pub fn manifests(api: KarpenterApi) -> Result<Manifests, StageError> {
    match api {
        KarpenterApi::V1 => Ok(Manifests {
            paths: &["karpenter/ec2nodeclass.yaml", "karpenter/nodepool.yaml"],
            crds: &["nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"],
        }),
        KarpenterApi::V1Alpha5 => Ok(Manifests {
            paths: &["karpenter/provisioner.yaml"],
            crds: &[
                "provisioners.karpenter.sh",
                "awsnodetemplates.karpenter.k8s.aws",
            ],
        }),
        KarpenterApi::V1Beta1 => Err(StageError::Conflict(
            "karpenter.version: releases 0.33 to 0.37 serve only the v1beta1 API, which \
             meshstack has no manifests for; use 1.0 or newer"
                .into(),
        )),
    }
}

/// The helm release, with the rendered values.
pub fn release(stack: &Stack, files: &[RenderedFile]) -> Result<Release, StageError> {
    Ok(Release {
        name: RELEASE.into(),
        namespace: NAMESPACE.into(),
        chart: stack.chart(crate::charts::name::KARPENTER),
        values: kubernetes::file(files, VALUES)?.to_string(),
        timeout: Duration::from_secs(10 * 60),
        // The CRDs come from the `karpenter-crd` release, which upgrades them with the
        // controller; helm never upgrades a chart's `crds/`.
        skip_crds: true,
    })
}

/// The release of Karpenter's CRD chart, installed before the controller's so that a change
/// of `karpenter.version` upgrades the CRDs too (Karpenter's upgrade guide recommends it).
pub const CRD_RELEASE: &str = "karpenter-crd";

/// The API groups of Karpenter's CRDs.
const CRD_GROUPS: [&str; 2] = ["karpenter.sh", "karpenter.k8s.aws"];

/// The `karpenter-crd` release: the chart's defaults, no values.
pub fn crd_release(stack: &Stack) -> Release {
    Release {
        name: CRD_RELEASE.into(),
        namespace: NAMESPACE.into(),
        chart: stack.chart(crate::charts::name::KARPENTER_CRD),
        values: "{}\n".into(),
        timeout: Duration::from_secs(5 * 60),
        skip_crds: false,
    }
}

/// The ARN of the role Karpenter's nodes run as (the `iam` stage's node role).
pub fn node_role_arn(cx: &Context) -> String {
    Role::Node.arn(&cx.stack, cx.partition(), cx.account())
}

/// The aws-auth ConfigMap with `arn` mapped as a node role, or `None` when the role is mapped
/// already (by meshstack or anyone else: then nothing is written and nothing recorded). A
/// missing ConfigMap is created. Other mappings, keys and annotations are kept.
///
/// # Errors
/// [`StageError::Conflict`] when `data.mapRoles` is not a YAML list of mappings.
pub fn map_node_role(live: Option<&ConfigMap>, arn: &str) -> Result<Option<ConfigMap>, StageError> {
    let mut roles = map_roles(live)?;
    if roles.iter().any(|r| role_arn(r) == Some(arn)) {
        return Ok(None);
    }
    let mut entry = Mapping::new();
    entry.insert("rolearn".into(), arn.into());
    entry.insert("username".into(), NODE_USERNAME.into());
    entry.insert(
        "groups".into(),
        Yaml::Sequence(NODE_GROUPS.iter().map(|g| (*g).into()).collect()),
    );
    roles.push(Yaml::Mapping(entry));
    let mut cm = live.cloned().unwrap_or_else(|| ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(AWS_AUTH_NAME.into()),
            namespace: Some(AWS_AUTH_NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut owned = mapped_by_meshstack(&cm);
    if !owned.iter().any(|a| a == arn) {
        owned.push(arn.to_string());
    }
    set_mapped(&mut cm, &owned);
    set_map_roles(&mut cm, &roles)?;
    Ok(Some(cm))
}

/// The aws-auth ConfigMap without the mapping meshstack added for `arn`, or `None` when
/// meshstack added none (a mapping someone else made is left alone, as is a missing ConfigMap).
///
/// # Errors
/// [`StageError::Conflict`] when `data.mapRoles` is not a YAML list of mappings.
pub fn unmap_node_role(
    live: Option<&ConfigMap>,
    arn: &str,
) -> Result<Option<ConfigMap>, StageError> {
    let Some(live) = live else { return Ok(None) };
    let mut owned = mapped_by_meshstack(live);
    if !owned.iter().any(|a| a == arn) {
        return Ok(None);
    }
    owned.retain(|a| a != arn);
    let mut roles = map_roles(Some(live))?;
    roles.retain(|r| role_arn(r) != Some(arn));
    let mut cm = live.clone();
    set_mapped(&mut cm, &owned);
    set_map_roles(&mut cm, &roles)?;
    Ok(Some(cm))
}

fn role_arn(entry: &Yaml) -> Option<&str> {
    entry.get("rolearn").and_then(Yaml::as_str)
}

/// The parsed `data.mapRoles` (empty when there is none).
fn map_roles(cm: Option<&ConfigMap>) -> Result<Vec<Yaml>, StageError> {
    let text = cm
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("mapRoles"))
        .map(String::as_str)
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: String| {
        StageError::Conflict(format!(
            "ConfigMap {AWS_AUTH_NAMESPACE}/{AWS_AUTH_NAME}: data.mapRoles is not a YAML list \
             of role mappings ({why}); repair it with `kubectl -n {AWS_AUTH_NAMESPACE} edit \
             configmap {AWS_AUTH_NAME}`"
        ))
    };
    let roles: Vec<Yaml> = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
    match roles.iter().position(|r| !r.is_mapping()) {
        Some(i) => Err(bad(format!("entry {} is not a mapping", i + 1))),
        None => Ok(roles),
    }
}

fn set_map_roles(cm: &mut ConfigMap, roles: &[Yaml]) -> Result<(), StageError> {
    let text = serde_yaml::to_string(roles)
        .map_err(|e| StageError::Conflict(format!("cannot write aws-auth mapRoles: {e}")))?;
    cm.data
        .get_or_insert_with(Default::default)
        .insert("mapRoles".into(), text);
    Ok(())
}

/// The role ARNs meshstack recorded as its own in aws-auth.
fn mapped_by_meshstack(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAPPED_ROLES_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_mapped(cm: &mut ConfigMap, owned: &[String]) {
    let annotations = cm.metadata.annotations.get_or_insert_with(Default::default);
    if owned.is_empty() {
        annotations.remove(MAPPED_ROLES_ANNOTATION);
    } else {
        annotations.insert(MAPPED_ROLES_ANNOTATION.into(), owned.join(","));
    }
}

fn aws_auth_ref() -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some(AWS_AUTH_NAMESPACE.into()),
        name: AWS_AUTH_NAME.into(),
    }
}

/// Read aws-auth, compute the new version with `change`, write it (create or replace at the
/// `resourceVersion` read); on a conflict with a concurrent writer, read and try again.
/// Whether a write was made.
async fn update_aws_auth(
    client: &kube::Client,
    arn: &str,
    change: fn(Option<&ConfigMap>, &str) -> Result<Option<ConfigMap>, StageError>,
) -> Result<bool, StageError> {
    const ATTEMPTS: usize = 5;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), AWS_AUTH_NAMESPACE);
    let object = aws_auth_ref();
    let fail = |action: &'static str, source: kube::Error| {
        StageError::K8s(ApplyError::Api {
            action,
            object: object.clone(),
            source: Box::new(source),
        })
    };
    let params = PostParams {
        field_manager: Some(apply::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    for attempt in 1..=ATTEMPTS {
        let live = api
            .get_opt(AWS_AUTH_NAME)
            .await
            .map_err(|e| fail("read", e))?;
        let Some(mut desired) = change(live.as_ref(), arn)? else {
            return Ok(false);
        };
        // Sent back unchanged they would be taken as-is; left out, the server keeps them.
        desired.metadata.managed_fields = None;
        let written = match &live {
            Some(_) => api.replace(AWS_AUTH_NAME, &params, &desired).await,
            None => api.create(&params, &desired).await,
        };
        match written {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => return Err(fail("write", e)),
        }
    }
    unreachable!("the last attempt returns")
}

/// What `plan` shows for the aws-auth mapping.
async fn plan_mapping(cx: &Context, arn: &str) -> Result<Option<Change>, StageError> {
    let change = || {
        Change::new(
            Action::Update,
            "aws-auth",
            format!("{AWS_AUTH_NAMESPACE}/{AWS_AUTH_NAME}"),
        )
        .detail(format!("map node role {arn}"))
    };
    let Some(kube) = kubernetes::reachable(cx).await else {
        return Ok(Some(change()));
    };
    let api: Api<ConfigMap> = Api::namespaced(kube.client.clone(), AWS_AUTH_NAMESPACE);
    let live = match api.get_opt(AWS_AUTH_NAME).await {
        Ok(live) => live,
        Err(_) => return Ok(Some(change())),
    };
    Ok(map_node_role(live.as_ref(), arn)?.map(|_| change()))
}

/// The label Karpenter puts on each node it launched: the NodePool's (v1) or, before 0.33,
/// the Provisioner's name.
const KARPENTER_NODE_LABELS: [&str; 2] = ["karpenter.sh/nodepool", "karpenter.sh/provisioner-name"];

#[async_trait]
impl Stage for Karpenter {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[nodegroup::ID, karpenter_infra::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    fn needs_aws(&self) -> bool {
        true
    }

    fn uses_helm(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let manifests = manifests(cx.stack.karpenter_api())?;
        let files = cx.rendered().await?;
        let mut changes: Vec<Change> = plan_mapping(cx, &node_role_arn(cx))
            .await?
            .into_iter()
            .collect();
        changes.extend(kubernetes::plan_release(cx, &crd_release(&cx.stack)).await?);
        changes.extend(kubernetes::plan_release(cx, &release(&cx.stack, &files)?).await?);
        changes.extend(kubernetes::plan_objects(cx, &objects(&files, manifests.paths)?).await?);
        Ok(changes)
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let manifests = manifests(cx.stack.karpenter_api())?;
        let files = cx.rendered().await?;
        let mut changes = kubernetes::plan_delete_objects(&objects(&files, manifests.paths)?);
        changes.push(kubernetes::plan_delete_release(&release(
            &cx.stack, &files,
        )?));
        changes.push(kubernetes::plan_delete_release(&crd_release(&cx.stack)));
        changes.push(
            Change::new(
                Action::Delete,
                "aws-auth",
                format!("{AWS_AUTH_NAMESPACE}/{AWS_AUTH_NAME}"),
            )
            .detail(format!(
                "unmap node role {}, if meshstack mapped it",
                node_role_arn(cx)
            )),
        );
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        // Before any write: a pair that cannot work is refused, naming the field.
        let manifests = manifests(cx.stack.karpenter_api())?;
        let files = cx.rendered().await?;
        let kube = cx.kube().await?;
        let mut changes = Vec::new();

        // Nodes must be able to join before a NodePool can launch any.
        let arn = node_role_arn(cx);
        if update_aws_auth(&kube.client, &arn, map_node_role).await? {
            let c = Change::new(
                Action::Update,
                "aws-auth",
                format!("{AWS_AUTH_NAMESPACE}/{AWS_AUTH_NAME}"),
            )
            .detail(format!("map node role {arn}"));
            h.step(c.to_string());
            changes.push(c);
        }

        // CRDs an earlier meshstack installed from the controller chart's `crds/` belong to
        // no release: hand them to `karpenter-crd` first, or helm refuses to take them over.
        let adopted = apply::adopt_crds(&kube.client, &CRD_GROUPS, CRD_RELEASE, NAMESPACE).await?;
        if !adopted.is_empty() {
            h.step(format!(
                "handed Karpenter's CRDs ({}) to helm release {NAMESPACE}/{CRD_RELEASE}",
                adopted.join(", ")
            ));
        }
        changes.extend(kubernetes::ensure_release(cx, h, &crd_release(&cx.stack)).await?);
        changes.extend(kubernetes::ensure_release(cx, h, &release(&cx.stack, &files)?).await?);

        kubernetes::wait_crds(cx, h, manifests.crds).await?;
        changes.extend(kubernetes::apply(cx, h, &objects(&files, manifests.paths)?).await?);
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let manifests = manifests(cx.stack.karpenter_api())?;
        let files = cx.rendered().await?;
        let pool = objects(&files, manifests.paths)?;
        let mut removed = kubernetes::delete(cx, h, &pool).await?;
        // Karpenter drains and terminates its nodes and then drops its finalizers; only its
        // running controller can, so the chart stays until the pool and class are gone.
        let progress = |line: &str| h.step(line.to_string());
        let wait = Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        let refs: Vec<ObjectRef> = pool.iter().map(ObjectRef::of).collect();
        apply::wait_gone(&kube.client, kube.resolver.as_ref(), &refs, wait).await?;
        // The pool going does not mean its nodes have: wait for Karpenter to terminate them
        // while its controller still runs (instances it cannot reach any more are terminated
        // by the `cluster` stage's sweep).
        apply::wait_nodes_gone(&kube.client, &KARPENTER_NODE_LABELS, wait).await?;

        if kubernetes::remove_release(cx, h, &release(&cx.stack, &files)?).await? {
            removed += 1;
        }
        // The CRDs last: uninstalling their chart deletes them, and every custom resource.
        if kubernetes::remove_release(cx, h, &crd_release(&cx.stack)).await? {
            removed += 1;
        }
        let arn = node_role_arn(cx);
        if update_aws_auth(&kube.client, &arn, unmap_node_role).await? {
            h.step(format!(
                "unmapped node role {arn} from {AWS_AUTH_NAMESPACE}/{AWS_AUTH_NAME}"
            ));
            removed += 1;
        }
        Ok(super::deleted(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const ARN: &str = "arn:aws:iam::123456789012:role/shop-node";
    const OTHER: &str = "- rolearn: arn:aws:iam::123456789012:role/admin\n  username: admin\n  groups:\n  - system:masters\n";

    fn cm(map_roles: Option<&str>, mapped: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(AWS_AUTH_NAME.into()),
                namespace: Some(AWS_AUTH_NAMESPACE.into()),
                resource_version: Some("7".into()),
                annotations: mapped
                    .map(|m| BTreeMap::from([(MAPPED_ROLES_ANNOTATION.into(), m.into())])),
                ..Default::default()
            },
            data: Some(
                map_roles
                    .map(|r| ("mapRoles".to_string(), r.to_string()))
                    .into_iter()
                    .chain([("mapUsers".to_string(), "[]".to_string())])
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn roles(cm: &ConfigMap) -> Vec<Yaml> {
        serde_yaml::from_str(&cm.data.as_ref().unwrap()["mapRoles"]).unwrap()
    }

    fn arns(cm: &ConfigMap) -> Vec<String> {
        roles(cm)
            .iter()
            .map(|r| role_arn(r).unwrap().to_string())
            .collect()
    }

    fn mapped(cm: &ConfigMap) -> Option<&str> {
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MAPPED_ROLES_ANNOTATION))
            .map(String::as_str)
    }

    fn ours() -> String {
        format!("- rolearn: {ARN}\n  username: x\n  groups: [system:nodes]\n")
    }

    #[test]
    fn mapping_adds_the_node_role_once_and_keeps_the_rest() {
        // Added after the others, as EKS writes node entries, and recorded as meshstack's.
        let added = map_node_role(Some(&cm(Some(OTHER), None)), ARN)
            .unwrap()
            .expect("a write");
        assert_eq!(arns(&added), ["arn:aws:iam::123456789012:role/admin", ARN]);
        let entry = &roles(&added)[1];
        assert_eq!(entry["username"], "system:node:{{EC2PrivateDNSName}}");
        assert_eq!(
            entry["groups"],
            serde_yaml::from_str::<Yaml>("[system:bootstrappers, system:nodes]").unwrap()
        );
        assert_eq!(roles(&added)[0]["groups"][0], "system:masters");
        assert_eq!(added.data.as_ref().unwrap()["mapUsers"], "[]");
        assert_eq!(mapped(&added), Some(ARN));
        assert_eq!(
            added.metadata.resource_version.as_deref(),
            Some("7"),
            "written at the version read"
        );

        // Already mapped, by meshstack or by anyone (EKS maps the node group's role, which
        // Karpenter's nodes share): no write, nothing recorded.
        for (live, why) in [
            (cm(Some(&format!("{OTHER}{}", ours())), Some(ARN)), "ours"),
            (cm(Some(&ours()), None), "someone else's"),
        ] {
            assert_eq!(map_node_role(Some(&live), ARN).unwrap(), None, "{why}");
        }

        // No ConfigMap, no mapRoles, an empty one: created or filled.
        for live in [None, Some(cm(None, None)), Some(cm(Some("  \n"), None))] {
            let added = map_node_role(live.as_ref(), ARN).unwrap().expect("a write");
            assert_eq!(arns(&added), [ARN]);
            assert_eq!(added.metadata.name.as_deref(), Some(AWS_AUTH_NAME));
            assert_eq!(
                added.metadata.namespace.as_deref(),
                Some(AWS_AUTH_NAMESPACE)
            );
            assert_eq!(mapped(&added), Some(ARN));
        }
    }

    #[test]
    fn unmapping_removes_only_what_meshstack_added() {
        let both = format!("{OTHER}{}", ours());
        // Ours: the entry and the record go, the rest stays.
        let removed = unmap_node_role(Some(&cm(Some(&both), Some(ARN))), ARN)
            .unwrap()
            .expect("a write");
        assert_eq!(arns(&removed), ["arn:aws:iam::123456789012:role/admin"]);
        assert_eq!(mapped(&removed), None);
        assert_eq!(removed.data.as_ref().unwrap()["mapUsers"], "[]");
        // Another ARN meshstack recorded stays recorded.
        let other_arn = "arn:aws:iam::123456789012:role/other-node";
        let removed = unmap_node_role(
            Some(&cm(Some(&both), Some(&format!("{other_arn},{ARN}")))),
            ARN,
        )
        .unwrap()
        .unwrap();
        assert_eq!(mapped(&removed), Some(other_arn));
        // The entry already gone by hand: the record is cleaned up.
        let removed = unmap_node_role(Some(&cm(Some(OTHER), Some(ARN))), ARN)
            .unwrap()
            .unwrap();
        assert_eq!(arns(&removed), ["arn:aws:iam::123456789012:role/admin"]);
        assert_eq!(mapped(&removed), None);

        // Not ours (EKS's mapping of the shared node role), or nothing there: no write.
        for live in [
            Some(cm(Some(&both), None)),
            Some(cm(Some(&both), Some(other_arn))),
            None,
        ] {
            assert_eq!(unmap_node_role(live.as_ref(), ARN).unwrap(), None);
        }
    }

    #[test]
    fn a_malformed_map_roles_is_refused_with_the_fix() {
        for text in ["rolearn: x", "- just a string", "[unclosed"] {
            let err = map_node_role(Some(&cm(Some(text), None)), ARN).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("kube-system/aws-auth: data.mapRoles") && msg.contains("kubectl"),
                "{text}: {msg}"
            );
            assert!(unmap_node_role(Some(&cm(Some(text), Some(ARN))), ARN).is_err());
        }
    }

    #[test]
    fn the_namespace_is_the_one_the_irsa_trust_names() {
        assert_eq!(
            format!("system:serviceaccount:{NAMESPACE}:karpenter"),
            crate::names::KARPENTER_SERVICE_ACCOUNT
        );
    }

    #[test]
    fn the_api_picks_the_manifests_and_impossible_pairs_name_the_field() {
        let default = Stack::embedded_default();
        let m = manifests(default.karpenter_api()).unwrap();
        assert_eq!(
            m.paths,
            ["karpenter/ec2nodeclass.yaml", "karpenter/nodepool.yaml"]
        );
        assert_eq!(
            m.crds,
            ["nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"]
        );

        // The legacy path: reachable only with a Kubernetes version config no longer accepts,
        // so the stack is edited after validation.
        let mut legacy = default.clone();
        legacy.kubernetes_version = "1.27".into();
        legacy.karpenter.version = crate::config::ReleaseVersion::new(0, 32, 10);
        let m = manifests(crate::versions::karpenter_api(legacy.karpenter.version)).unwrap();
        assert_eq!(m.paths, ["karpenter/provisioner.yaml"]);
        assert_eq!(
            m.crds,
            [
                "provisioners.karpenter.sh",
                "awsnodetemplates.karpenter.k8s.aws"
            ]
        );

        assert!(manifests(KarpenterApi::V1Beta1).is_err());
    }
}
