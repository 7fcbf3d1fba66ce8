//! What kube's discovery and `apiserver_version` ask an API server, answered the way
//! kube-apiserver does, which kube-fake-client does not (it serves objects only):
//! `/version`, `/api`, `/apis`, and one `APIResourceList` per group-version
//! (`/api/v1`, `/apis/<group>/<version>`), which is all `kube::discovery::pinned_kind` reads.
//!
//! Built-in kinds come from the fake's own table (`kube_fake_client::gen::discovery`). A custom
//! kind is served only while a CustomResourceDefinition for it is stored *and Established*, as
//! on a real cluster: before that, its group-version answers 404 (or lists only the other
//! kinds), and meshstack's resolver reports the kind unknown.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_fake_client::gen::discovery as builtin;
use serde_json::{json, Value};

/// The Kubernetes version the server reports.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "34";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": MAJOR, "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-meshstack-test"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// `(group, version)` pairs, built-in then custom, without duplicates.
fn group_versions(crds: &[CustomResourceDefinition]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let builtins = builtin::list_resources()
        .iter()
        .filter(|(g, ..)| !g.is_empty())
        .map(|(g, v, ..)| (g.to_string(), v.to_string()));
    let custom = crds.iter().filter(|c| is_established(c)).flat_map(|c| {
        c.spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| (c.spec.group.clone(), v.name.clone()))
            .collect::<Vec<_>>()
    });
    for gv in builtins.chain(custom) {
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// `/apis`.
pub fn groups(crds: &[CustomResourceDefinition]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (g, v) in group_versions(crds) {
        match groups.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => groups.push((g, vec![v])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource(name: &str, singular: &str, kind: &str, namespaced: bool) -> Value {
    json!({"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
           "verbs": VERBS})
}

fn subresource(name: &str, kind: &str, namespaced: bool, verbs: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
           "verbs": verbs})
}

/// The `APIResourceList` of `group`/`version` (group `""`: the core group), or `None` when
/// nothing is served there (404).
pub fn resources(group: &str, version: &str, crds: &[CustomResourceDefinition]) -> Option<Value> {
    let mut list = Vec::new();
    for (g, v, kind, plural) in builtin::list_resources() {
        if *g != group || *v != version {
            continue;
        }
        let namespaced = builtin::is_namespaced(g, v, kind).unwrap_or(true);
        let singular = builtin::get_singular(g, v, kind).unwrap_or_default();
        list.push(resource(plural, singular, kind, namespaced));
        for sub in ["status", "portforward"] {
            if builtin::has_subresource(g, v, kind, sub) {
                let verbs: &[&str] = match sub {
                    "status" => &["get", "patch", "update"],
                    _ => &["create", "get"],
                };
                list.push(subresource(
                    &format!("{plural}/{sub}"),
                    kind,
                    namespaced,
                    verbs,
                ));
            }
        }
    }
    for crd in crds
        .iter()
        .filter(|c| is_established(c) && c.spec.group == group)
    {
        let Some(v) = crd
            .spec
            .versions
            .iter()
            .find(|v| v.served && v.name == version)
        else {
            continue;
        };
        let names = &crd.spec.names;
        let namespaced = crd.spec.scope == "Namespaced";
        let singular = names
            .singular
            .clone()
            .unwrap_or_else(|| names.kind.to_lowercase());
        list.push(resource(&names.plural, &singular, &names.kind, namespaced));
        if v.subresources.as_ref().is_some_and(|s| s.status.is_some()) {
            list.push(subresource(
                &format!("{}/status", names.plural),
                &names.kind,
                namespaced,
                &["get", "patch", "update"],
            ));
        }
    }
    if list.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": list}))
}
