//! What the Kubernetes stages share: access to the cluster (a kube client, a kind resolver and
//! helm, built once per run from the cluster's endpoint and CA and an in-process EKS token),
//! the stack's rendered manifests, and the apply / release helpers every such stage uses.
//!
//! Tests hand a [`KubeAccess`] over an in-memory API server and a recording helm to
//! [`Context::with_kube`]; nothing here then needs AWS.

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use kube::api::DynamicObject;

use super::{cluster, Action, Change, Context, StageError};
use crate::config::ExistingCluster;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, Applied, Effect, Resolver, State};
use crate::k8s::helm::{self, Helm, HelmCli, Release, ReleaseStep};
use crate::k8s::{client, kubeconfig, token};
use crate::render::{self, RenderInputs, RenderedFile};

/// Everything a Kubernetes stage needs to act on the cluster.
#[derive(Clone)]
pub struct KubeAccess {
    pub client: kube::Client,
    pub resolver: Arc<dyn Resolver>,
    pub helm: Arc<dyn Helm>,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeAccess")
    }
}

impl Context {
    /// Use `access` for every Kubernetes stage instead of connecting to the stack's cluster.
    pub fn with_kube(mut self, access: KubeAccess) -> Self {
        let _ = self.kube.set(access);
        *self.reach.get_mut() = Some(true);
        self
    }

    /// Access to the stack's cluster, connected on first use.
    pub async fn kube(&self) -> Result<&KubeAccess, StageError> {
        self.kube.get_or_try_init(|| connect(self)).await
    }

    /// The stack's manifests and helm values, rendered with what this run knows of the account
    /// and cluster (offline stand-ins where it knows nothing, as in `meshstack render`).
    pub async fn rendered(&self) -> Result<Vec<RenderedFile>, StageError> {
        let inputs = self.render_inputs().await;
        render::render(&self.stack, &inputs).map_err(|e| StageError::Conflict(e.to_string()))
    }

    /// What [`Context::rendered`] renders with: the account, region, zones and endpoint this
    /// run knows.
    pub async fn render_inputs(&self) -> RenderInputs {
        let region = self
            .aws
            .as_ref()
            .map(|a| a.region.clone())
            .or_else(|| self.stack.region().map(str::to_string))
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = match &self.aws {
            Some(_) => match cluster::facts(self).await {
                Ok(f) => f.endpoint,
                Err(_) => render::offline_endpoint(&self.stack),
            },
            None => render::offline_endpoint(&self.stack),
        };
        let zones = if self.zones.is_empty() {
            (0..self.stack.zone_count())
                .map(|i| format!("{region}{}", (b'a' + i as u8) as char))
                .collect()
        } else {
            self.zones.iter().map(|z| z.name.clone()).collect()
        };
        RenderInputs {
            account_id: self.account().to_string(),
            partition: self.partition().to_string(),
            region,
            zones,
            cluster_endpoint: endpoint,
        }
    }
}

/// Connect to the stack's cluster: a kube client authenticating with in-process EKS tokens,
/// discovery for kinds, and helm with a private kubeconfig whose user runs `meshstack token`
/// (so no token is written to disk or passed on helm's command line). The endpoint and CA may
/// come from the environment instead ([`client::api_override`]).
async fn connect(cx: &Context) -> Result<KubeAccess, StageError> {
    if let Some(existing) = cx.stack.existing_cluster() {
        return connect_existing(cx, existing).await;
    }
    let aws = cx.aws()?;
    let facts = cluster::facts(cx).await?;
    let provider = aws
        .credentials
        .clone()
        .ok_or_else(|| StageError::Missing("AWS credentials".into()))?;
    let (name, region) = (facts.name.clone(), aws.region.clone());
    let tokens: client::TokenSource = Arc::new(move || {
        let (provider, name, region) = (provider.clone(), name.clone(), region.clone());
        Box::pin(async move {
            let creds = provider.provide_credentials().await?;
            Ok(token::eks_token(&name, &region, &creds, SystemTime::now())?.token)
        })
    });
    // The API's address and CA: the cluster's, unless the environment names another API
    // server (`MESHSTACK_KUBE_API`, for tests); nothing after this depends on which.
    let (endpoint, ca_data) =
        match client::api_override().map_err(|e| StageError::Conflict(e.to_string()))? {
            Some(o) => {
                warn_override(&o.endpoint);
                (o.endpoint, o.ca_data)
            }
            None => (facts.endpoint.clone(), facts.certificate_authority.clone()),
        };
    let client = client::client(&endpoint, &ca_data, tokens)
        .map_err(|e| StageError::Conflict(format!("cluster {}: {e}", facts.name)))?;
    let _ = cx.api_endpoint.set(endpoint.clone());

    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "meshstack".into());
    let entry = kubeconfig::KubeconfigEntry {
        name: facts.name.clone(),
        server: endpoint,
        certificate_authority_data: ca_data,
        exec: kubeconfig::ExecPlugin::meshstack_token(exe, &facts.name, &aws.region),
    };
    let text = kubeconfig::merge(None, &entry).map_err(|e| StageError::Conflict(e.to_string()))?;
    // helm's kubeconfig: in a fresh private folder (0700, unpredictable name, created
    // exclusively), removed when the run is done; never a path another user could plant.
    let private = |e: std::io::Error| {
        StageError::Conflict(format!("cannot write helm's private kubeconfig: {e}"))
    };
    let dir = helm::private_dir().map_err(private)?;
    let path = helm::write_new_private(dir.path(), "kubeconfig", &text).map_err(private)?;
    let mut cli = HelmCli::from_env(Some(path));
    cli.workdir = Some(Arc::new(dir));

    Ok(KubeAccess {
        resolver: Arc::new(apply::DiscoveryResolver::new(client.clone())),
        client,
        helm: Arc::new(cli),
    })
}

/// Says, once per process, that the cluster's live EKS token goes to the endpoint
/// `MESHSTACK_KUBE_API` names: a test setting in the shipped binary, easy to leave set.
fn warn_override(endpoint: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "warning: {} is set: this run sends the cluster's EKS token to {endpoint}, not to \
             the cluster's own API endpoint",
            client::API_ENV
        );
    });
}

/// Connect to an existing cluster through its kubeconfig, as kubectl would (exec plugins and
/// all); helm gets the same file and, explicitly, the same context, so the two never disagree
/// about which cluster they act on.
async fn connect_existing(
    cx: &Context,
    existing: &ExistingCluster,
) -> Result<KubeAccess, StageError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    client::install_crypto_provider();
    let (kubeconfig, path, from) = match &existing.kubeconfig {
        Some(path) => (
            Kubeconfig::read_from(path),
            Some(path.clone()),
            path.display().to_string(),
        ),
        None => (
            Kubeconfig::read(),
            None,
            "KUBECONFIG (else ~/.kube/config)".to_string(),
        ),
    };
    let kubeconfig = kubeconfig.map_err(|e| {
        StageError::Conflict(format!(
            "cluster.existing: cannot read the kubeconfig {from}: {e}"
        ))
    })?;
    let context = existing
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or_else(|| {
            StageError::Conflict(format!(
                "cluster.existing: the kubeconfig {from} has no current context; name one with \
                 cluster.existing.context"
            ))
        })?;
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(StageError::Conflict(format!(
            "cluster.existing: the kubeconfig {from} has no context {context:?} (it has: {})",
            known.join(", ")
        )));
    }
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| StageError::Conflict(format!("cluster.existing: context {context}: {e}")))?;
    config.connect_timeout = Some(client::CONNECT_TIMEOUT);
    config.read_timeout = Some(client::READ_TIMEOUT);
    client::identify(&mut config);
    let endpoint = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| StageError::Conflict(format!("cluster.existing: context {context}: {e}")))?;
    let _ = cx.api_endpoint.set(endpoint);
    // Without a path helm reads KUBECONFIG (else ~/.kube/config) itself, as kube did above.
    let mut cli = HelmCli::from_env(path);
    cli.kube_context = Some(context);
    Ok(KubeAccess {
        resolver: Arc::new(apply::DiscoveryResolver::new(client.clone())),
        client,
        helm: Arc::new(cli),
    })
}

/// The label the zone of a node is in (`topology.kubernetes.io/zone`, well-known).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The node labels the stack's manifests select on, which an existing cluster's nodes must
/// carry (on a cluster meshstack builds, its node group and NodePool set them): the platform's
/// pool (istiod, the gateway) and the app's nodes (products).
pub const EXISTING_NODE_LABELS: [(&str, &[(&str, &str)]); 2] = [
    ("system", &[("meshstack.io/pool", "system")]),
    (
        "app",
        &[("managedBy", "karpenter"), ("billing-team", "ecommerce")],
    ),
];

/// Before any write on an existing cluster: its zones, from the nodes' [`ZONE_LABEL`], and a
/// check that the nodes can run the demo — at least two zones (else there is no locality to
/// show), and in every zone a node of each of [`EXISTING_NODE_LABELS`] (else pods stay
/// Pending, or a zone has no local orders endpoint). The error names the labels to add.
pub async fn existing_zones(cx: &Context) -> Result<Vec<String>, StageError> {
    use k8s_openapi::api::core::v1::Node;
    let kube = cx.kube().await?;
    let nodes: kube::Api<Node> = kube::Api::all(kube.client.clone());
    let listed = nodes
        .list(&Default::default())
        .await
        .map_err(|e| StageError::Conflict(format!("listing the cluster's nodes: {e}")))?;
    let zone_of = |n: &Node| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .cloned()
    };
    let mut zones: Vec<String> = listed.items.iter().filter_map(zone_of).collect();
    zones.sort();
    zones.dedup();
    let hint = "see README, \"Rehearse on any cluster\", for a kind config that sets them";
    if zones.len() < 2 {
        return Err(StageError::Conflict(format!(
            "the cluster's nodes are in {} zone(s) ({}); the demo needs nodes labelled \
             {ZONE_LABEL} with at least two zones; {hint}",
            zones.len(),
            zones.join(", ")
        )));
    }
    let mut missing = Vec::new();
    for zone in &zones {
        for (role, labels) in EXISTING_NODE_LABELS {
            let has = listed.items.iter().any(|n| {
                let l = n.metadata.labels.clone().unwrap_or_default();
                l.get(ZONE_LABEL) == Some(zone)
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            });
            if !has {
                let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                missing.push(format!("{zone}: no {role} node ({})", wanted.join(",")));
            }
        }
    }
    if !missing.is_empty() {
        return Err(StageError::Conflict(format!(
            "the cluster's nodes cannot run the demo in every zone: {}; label nodes so; {hint}",
            missing.join("; ")
        )));
    }
    Ok(zones)
}

/// The objects of the rendered files at `paths`, in file order.
pub fn objects(files: &[RenderedFile], paths: &[&str]) -> Result<Vec<DynamicObject>, StageError> {
    let mut out = Vec::new();
    for path in paths {
        let file = files
            .iter()
            .find(|f| f.path == *path)
            .ok_or_else(|| StageError::Missing(format!("rendered manifest {path}")))?;
        out.extend(apply::parse_manifests(&file.content, path)?);
    }
    Ok(out)
}

/// The content of one rendered file (helm values).
pub fn file<'a>(files: &'a [RenderedFile], path: &str) -> Result<&'a str, StageError> {
    files
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.content.as_str())
        .ok_or_else(|| StageError::Missing(format!("rendered file {path}")))
}

/// Server-side apply `objects`, reporting each change as a step; the changes made.
pub async fn apply(
    cx: &Context,
    h: &StageHandle,
    objects: &[DynamicObject],
) -> Result<Vec<Change>, StageError> {
    apply_as(cx, h, objects, apply::FIELD_MANAGER).await
}

/// [`apply`] under another field manager, for a stage that owns single fields of objects
/// another stage applies.
pub async fn apply_as(
    cx: &Context,
    h: &StageHandle,
    objects: &[DynamicObject],
    field_manager: &str,
) -> Result<Vec<Change>, StageError> {
    let kube = cx.kube().await?;
    // Namespaces a `down` is still deleting take no new objects: wait them out first.
    let mut namespaces: Vec<String> = objects
        .iter()
        .filter_map(|o| match o.types.as_ref().map(|t| t.kind.as_str()) {
            Some("Namespace") => o.metadata.name.clone(),
            _ => o.metadata.namespace.clone(),
        })
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        let progress = |line: &str| h.step(line.to_string());
        let wait = apply::Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        apply::wait_namespace_usable(&kube.client, ns, wait).await?;
    }
    let applied =
        apply::apply_all(&kube.client, kube.resolver.as_ref(), objects, field_manager).await?;
    let changes: Vec<Change> = applied.iter().filter_map(applied_change).collect();
    for c in &changes {
        h.step(c.to_string());
    }
    Ok(changes)
}

fn applied_change(a: &Applied) -> Option<Change> {
    let action = match a.effect {
        Effect::Created => Action::Create,
        Effect::Updated => Action::Update,
        Effect::Unchanged => return None,
    };
    Some(Change::new(action, "k8s-object", a.object.to_string()))
}

/// What `plan` shows for `objects`: compared with the cluster when it can be reached, else all
/// of them as creates (an empty account, offline, or an API that does not answer).
pub async fn plan_objects(
    cx: &Context,
    objects: &[DynamicObject],
) -> Result<Vec<Change>, StageError> {
    plan_objects_as(cx, objects, apply::FIELD_MANAGER).await
}

/// [`plan_objects`] for objects applied with [`apply_as`].
pub async fn plan_objects_as(
    cx: &Context,
    objects: &[DynamicObject],
    field_manager: &str,
) -> Result<Vec<Change>, StageError> {
    if let Some(kube) = reachable(cx).await {
        let seen =
            apply::observe_all(&kube.client, kube.resolver.as_ref(), objects, field_manager).await;
        if let Ok(seen) = seen {
            return Ok(seen
                .into_iter()
                .filter_map(|(object, state)| match state {
                    State::Missing => Some(Change::new(
                        Action::Create,
                        "k8s-object",
                        object.to_string(),
                    )),
                    State::Differs => Some(Change::new(
                        Action::Update,
                        "k8s-object",
                        object.to_string(),
                    )),
                    State::Converged => None,
                })
                .collect());
        }
    }
    Ok(apply::apply_order(objects)
        .into_iter()
        .map(|o| {
            Change::new(
                Action::Create,
                "k8s-object",
                apply::ObjectRef::of(o).to_string(),
            )
        })
        .collect())
}

/// What `plan --destroy` shows for `objects`: each a delete, in the order `down` deletes them.
pub fn plan_delete_objects(objects: &[DynamicObject]) -> Vec<Change> {
    apply::apply_order(objects)
        .into_iter()
        .rev()
        .map(|o| {
            Change::new(
                Action::Delete,
                "k8s-object",
                apply::ObjectRef::of(o).to_string(),
            )
        })
        .collect()
}

/// What `plan --destroy` shows for a release.
pub fn plan_delete_release(release: &Release) -> Change {
    Change::new(
        Action::Delete,
        "helm-release",
        format!("{}/{}", release.namespace, release.name),
    )
}

/// How long a read-only look at the cluster (plan, status, down) waits for its API.
const REACH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// The cluster's API if it answered the probe within [`REACH_DEADLINE`]; `None` when there is
/// no cluster (offline, not created yet, deleted) or it does not answer. Read-only commands then
/// show what `up` would do on an empty cluster instead of failing. The probe runs once per run;
/// a failed probe is remembered as a failure, never as a client to use.
pub async fn reachable(cx: &Context) -> Option<&KubeAccess> {
    let mut reach = cx.reach.lock().await;
    if reach.is_none() {
        *reach = Some(probe(cx).await);
    }
    match *reach {
        Some(true) => cx.kube.get(),
        _ => None,
    }
}

/// Ask the API again (after a failure), and remember the answer.
pub async fn still_reachable(cx: &Context) -> bool {
    let mut reach = cx.reach.lock().await;
    let ok = probe(cx).await;
    *reach = Some(ok);
    ok
}

/// Connect (once) and ask the API server its version, within [`REACH_DEADLINE`].
async fn probe(cx: &Context) -> bool {
    if cx.aws.is_none() && cx.kube.get().is_none() && cx.stack.existing_cluster().is_none() {
        return false;
    }
    let Ok(kube) = cx.kube().await else {
        return false;
    };
    matches!(
        tokio::time::timeout(REACH_DEADLINE, kube.client.apiserver_version()).await,
        Ok(Ok(_))
    )
}

/// For `down`: the cluster's API, or `None` when there is no cluster or its API does not answer
/// (then, once per run, a warning). Nothing is lost by going on: deleting the cluster deletes
/// what is in it; what the cluster made in the account (load balancers, Karpenter's instances
/// and instance profiles) is swept by tag later.
pub async fn for_teardown<'a>(cx: &'a Context, h: &StageHandle) -> Option<&'a KubeAccess> {
    let built_by_meshstack = cx.stack.existing_cluster().is_none();
    if built_by_meshstack && cx.kube.get().is_none() && cluster::facts(cx).await.is_err() {
        return None; // no cluster: nothing to tear down inside it
    }
    let kube = reachable(cx).await;
    if kube.is_none() {
        warn_unreachable(cx, h);
    }
    kube
}

/// Once per run, a warning naming the API that does not answer; after it, a quieter line.
fn warn_unreachable(cx: &Context, h: &StageHandle) {
    use std::sync::atomic::Ordering;
    if cx.api_warned.swap(true, Ordering::SeqCst) {
        h.info("the cluster's API does not answer; skipping this stage's Kubernetes teardown");
        return;
    }
    let api = cx.api_endpoint.get().map_or_else(
        || "the cluster's API".to_string(),
        |e| format!("the cluster's API at {e}"),
    );
    h.warn(format!(
        "{api} does not answer (waited up to {}s); skipping the Kubernetes teardown of every \
         stage — deleting the cluster removes what is in it, and what the cluster made in the \
         account is swept by tag",
        REACH_DEADLINE.as_secs()
    ));
}

/// A Kubernetes stage's `down` failed: if the API has gone away meanwhile (stopped, deleted,
/// unreachable), go on as if it had been unreachable from the start — a skipped teardown, with
/// the warning — so that the AWS teardown still runs; any other failure stands.
pub async fn tolerate_lost_api(
    cx: &Context,
    h: &StageHandle,
    res: Result<Outcome, StageError>,
) -> Result<Outcome, StageError> {
    // An existing cluster stays: what meshstack put in it must really go, so a lost API is
    // a failure there (a rerun finishes the teardown).
    if cx.stack.existing_cluster().is_some() {
        return res;
    }
    match res {
        Err(e) if !still_reachable(cx).await => {
            warn_unreachable(cx, h);
            h.info(format!("the teardown stopped at: {e}"));
            Ok(Outcome::Unchanged)
        }
        other => other,
    }
}

/// What `plan` shows for a release: nothing when it is deployed as wanted, else an install.
pub async fn plan_release(cx: &Context, release: &Release) -> Result<Vec<Change>, StageError> {
    let step = match reachable(cx).await {
        Some(kube) => decide(kube, release).await.unwrap_or(ReleaseStep::Install),
        None => ReleaseStep::Install,
    };
    Ok(match step {
        ReleaseStep::Skip => vec![],
        _ => vec![release_change(release)],
    })
}

fn release_change(release: &Release) -> Change {
    Change::new(
        Action::Create,
        "helm-release",
        format!("{}/{}", release.namespace, release.name),
    )
    .detail(release.chart.listed_as())
}

/// What `up` must do for `release`, from what helm holds in the cluster (never the journal).
async fn decide(kube: &KubeAccess, release: &Release) -> Result<ReleaseStep, StageError> {
    let listed = kube.helm.find(&release.name, &release.namespace).await?;
    let live = if helm::values_matter(release, listed.as_ref()) {
        kube.helm
            .user_values(&release.name, &release.namespace)
            .await?
    } else {
        None
    };
    Ok(helm::decide(
        release,
        listed.as_ref(),
        live.as_ref(),
        &release.values_data()?,
    ))
}

/// Install or upgrade `release` unless helm reports it deployed at this chart version with
/// these values; recover a release a killed run left pending. The change
/// made, if any.
pub async fn ensure_release(
    cx: &Context,
    h: &StageHandle,
    release: &Release,
) -> Result<Option<Change>, StageError> {
    let kube = cx.kube().await?;
    let step = decide(kube, release).await?;
    let name = format!("{}/{}", release.namespace, release.name);
    match step {
        ReleaseStep::Skip => return Ok(None),
        ReleaseStep::RollbackThenInstall => {
            h.warn(format!(
                "helm release {name} was left pending by an interrupted run; rolling it back"
            ));
            kube.helm
                .rollback(&release.name, &release.namespace)
                .await?;
        }
        ReleaseStep::UninstallThenInstall => {
            h.warn(format!(
                "helm release {name} was left half-installed or half-uninstalled by an \
                 interrupted run; uninstalling it first"
            ));
            kube.helm
                .uninstall(&release.name, &release.namespace)
                .await?;
        }
        ReleaseStep::Install => {}
    }
    {
        let progress = |line: &str| h.step(line.to_string());
        let wait = apply::Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        apply::wait_namespace_usable(&kube.client, &release.namespace, wait).await?;
    }
    if create_namespace(&kube.client, &release.namespace, &cx.stack.name).await? {
        h.step(format!("+ namespace {}", release.namespace));
    }
    h.step(format!(
        "helm upgrade --install {name} ({})",
        release.chart.listed_as()
    ));
    kube.helm.upgrade_install(release).await?;
    Ok(Some(release_change(release)))
}

/// The annotation on a namespace meshstack created for a release's chart (helm's
/// `--create-namespace` would make one nobody owns, which `helm uninstall` leaves behind):
/// the stack's name. `down` deletes such a namespace, and only such a one, once no release is
/// left in it; a namespace that was there before is never touched.
pub const NAMESPACE_OWNER: &str = "meshstack.io/created-by-stack";

/// Creates `namespace` for `stack` if it does not exist; whether it did.
async fn create_namespace(
    client: &kube::Client,
    namespace: &str,
    stack: &str,
) -> Result<bool, StageError> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let object = apply::ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: namespace.into(),
    };
    let api_error = |action: &'static str| {
        let object = object.clone();
        move |e: kube::Error| {
            StageError::from(apply::ApplyError::Api {
                action,
                object,
                source: Box::new(e),
            })
        }
    };
    if api
        .get_opt(namespace)
        .await
        .map_err(api_error("read"))?
        .is_some()
    {
        return Ok(false);
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": namespace, "annotations": {NAMESPACE_OWNER: stack}}
    }))
    .expect("a valid Namespace");
    match api.create(&kube::api::PostParams::default(), &ns).await {
        Ok(_) => Ok(true),
        // Created meanwhile by someone else: theirs, not ours.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(api_error("create")(e)),
    }
}

/// Deletes `namespace` when this stack created it and no helm release is left in it.
async fn remove_namespace(
    client: &kube::Client,
    h: &StageHandle,
    namespace: &str,
    stack: &str,
) -> Result<(), StageError> {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let Ok(Some(ns)) = api.get_opt(namespace).await else {
        return Ok(());
    };
    let owner = ns
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NAMESPACE_OWNER));
    if owner.map(String::as_str) != Some(stack) || ns.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    // helm keeps each release as Secrets labelled owner=helm in the release's namespace.
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let releases = secrets
        .list(&kube::api::ListParams::default().labels("owner=helm"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(1);
    if releases > 0 {
        return Ok(());
    }
    match api.delete(namespace, &Default::default()).await {
        Ok(_) => {
            h.step(format!("- namespace {namespace}"));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(StageError::from(apply::ApplyError::Api {
            action: "delete",
            object: apply::ObjectRef {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                namespace: None,
                name: namespace.into(),
            },
            source: Box::new(e),
        })),
    }
}

/// Uninstall `release` (a missing one is fine); whether it existed.
pub async fn remove_release(
    cx: &Context,
    h: &StageHandle,
    release: &Release,
) -> Result<bool, StageError> {
    let kube = cx.kube().await?;
    if kube
        .helm
        .find(&release.name, &release.namespace)
        .await?
        .is_none()
    {
        // A killed `down` may have uninstalled it and not yet removed the namespace.
        remove_namespace(&kube.client, h, &release.namespace, &cx.stack.name).await?;
        return Ok(false);
    }
    h.step(format!(
        "helm uninstall {}/{}",
        release.namespace, release.name
    ));
    kube.helm
        .uninstall(&release.name, &release.namespace)
        .await?;
    remove_namespace(&kube.client, h, &release.namespace, &cx.stack.name).await?;
    Ok(true)
}

/// Wait until each CRD in `names` is established (a chart installs them; their custom resources
/// can only be applied after), reporting progress as steps.
pub async fn wait_crds(cx: &Context, h: &StageHandle, names: &[&str]) -> Result<(), StageError> {
    let kube = cx.kube().await?;
    let progress = |line: &str| h.step(line.to_string());
    let wait = apply::Wait {
        backoff: cx.waits.kubernetes,
        progress: &progress,
    };
    for name in names {
        apply::wait_crd_established(&kube.client, name, wait).await?;
    }
    Ok(())
}

/// Wait until each Deployment in `deployments` (namespace, name) is available, all at once: as
/// long as the slowest rollout, not the sum; the first that fails (or times out) names itself.
pub async fn wait_deployments(
    cx: &Context,
    h: &StageHandle,
    deployments: &[(&str, &str)],
) -> Result<(), StageError> {
    let kube = cx.kube().await?;
    let progress = |line: &str| h.step(line.to_string());
    let wait = apply::Wait {
        backoff: cx.waits.kubernetes,
        progress: &progress,
    };
    futures::future::try_join_all(
        deployments
            .iter()
            .map(|(ns, name)| apply::wait_deployment_available(&kube.client, ns, name, wait)),
    )
    .await?;
    Ok(())
}

/// Delete `objects` (already-gone ones are fine); how many existed.
pub async fn delete(
    cx: &Context,
    h: &StageHandle,
    objects: &[DynamicObject],
) -> Result<usize, StageError> {
    let kube = cx.kube().await?;
    let deleted = apply::delete_all(&kube.client, kube.resolver.as_ref(), objects).await?;
    let existed: Vec<_> = deleted.iter().filter(|d| d.existed).collect();
    for d in &existed {
        h.step(format!("deleted {}", d.object));
    }
    Ok(existed.len())
}
