//! `meshstack doctor`: credentials, region and the tools the stages need.

use std::process::ExitCode;

use super::{connect, helm_version, load_stack_path};
use crate::aws::account;
use crate::cli::{DoctorArgs, Output};

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut checks: Vec<(bool, &str, String)> = Vec::new();
    let mut report = |good: bool, what: &'static str, detail: String| {
        if args.output == Output::Text {
            println!("{} {what}: {detail}", if good { "ok  " } else { "FAIL" });
        }
        checks.push((good, what, detail));
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
    match helm_version().await {
        Ok(v) => report(true, "helm", v),
        Err(why) => report(false, "helm", why),
    }
    let ok = checks.iter().all(|(good, _, _)| *good);
    if args.output == Output::Json {
        let checks: Vec<_> = checks
            .iter()
            .map(|(good, what, detail)| serde_json::json!({"check": what, "ok": good, "detail": detail}))
            .collect();
        println!("{}", serde_json::json!({"ok": ok, "checks": checks}));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
