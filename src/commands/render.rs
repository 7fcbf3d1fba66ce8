//! `meshstack render`: every manifest and values file, filled in from the stack, offline.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load_stack_path, offline_region, offline_zones, usage};
use crate::config::ZoneSpec;

/// `meshstack render`: every manifest and helm values file the Kubernetes stages apply, filled
/// in from the stack, written under `--out`. Offline and deterministic: the account ID and
/// API endpoint are placeholders unless given, the region comes from the stack or the
/// environment (else us-east-1), and a zone count becomes `<region>a, b, ...`.
pub async fn render(args: crate::cli::RenderArgs) -> anyhow::Result<ExitCode> {
    use crate::render::{self, RenderInputs};

    let stack = load_stack_path(args.stack.as_deref())?;
    let (region, region_defaulted) = offline_region(&stack);
    let zones: Vec<String> = offline_zones(&stack, &region)
        .into_iter()
        .map(|z| z.name)
        .collect();
    let mut notes = Vec::new();
    if region_defaulted {
        notes.push(format!(
            "region {region} (no region in the stack or environment)"
        ));
    }
    if matches!(stack.zones, ZoneSpec::Count(_)) {
        notes.push(format!(
            "zones {} (the first zones by name; `up` asks AWS which zones to use)",
            zones.join(", ")
        ));
    }
    let account_id = args.account_id.clone().unwrap_or_else(|| {
        notes.push(format!(
            "account {} (pass --account-id for real ARNs)",
            render::OFFLINE_ACCOUNT_ID
        ));
        render::OFFLINE_ACCOUNT_ID.to_string()
    });
    let cluster_endpoint = args.endpoint.clone().unwrap_or_else(|| {
        let endpoint = render::offline_endpoint(&stack);
        notes.push(format!(
            "API endpoint {endpoint} (pass --endpoint for the cluster's)"
        ));
        endpoint
    });
    let inputs = RenderInputs {
        partition: render::partition_for_region(&region).to_string(),
        account_id,
        region,
        zones,
        cluster_endpoint,
    };
    let files = render::render(&stack, &inputs).map_err(usage)?;
    if !notes.is_empty() {
        eprintln!("rendering offline, with stand-ins for what only AWS knows:");
        for note in &notes {
            eprintln!("  {note}");
        }
    }
    if let Some(warning) = stack.istio_support_warning() {
        eprintln!("warning: {warning}");
    }

    let mut out = std::io::stdout().lock();
    for file in &files {
        let path = args.out.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.content)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
