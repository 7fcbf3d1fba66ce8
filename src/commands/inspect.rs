//! `meshstack pods` and `meshstack verify`: read the running demo, and draw it (`--html`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load_stack_path, quiet, read_only_context, usage};
use crate::cli::{Output, PodsArgs, VerifyArgs};
use crate::config::Stack;
use crate::inspect::PageMeta;

pub async fn pods(args: PodsArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack_path(args.stack.stack.as_deref())?;
    check_page_path(args.html.as_deref())?;
    let cx = read_only_context(stack.clone()).await?;
    let kube = cx.kube().await.context("connecting to the cluster")?;
    let report = crate::inspect::pods(&kube.client)
        .await
        .context("reading nodes and pods")?;
    let page_to_stdout = args.html.as_deref() == Some(Path::new("-"));
    if let Some(path) = &args.html {
        let region = region(&stack);
        let page = crate::inspect::pods_page(
            &report,
            PageMeta {
                stack: &stack.name,
                region: region.as_deref(),
                measured_at: &now_utc(),
            },
        );
        write_page(path, &page)?;
    }
    if !page_to_stdout {
        let mut out = std::io::stdout().lock();
        match args.stack.output {
            Output::Text => write!(out, "{}", crate::locality::placement::render_text(&report))?,
            Output::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack_path(args.stack.stack.as_deref())?;
    check_page_path(args.html.as_deref())?;
    let verification = if args.clusters_dump.is_empty() {
        let cx = read_only_context(stack.clone()).await?;
        let kube = cx.kube().await.context("connecting to the cluster")?;
        let http = crate::k8s::pod_http::PortForward {
            client: kube.client.clone(),
            timeout: crate::inspect::HTTP_TIMEOUT,
        };
        let total = args.requests + args.orders_products;
        let bar = if args.stack.output == Output::Text && total > 0 && !quiet() {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message("sending requests");
        let progress = |done: u64, _total: u64| bar.set_position(done);
        let warn = |message: String| bar.suspend(|| eprintln!("warning: {message}"));
        let result = crate::inspect::verify_live(
            &kube.client,
            &http,
            &stack,
            crate::inspect::Load {
                requests: args.requests,
                query: &args.query,
                orders_products: args.orders_products,
            },
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
    let page_to_stdout = args.html.as_deref() == Some(Path::new("-"));
    if let Some(path) = &args.html {
        let region = region(&stack);
        let page = crate::inspect::verify_page(
            &verification,
            PageMeta {
                stack: &stack.name,
                region: region.as_deref(),
                measured_at: &now_utc(),
            },
        );
        write_page(path, &page)?;
    }
    let pass = verification.report.verdict.pass;
    if page_to_stdout {
        // The page is the result; the verdict still reaches a person.
        eprintln!("verdict: {}", if pass { "PASS" } else { "FAIL" });
    } else {
        let mut out = std::io::stdout().lock();
        match args.stack.output {
            Output::Text => write!(
                out,
                "{}",
                crate::inspect::render_text(&verification, color(&out))
            )?,
            Output::Json => writeln!(out, "{}", serde_json::to_string(&verification)?)?,
        }
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything non-empty.
fn color(out: &impl IsTerminal) -> bool {
    out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The stack's region, else the environment's.
pub(super) fn region(stack: &Stack) -> Option<String> {
    stack
        .region()
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
}

/// A page path whose folder does not exist is bad input, found before anything is measured.
pub(super) fn check_page_path(path: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = path.filter(|p| *p != Path::new("-")) else {
        return Ok(());
    };
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(usage(format!(
            "--html {}: folder {} does not exist; create it or pass another path (`-` for \
             stdout)",
            path.display(),
            folder.display()
        )));
    }
    Ok(())
}

/// `-` is stdout; anything else a file, replaced whole.
pub(super) fn write_page(path: &Path, page: &str) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(page.as_bytes())?;
        return Ok(out.flush()?);
    }
    crate::files::write_file(path, page.as_bytes(), 0o644)
        .with_context(|| format!("writing the page to {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Now, as the page's footer prints it.
pub(super) fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = crate::clock::utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}
