//! `meshstack doctor`: credentials, region and the tools the stages need.

use std::process::ExitCode;

use super::{connect, load_stack_path};
use crate::aws::account;
use crate::cli::DoctorArgs;
use crate::k8s::helm::{version_at_least, HelmCli, MIN_HELM};

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    let mut report = |good: bool, what: &str, detail: String| {
        ok &= good;
        println!("{} {what}: {detail}", if good { "ok  " } else { "FAIL" });
    };
    let stack = match load_stack_path(args.stack.as_deref()) {
        Ok(s) => {
            report(true, "stack", format!("`{}`", s.name));
            Some(s)
        }
        Err(e) => {
            report(false, "stack", format!("{e:#}"));
            None
        }
    };
    if let Some(stack) = &stack {
        match connect(stack).await {
            Ok(aws) => {
                report(true, "region", aws.region.clone());
                match account::identify(&aws, stack).await {
                    Ok(id) => report(
                        true,
                        "credentials",
                        format!("{} (account {})", id.arn, id.account),
                    ),
                    Err(e) => report(false, "credentials", e.to_string()),
                }
            }
            Err(e) => report(
                false,
                "credentials",
                format!("{e}; configure them with `aws configure` or AWS_* variables"),
            ),
        }
    }
    match HelmCli::from_env(None).version().await {
        Ok(v) if version_at_least(&v, MIN_HELM) => report(true, "helm", v),
        Ok(v) => report(
            false,
            "helm",
            format!(
                "{v} is too old; install helm {}.{} or newer (https://helm.sh/docs/intro/install/)",
                MIN_HELM.0, MIN_HELM.1
            ),
        ),
        Err(e) => report(
            false,
            "helm",
            format!("{e} — the Kubernetes stages need it"),
        ),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
