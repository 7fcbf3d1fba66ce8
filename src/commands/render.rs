//! `meshstack render`: every manifest, values file and IAM document, filled in from the stack,
//! offline.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load_stack_path, offline_region, offline_zones, usage};
use crate::config::ZoneSpec;
use crate::policies;

/// The OIDC issuer `render` names in the Karpenter role's IRSA trust: EKS gives each cluster
/// its own (`https://oidc.eks.<region>.amazonaws.com/id/<32 hex digits>`), known only once the
/// cluster exists, so offline the ID is all zeros.
pub fn offline_oidc_issuer(region: &str, partition: &str) -> String {
    let suffix = match partition {
        "aws-cn" => "amazonaws.com.cn",
        _ => "amazonaws.com",
    };
    format!("https://oidc.eks.{region}.{suffix}/id/{}", "0".repeat(32))
}

/// `meshstack render`: every manifest and helm values file the Kubernetes stages apply, filled
/// in from the stack, written under `--out`, and every IAM document the AWS stages write
/// (trust policies, the Karpenter controller policy, the interruption queue's policy) as
/// `iam/<name>.json`, for a person to audit before `up`. Offline and deterministic: the
/// account ID, API endpoint and OIDC issuer are placeholders unless given, the region comes
/// from the stack or the environment (else us-east-1), and a zone count becomes
/// `<region>a, b, ...`.
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
    let partition = render::partition_for_region(&region);
    let issuer = offline_oidc_issuer(&region, partition);
    notes.push(format!(
        "OIDC issuer {issuer} (in the Karpenter role's trust; `up` uses the cluster's)"
    ));
    let inputs = RenderInputs {
        partition: partition.to_string(),
        account_id,
        region,
        zones,
        cluster_endpoint,
    };
    let mut files = render::render(&stack, &inputs).map_err(usage)?;
    files.extend(iam_documents(&stack, &inputs, &issuer));
    let json = args.output == crate::cli::Output::Json;
    if !notes.is_empty() && !json {
        eprintln!("rendering offline, with stand-ins for what only AWS knows:");
        for note in &notes {
            eprintln!("  {note}");
        }
    }
    if let Some(warning) = stack.istio_support_warning() {
        eprintln!("warning: {warning}");
    }

    crate::files::private_dir(&args.out)
        .with_context(|| format!("--out {}", args.out.display()))?;
    let mut out = std::io::stdout().lock();
    let mut written = Vec::new();
    for file in &files {
        let path = args.out.join(&file.path);
        if let Some(parent) = path.parent() {
            crate::files::private_dir(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::files::write_file(&path, file.content.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        if json {
            written.push(path.display().to_string());
        } else {
            writeln!(out, "{}", path.display())?;
        }
    }
    if json {
        let doc = serde_json::json!({
            "stack": stack.name,
            "files": written,
            "stand_ins": notes,
            "warnings": stack.istio_support_warning().into_iter().collect::<Vec<_>>(),
        });
        writeln!(out, "{doc}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every IAM document meshstack writes for the stack ([`policies::all`]), as
/// `iam/<name>.json`: pretty-printed JSON with a final newline (keys sorted, so the output is
/// deterministic).
fn iam_documents(
    stack: &crate::config::Stack,
    inputs: &crate::render::RenderInputs,
    issuer: &str,
) -> Vec<crate::render::RenderedFile> {
    let scope = policies::Scope {
        partition: &inputs.partition,
        region: &inputs.region,
        account: &inputs.account_id,
    };
    policies::all(stack, scope, issuer)
        .into_iter()
        .map(|doc| crate::render::RenderedFile {
            path: format!("iam/{}.json", doc.name),
            content: format!(
                "{}\n",
                serde_json::to_string_pretty(&doc.document)
                    .expect("a serde_json::Value always serializes")
            ),
        })
        .collect()
}
