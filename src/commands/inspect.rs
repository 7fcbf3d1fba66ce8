//! `meshstack pods` and `meshstack verify`: read the running demo.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load_stack, read_only_context, usage};
use crate::cli::{Output, StackArgs, VerifyArgs};

pub async fn pods(args: StackArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args)?;
    let cx = read_only_context(stack).await?;
    let kube = cx.kube().await.context("connecting to the cluster")?;
    let report = crate::inspect::pods(&kube.client)
        .await
        .context("reading nodes and pods")?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Text => write!(out, "{}", crate::locality::placement::render_text(&report))?,
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args.stack)?;
    let verification = if args.clusters_dump.is_empty() {
        let cx = read_only_context(stack.clone()).await?;
        let kube = cx.kube().await.context("connecting to the cluster")?;
        let http = crate::k8s::pod_http::PortForward {
            client: kube.client.clone(),
            timeout: crate::inspect::HTTP_TIMEOUT,
        };
        let bar = if args.stack.output == Output::Text && args.requests > 0 {
            indicatif::ProgressBar::new(args.requests)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message("sending graphql queries");
        let progress = |done: u64, _total: u64| bar.set_position(done);
        let warn = |message: String| bar.suspend(|| eprintln!("warning: {message}"));
        let result = crate::inspect::verify_live(
            &kube.client,
            &http,
            &stack,
            args.requests,
            &args.query,
            &progress,
            &warn,
        )
        .await;
        bar.finish_and_clear();
        result?
    } else {
        crate::inspect::verify_offline(&args.clusters_dump, &stack, args.bytes_per_request)
            .map_err(|e| match e {
                crate::inspect::VerifyError::Input(_)
                | crate::inspect::VerifyError::Parse { .. } => usage(e),
                other => other.into(),
            })?
    };
    let mut out = std::io::stdout().lock();
    match args.stack.output {
        Output::Text => write!(out, "{}", crate::inspect::render_text(&verification))?,
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&verification)?)?,
    }
    Ok(if verification.report.verdict.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
