//! The commands, one file per verb: load the stack, find credentials and zones, then hand the
//! stages to the engine. Errors the user must fix (stack file, flags, account, region) are
//! [`UsageError`]s, which `main` turns into exit code 2 — always before any mutating API call.
//!
//! What the verbs share lives here: loading the stack, the stage selection, the one AWS client
//! set-up ([`connect`], [`credentials`]) and the preflight.

mod charts;
mod checks;
mod compare;
mod confirm;
mod demo;
mod doctor;
mod fleet;
mod inspect;
mod kubeconfig;
mod plan;
mod reap;
mod render;
mod run;
mod state;
mod status;

pub use charts::charts_mirror;
pub use demo::demo;
pub use doctor::doctor;
pub use fleet::{fleet_down, fleet_handout, fleet_plan, fleet_status, fleet_up};
pub use inspect::{pods, verify};
pub use kubeconfig::{kubeconfig, token};
pub use plan::plan;
pub use reap::reap;
pub use render::render;
pub use run::{down, up};
pub use state::{state_init, state_migrate, state_pull, state_push, state_show};
pub use status::status;

use std::path::Path;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;

use crate::aws::account::{self, PreflightError, Zone};
use crate::aws::AwsClients;
use crate::cli::{Output, Selection, StackArgs};
use crate::config::{ConfigError, Stack, ZoneSpec, DEFAULT_STACK_PATH};
use crate::engine::graph::{Graph, StageId};
use crate::engine::progress::OutputMode;
use crate::engine::state::StageStatus;
use crate::k8s::helm::{version_at_least, HelmCli, MIN_HELM};
use crate::stages::{Context, Stage};

/// A mistake in the input (stack file, flags, environment): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// The stack named by `--stack`, else `stacks/demo.yaml` in the working folder, else the copy
/// built into the binary (so `plan` works from anywhere).
pub fn load_stack(args: &StackArgs) -> anyhow::Result<Stack> {
    load_stack_path(args.stack.as_deref())
}

fn load_stack_path(path: Option<&Path>) -> anyhow::Result<Stack> {
    // `UsageError` is text only: spell out the whole chain, or the OS error behind "cannot
    // read the stack file" (not found? a directory? no permission?) is lost.
    let config_usage = |e: ConfigError| usage(format!("{:#}", anyhow::Error::new(e)));
    match path {
        Some(p) => Stack::load(p).map_err(config_usage),
        None if Path::new(DEFAULT_STACK_PATH).is_file() => {
            Stack::load(Path::new(DEFAULT_STACK_PATH)).map_err(config_usage)
        }
        None => Ok(Stack::embedded_default()),
    }
}

fn selection(graph: &Graph, sel: &Selection) -> anyhow::Result<Vec<StageId>> {
    let only = sel
        .only
        .as_deref()
        .map(|s| graph.parse_ids(s))
        .transpose()
        .map_err(usage)?;
    let skip = sel
        .skip
        .as_deref()
        .map(|s| graph.parse_ids(s))
        .transpose()
        .map_err(usage)?
        .unwrap_or_default();
    let selected = graph.select(only.as_deref(), &skip);
    if selected.is_empty() {
        return Err(usage(
            "no stage selected: --only/--skip leave nothing to run",
        ));
    }
    Ok(selected)
}

/// `-q`, set once by `main` before any command runs.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Less on stderr for the rest of the process: no progress, only warnings and errors.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

fn mode(output: Output) -> OutputMode {
    match output {
        Output::Text if quiet() => OutputMode::Quiet,
        Output::Text => OutputMode::Text,
        Output::Json => OutputMode::Json,
    }
}

fn stage_file(id: StageId) -> String {
    format!("src/stages/{}.rs", id.replace('-', "_"))
}

/// AWS clients with credentials that resolve, or why not.
async fn connect(stack: &Stack) -> Result<AwsClients, String> {
    let (aws, sdk) = AwsClients::from_env(stack.region()).await?;
    credentials(&sdk).await?;
    Ok(aws)
}

/// Credentials from the SDK's chain, or why there are none, in one line (the chain's own error
/// lists every provider it tried).
async fn credentials(
    sdk: &aws_config::SdkConfig,
) -> Result<aws_credential_types::Credentials, String> {
    let provider = sdk
        .credentials_provider()
        .ok_or("no credentials provider configured")?;
    match tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials()).await {
        Ok(Ok(creds)) => Ok(creds),
        Ok(Err(_)) => Err(
            "no AWS credentials found (environment, profile, SSO, container or instance metadata)"
                .into(),
        ),
        Err(_) => Err("no AWS credentials (looking for them timed out after 5 s)".into()),
    }
}

fn preflight_error(e: PreflightError) -> anyhow::Error {
    match e {
        PreflightError::Aws(e) => anyhow::Error::new(e).context("preflight"),
        other => usage(other),
    }
}

/// Identity and zones, before any stage.
async fn preflight(
    aws: &AwsClients,
    stack: &Stack,
) -> anyhow::Result<(account::Identity, Vec<Zone>)> {
    let identity = account::identify(aws, stack)
        .await
        .map_err(preflight_error)?;
    let zones = account::choose_zones(aws, stack)
        .await
        .map_err(preflight_error)?;
    Ok((identity, zones))
}

/// Zones to show in an offline plan: the explicit list, or `<region>a, b, c...` as stand-ins.
fn offline_zones(stack: &Stack, region: &str) -> Vec<Zone> {
    match &stack.zones {
        ZoneSpec::Names(names) => names
            .iter()
            .map(|n| Zone {
                name: n.clone(),
                id: String::new(),
            })
            .collect(),
        ZoneSpec::Count(n) => (0..*n)
            .map(|i| Zone {
                name: format!("{region}{}", (b'a' + i as u8) as char),
                id: String::new(),
            })
            .collect(),
    }
}

fn offline_region(stack: &Stack) -> (String, bool) {
    if let Some(r) = stack.region() {
        return (r.to_string(), false);
    }
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(r) = std::env::var(var) {
            if !r.is_empty() {
                return (r, false);
            }
        }
    }
    ("us-east-1".to_string(), true)
}

fn find<'a>(all: &'a [Box<dyn Stage>], id: &str) -> &'a dyn Stage {
    all.iter()
        .find(|s| s.id() == id)
        .map(|s| s.as_ref())
        .expect("graph ids come from the stages")
}

fn status_word(s: StageStatus) -> &'static str {
    match s {
        StageStatus::Pending => "pending",
        StageStatus::Running => "interrupted",
        StageStatus::Done => "done",
        StageStatus::Failed => "failed",
        StageStatus::Destroyed => "destroyed",
    }
}

/// Why the `helm` the Kubernetes stages would run cannot be used (missing, or older than
/// [`MIN_HELM`]), or `Ok` with its version.
async fn helm_version() -> Result<String, String> {
    match HelmCli::from_env(None).version().await {
        Ok(v) if version_at_least(&v, MIN_HELM) => Ok(v),
        Ok(v) => Err(format!(
            "helm {v} is too old; install helm {}.{} or newer \
             (https://helm.sh/docs/intro/install/)",
            MIN_HELM.0, MIN_HELM.1
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Before any API call: the selected stages that install charts need a usable helm, and
/// every chart of the stack a digest to be verified against (a version meshstack pins none
/// for needs the stack's `charts.digests`), so that nothing is built for a run that would
/// stop at its first unverifiable chart.
async fn check_helm(
    stack: &Stack,
    all: &[Box<dyn Stage>],
    selected: &[StageId],
) -> anyhow::Result<()> {
    let users: Vec<StageId> = selected
        .iter()
        .copied()
        .filter(|id| find(all, id).uses_helm())
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    let unverifiable: Vec<String> = stack
        .chart_pins()
        .iter()
        .filter_map(crate::charts::digest_problem)
        .collect();
    if !unverifiable.is_empty() {
        return Err(usage(format!(
            "stack file: {}",
            unverifiable.join("; and ")
        )));
    }
    helm_version().await.map(|_| ()).map_err(|why| {
        usage(format!(
            "stages {} need helm: {why}",
            users
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The zones of the existing cluster `stack` names, from its nodes, checked to run the demo
/// (`stages::kubernetes::existing_zones`). The first connection to it, so a kubeconfig or
/// cluster that does not work is an input error (exit 2) before anything is written.
async fn existing_zones(stack: &Stack) -> anyhow::Result<Vec<Zone>> {
    let cx = Context::new(stack.clone(), None, None, Vec::new(), None);
    let zones = crate::stages::kubernetes::existing_zones(&cx)
        .await
        .map_err(|e| usage(format!("cluster.existing: {e}")))?;
    if !stack.locality.mode.uses_destination_rule() {
        // The stack's kubernetes_version says nothing here: the server's own does.
        let kube = cx.kube().await?;
        let info = kube.client.apiserver_version().await?;
        let minor: String = info
            .minor
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let minor = minor.parse().unwrap_or(0);
        crate::versions::check_traffic_distribution(
            minor,
            stack.istio.version,
            "the existing cluster's API server",
        )
        .map_err(|e| usage(format!("{}: {}", e.field, e.message)))?;
    }
    Ok(zones
        .into_iter()
        .map(|name| Zone {
            name,
            id: String::new(),
        })
        .collect())
}

/// `down` on an existing cluster: its API answers (else exit 2: nothing would be removed, and
/// the cluster stays, so nothing may be skipped as "removed with it").
async fn existing_reachable(stack: &Stack) -> anyhow::Result<()> {
    let cx = Context::new(stack.clone(), None, None, Vec::new(), None);
    let kube = cx
        .kube()
        .await
        .map_err(|e| usage(format!("cluster.existing: {e}")))?;
    kube.client
        .apiserver_version()
        .await
        .map(|_| ())
        .map_err(|e| usage(format!("cluster.existing: the API does not answer: {e}")))
}

/// A read-only context for `stack` with credentials, identity and zones (no journal); on an
/// existing cluster, no AWS and the nodes' zones.
async fn read_only_context(stack: Stack) -> anyhow::Result<Context> {
    if stack.existing_cluster().is_some() {
        let zones = existing_zones(&stack).await?;
        return Ok(Context::new(stack, None, None, zones, None));
    }
    let aws = connect(&stack).await.map_err(usage)?;
    let (identity, zones) = preflight(&aws, &stack).await?;
    Ok(Context::new(stack, Some(aws), Some(identity), zones, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_zones_follow_the_region() {
        let s = Stack::parse("name: t\nzones: 3\n", "t").unwrap();
        let z: Vec<String> = offline_zones(&s, "eu-west-1")
            .into_iter()
            .map(|z| z.name)
            .collect();
        assert_eq!(z, ["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
    }
}
