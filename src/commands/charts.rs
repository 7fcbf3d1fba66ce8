//! `meshstack charts mirror DIR`: the charts a stack installs (or every chart version meshstack
//! pins) pulled into a folder that any static web server serves as a helm repository, each
//! checked against its pin exactly as `up` checks it. For a workshop venue whose internet
//! should not carry thirty environments' chart pulls, a host with no internet, or the tests of
//! a clone with nothing beside it.
//!
//! A re-run with nothing to do changes nothing: an archive already in the folder with its
//! pinned digest is kept without a pull, a pulled archive with the bytes already there is not
//! rewritten, and `index.yaml` is rewritten only when it no longer describes the folder's
//! archives (helm stamps every index with the time it was made).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::{load_stack_path, usage};
use crate::charts::{self, Pin};
use crate::cli::{ChartsMirrorArgs, Output};
use crate::files;
use crate::k8s::helm::{self, HelmCli, HelmError};

/// What happened to one chart version.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Outcome {
    /// Already in the folder with its pinned digest: not pulled.
    Kept,
    /// Pulled, and its bytes are the pin's.
    Pulled,
    /// Other bytes than a pin that is not enforced (one of meshstack's rebuilds): in the
    /// folder, as `up` would install it, with a warning. Pulled when the folder had no
    /// archive for it; one already there is kept (a re-pull could verify it no better).
    Unverified,
    /// Not in the folder: the repository failed, or served other bytes than an enforced pin.
    Refused,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    pin: Pin,
    file: PathBuf,
    /// The archive's sha256 (`sha256:<hex>`) as it is in the folder; none when refused.
    sha256: Option<String>,
    outcome: Outcome,
    /// Whether it was pulled from its repository this time.
    pulled: bool,
    /// Whether the archive in the folder changed.
    written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

/// `meshstack charts mirror`.
///
/// # Errors
/// The stack cannot be loaded, a chart has no pin, helm is missing, or the folder cannot be
/// made or written.
pub async fn charts_mirror(args: ChartsMirrorArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack_path(args.stack.as_deref())?;
    let mut pins: BTreeMap<(String, String), Pin> = stack
        .chart_pins()
        .into_iter()
        .map(|p| ((p.chart.clone(), p.version.clone()), p))
        .collect();
    if args.every_pinned_version {
        for known in charts::DIGESTS {
            pins.entry((known.chart.into(), known.version.into()))
                .or_insert_with(|| stack.chart_pin_at(known.chart, known.version));
        }
    }
    if let Some(why) = pins.values().find_map(charts::digest_problem) {
        return Err(usage(why));
    }
    let dir = args.dir.clone();
    files::own_dir(&dir, 0o755)
        .with_context(|| format!("cannot use {} as the mirror folder", dir.display()))?;
    let helm = HelmCli::from_env(None);
    helm.version().await.map_err(|e| {
        anyhow::anyhow!("helm pulls the charts and writes the index, and it cannot run: {e}")
    })?;

    let text = args.output == Output::Text;
    let pulls = pins.into_values().map(|pin| mirror_one(&helm, &dir, pin));
    let reports = futures::future::join_all(pulls).await;
    for r in reports.iter().filter(|_| text) {
        let what = format!(
            "{} {} from {}",
            r.pin.chart, r.pin.version, r.pin.repository
        );
        let verb = match (r.pulled, r.written) {
            (false, _) => "kept       ",
            (true, true) => "pulled     ",
            (true, false) => "unchanged  ",
        };
        match r.outcome {
            Outcome::Kept | Outcome::Pulled => {
                println!("{verb}{what}: {} (its pin)", r.file.display());
            }
            Outcome::Unverified => println!("{verb}{what}: {} (UNVERIFIED)", r.file.display()),
            Outcome::Refused => println!("REFUSED    {what}"),
        }
    }
    for r in &reports {
        if let Some(why) = &r.why {
            let level = match r.outcome {
                Outcome::Refused => "error",
                _ => "warning",
            };
            eprintln!("{level}: {why}");
        }
    }

    let index = write_index(&helm, &dir).await?;
    let refused = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Refused))
        .count();
    if text {
        println!(
            "index.yaml: {} ({} chart archives in {})",
            if index.written {
                "written"
            } else {
                "up to date"
            },
            index.archives,
            dir.display()
        );
        if refused == 0 {
            println!(
                "serve {} with any static web server (e.g. `python3 -m http.server --directory \
                 {}`) and set `charts.mirror: http://HOST:PORT/` in the stack, or \
                 MESHSTACK_CHART_MIRROR",
                dir.display(),
                dir.display()
            );
        }
    } else {
        let out = serde_json::json!({
            "dir": dir,
            "charts": reports,
            "index": { "written": index.written, "archives": index.archives },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if refused > 0 {
        eprintln!(
            "error: {refused} chart version(s) are not in the mirror (above: which, and why)"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One chart version into `dir`: kept when its archive is there with the pinned digest (or
/// with any digest, when the pin is not enforced), else pulled through
/// [`HelmCli::fetch_verified`] (what `up` installs) and written unless the same bytes are
/// there already.
async fn mirror_one(helm: &HelmCli, dir: &Path, pin: Pin) -> Report {
    let file = dir.join(format!("{}-{}.tgz", pin.chart, pin.version));
    let present = regular_file(&file)
        .then(|| helm::sha256_file(&file).ok())
        .flatten();
    let report = |outcome, sha256: Option<String>, pulled, written, why| Report {
        pin: pin.clone(),
        file: file.clone(),
        sha256: sha256.map(|h| format!("sha256:{h}")),
        outcome,
        pulled,
        written,
        why,
    };
    let enforced = pin.clone().chart().digest_enforced;
    match (&present, &pin.digest) {
        (Some(sha), Some(want)) if sha == want => {
            return report(Outcome::Kept, present, false, false, None);
        }
        (Some(sha), Some(want)) if !enforced => {
            let why = unverified(&pin, sha, want);
            return report(Outcome::Unverified, present, false, false, Some(why));
        }
        _ => {}
    }
    let refused = |why: String| report(Outcome::Refused, None, true, false, Some(why));
    let scratch = match helm::private_dir() {
        Ok(d) => d,
        Err(e) => return refused(format!("cannot make a private folder to pull into: {e}")),
    };
    let fetched = match helm
        .fetch_verified(&pin.clone().chart(), scratch.path())
        .await
    {
        Ok(f) => f,
        Err(HelmError::DigestMismatch(m)) => return refused(m.to_string()),
        Err(e) => return refused(format!("chart {pin}: {e}")),
    };
    let (bytes, sha) = match std::fs::read(&fetched.archive)
        .and_then(|b| helm::sha256_file(&fetched.archive).map(|h| (b, h)))
    {
        Ok(read) => read,
        Err(e) => return refused(format!("cannot read the pulled {pin}: {e}")),
    };
    let written = present.as_deref() != Some(sha.as_str());
    if written {
        if let Err(e) = files::write_file(&file, &bytes, 0o644) {
            return refused(format!("cannot write {}: {e}", file.display()));
        }
    }
    match (fetched.unverified, &pin.digest) {
        (Some(_), Some(want)) => {
            let why = unverified(&pin, &sha, want);
            report(Outcome::Unverified, Some(sha), true, written, Some(why))
        }
        _ => report(Outcome::Pulled, Some(sha), true, written, None),
    }
}

/// The warning for an archive in the mirror whose bytes (`found`, hex) are not its rebuild
/// pin's (`expected`, hex).
fn unverified(pin: &Pin, found: &str, expected: &str) -> String {
    format!(
        "chart {} {} from {} is in the mirror unverified: it is sha256:{found}, and meshstack's \
         pin (sha256:{expected}) is the digest of its own rebuild of the chart, not of the \
         archive upstream published; `up` installs it from the mirror with the same warning, \
         unless the stack pins it (`charts.digests.{}: sha256:{found}`)",
        pin.chart, pin.version, pin.repository, pin.chart
    )
}

fn regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

struct Index {
    written: bool,
    archives: usize,
}

/// `dir/index.yaml` for every chart archive in `dir` (regular files named `*.tgz`), made by
/// `helm repo index` in a private copy and written through a rename; left alone when it lists
/// exactly those archives with their digests already.
async fn write_index(helm: &HelmCli, dir: &Path) -> anyhow::Result<Index> {
    let mut archives = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".tgz") && !name.starts_with('.') && regular_file(&path) {
            archives.insert(name.into_owned(), helm::sha256_file(&path)?);
        }
    }
    let index_path = dir.join("index.yaml");
    if std::fs::read_to_string(&index_path)
        .ok()
        .is_some_and(|text| indexed(&text) == Some(archives.clone()))
    {
        return Ok(Index {
            written: false,
            archives: archives.len(),
        });
    }
    let staging = helm::private_dir().context("cannot make a private folder for the index")?;
    for name in archives.keys() {
        std::fs::copy(dir.join(name), staging.path().join(name))
            .with_context(|| format!("cannot copy {name} to index it"))?;
    }
    helm.repo_index(staging.path())
        .await
        .context("helm could not index the mirror")?;
    let text =
        std::fs::read(staging.path().join("index.yaml")).context("helm wrote no index.yaml")?;
    files::write_file(&index_path, &text, 0o644)
        .with_context(|| format!("cannot write {}", index_path.display()))?;
    Ok(Index {
        written: true,
        archives: archives.len(),
    })
}

/// The archives an index lists, file name -> digest, when each entry names one relative URL.
fn indexed(text: &str) -> Option<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct IndexFile {
        entries: BTreeMap<String, Vec<Entry>>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        urls: Vec<String>,
        digest: String,
    }
    let index: IndexFile = serde_yaml::from_str(text).ok()?;
    let mut out = BTreeMap::new();
    for entry in index.entries.into_values().flatten() {
        let [url] = entry.urls.as_slice() else {
            return None;
        };
        if url.contains('/') || out.insert(url.clone(), entry.digest).is_some() {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::indexed;

    #[test]
    fn an_index_is_read_as_file_to_digest_and_refused_when_it_points_elsewhere() {
        let text = "apiVersion: v1\nentries:\n  base:\n  - name: base\n    version: 1.18.7\n    \
                    digest: abc\n    urls:\n    - base-1.18.7.tgz\n  istiod:\n  - digest: def\n    \
                    urls:\n    - istiod-1.18.7.tgz\ngenerated: \"2026-12-07T00:00:00Z\"\n";
        let got = indexed(text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["base-1.18.7.tgz"], "abc");
        assert_eq!(got["istiod-1.18.7.tgz"], "def");
        let absolute = text.replace("- base-1.18.7.tgz", "- https://example.com/base-1.18.7.tgz");
        assert_eq!(indexed(&absolute), None);
        assert_eq!(indexed("not: [an index"), None);
    }
}
