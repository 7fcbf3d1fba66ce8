//! The attendees' handout of a fleet (`meshstack fleet handout --out DIR`): one page listing
//! every environment — `index.html`, self-contained (inline CSS, no script, font or image
//! fetched from anywhere), and the same as `README.md` — next to a kubeconfig per
//! environment. Pure: the caller gathers the facts and writes the files.

use std::fmt::Write as _;

use serde::Serialize;

/// One environment on the handout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub env: String,
    pub account: String,
    pub region: String,
    pub cluster: String,
    /// The kubeconfig's path relative to the handout folder; `None` when the cluster has no
    /// API endpoint yet.
    pub kubeconfig: Option<String>,
    /// Whose identity the kubeconfig signs its tokens as, and with what rights (the attendee
    /// role's, or the attendee's own); never the builder's.
    pub identity: Option<String>,
    /// `http://<load balancer>/`, once the ingress gateway has an address.
    pub ingress_url: Option<String>,
    /// (UI, command) to reach Kiali, Jaeger and Grafana.
    pub port_forwards: Vec<(String, String)>,
    /// RFC 3339, if the environment expires.
    pub expires_at: Option<String>,
    /// Why something is missing ("the cluster does not exist yet").
    pub note: Option<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `index.html`: a card per environment, printable, readable on a projector.
pub fn html(title: &str, entries: &[Entry], generated: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n\
         <p class=\"lead\">{} environment{}. Take the one you were given: point kubectl at \
         its kubeconfig (<code>export KUBECONFIG=$PWD/&lt;environment&gt;/kubeconfig</code>) \
         and open the demo at its URL. Each kubeconfig reaches its own cluster only, as the \
         identity its card names, with edit rights there and no AWS permissions; the \
         builder's credentials are in none of them.</p>\n<main>\n",
        esc(title),
        esc(title),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    );
    for e in entries {
        let _ = write!(
            out,
            "<section class=\"env\" id=\"{id}\">\n<h2>{id}</h2>\n<dl>\n\
             <dt>account</dt><dd>{}</dd>\n<dt>region</dt><dd>{}</dd>\n\
             <dt>cluster</dt><dd>{}</dd>\n",
            esc(&e.account),
            esc(&e.region),
            esc(&e.cluster),
            id = esc(&e.env),
        );
        match &e.kubeconfig {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "<dt>kubeconfig</dt><dd><a href=\"{k}\">{k}</a><br>\
                     <code>export KUBECONFIG=$PWD/{k}</code></dd>",
                    k = esc(k)
                );
            }
            None => {
                let _ = writeln!(out, "<dt>kubeconfig</dt><dd class=\"missing\">not yet</dd>");
            }
        }
        if let Some(who) = &e.identity {
            let _ = writeln!(out, "<dt>signs in as</dt><dd>{}</dd>", esc(who));
        }
        match &e.ingress_url {
            Some(u) => {
                let _ = writeln!(
                    out,
                    "<dt>demo</dt><dd><a href=\"{u}\">{u}</a></dd>",
                    u = esc(u)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "<dt>demo</dt><dd class=\"missing\">no ingress address yet</dd>"
                );
            }
        }
        let _ = writeln!(
            out,
            "<dt>expires</dt><dd>{}</dd>",
            e.expires_at.as_deref().map_or("never".to_string(), esc)
        );
        let _ = writeln!(out, "</dl>");
        if !e.port_forwards.is_empty() {
            let _ = writeln!(out, "<h3>Kiali, Jaeger, Grafana</h3>\n<pre>");
            for (_, cmd) in &e.port_forwards {
                let _ = writeln!(out, "{}", esc(cmd));
            }
            let _ = writeln!(out, "</pre>");
        }
        if let Some(n) = &e.note {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(n));
        }
        let _ = writeln!(out, "</section>");
    }
    let _ = write!(
        out,
        "</main>\n<footer>made by meshstack {} at {}</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        esc(generated)
    );
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;background:#fff}\n\
h1{margin:0 0 .5rem}\n.lead{max-width:60rem}\n\
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(26rem,1fr));gap:1rem}\n\
.env{border:1px solid #ccc;border-radius:.5rem;padding:1rem;break-inside:avoid}\n\
.env h2{margin:0 0 .5rem;font-size:1.3rem}\n.env h3{font-size:1rem;margin:.8rem 0 .3rem}\n\
dl{display:grid;grid-template-columns:7rem 1fr;gap:.2rem .6rem;margin:0}\n\
dt{color:#666}\ndd{margin:0;word-break:break-all}\n\
pre{background:#f5f5f5;padding:.5rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}\n\
.missing,.note{color:#a60}\nfooter{margin-top:2rem;color:#888;font-size:.8rem}\n";

/// `README.md`: the same as the page, for a terminal or a repository.
pub fn markdown(title: &str, entries: &[Entry], generated: &str) -> String {
    let mut out = format!(
        "# {title}\n\n{} environment{}. Take the one you were given: point kubectl at its \
         kubeconfig (`export KUBECONFIG=$PWD/<environment>/kubeconfig`) and open the demo at \
         its URL. Each kubeconfig reaches its own cluster only, as the identity its section \
         names; the builder's credentials are in none of them.\n\n| environment | account | region | cluster | demo | expires |\n\
         |---|---|---|---|---|---|\n",
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    );
    for e in entries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            e.env,
            e.account,
            e.region,
            e.cluster,
            e.ingress_url.as_deref().unwrap_or("not yet"),
            e.expires_at.as_deref().unwrap_or("never")
        );
    }
    for e in entries {
        let _ = write!(out, "\n## {}\n\n", e.env);
        match &e.kubeconfig {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "```sh\nexport KUBECONFIG=$PWD/{k}\nkubectl get nodes\n```"
                );
            }
            None => {
                let _ = writeln!(out, "No kubeconfig yet.");
            }
        }
        if let Some(who) = &e.identity {
            let _ = writeln!(out, "\nThe kubeconfig signs in as {who}.");
        }
        if !e.port_forwards.is_empty() {
            let _ = writeln!(out, "\nKiali, Jaeger and Grafana:\n\n```sh");
            for (_, cmd) in &e.port_forwards {
                let _ = writeln!(out, "{cmd}");
            }
            let _ = writeln!(out, "```");
        }
        if let Some(n) = &e.note {
            let _ = writeln!(out, "\n{n}");
        }
    }
    let _ = writeln!(
        out,
        "\n_made by meshstack {} at {generated}_",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(env: &str, ready: bool) -> Entry {
        Entry {
            env: env.into(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            cluster: env.into(),
            kubeconfig: ready.then(|| format!("{env}/kubeconfig")),
            identity: ready.then(|| format!("the attendee role {env}-attendee")),
            ingress_url: ready.then(|| "http://a1b2.elb.amazonaws.com/".to_string()),
            port_forwards: vec![(
                "kiali".into(),
                "kubectl -n istio-system port-forward svc/kiali 20001:20001".into(),
            )],
            expires_at: Some("2026-11-30T18:00:00Z".into()),
            note: (!ready).then(|| "the cluster <does not exist> yet".to_string()),
        }
    }

    #[test]
    fn the_page_lists_every_environment_and_fetches_nothing() {
        let entries = [entry("demo-01", true), entry("demo-02", false)];
        let page = html("Workshop", &entries, "2026-11-30 08:00:00 UTC");
        for e in &entries {
            assert!(page.contains(&format!("<h2>{}</h2>", e.env)), "{page}");
        }
        assert!(page.contains("href=\"demo-01/kubeconfig\""));
        assert!(page.contains("http://a1b2.elb.amazonaws.com/"));
        assert!(page.contains("&lt;does not exist&gt;"), "escaped");
        assert!(page.contains("2026-11-30T18:00:00Z"));
        for external in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!page.contains(external), "{external} in the page");
        }
        let md = markdown("Workshop", &entries, "now");
        assert!(
            md.contains(
                "| demo-01 | 123456789012 | us-east-1 | demo-01 | http://a1b2.elb.amazonaws.com/ |"
            ),
            "{md}"
        );
        assert!(md.contains("## demo-02"));
        assert!(md.contains("export KUBECONFIG=$PWD/demo-01/kubeconfig"));
        assert!(page.contains("signs in as</dt><dd>the attendee role demo-01-attendee"));
        assert!(md.contains("signs in as the attendee role demo-01-attendee"));
    }
}
