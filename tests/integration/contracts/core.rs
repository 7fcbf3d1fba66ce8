//! Kubernetes' own kinds (Namespace, Service, Deployment, ...) against Kubernetes' schema for
//! the stack's version, by a round trip through k8s-openapi's types.
//!
//! Why a round trip and not a schema file: k8s-openapi's types are generated from Kubernetes'
//! OpenAPI spec for one version (the `v1_34` feature here, asserted against the default stack's
//! `kubernetes_version`), so they are that schema, compiled; the crate is already the
//! project's, and there is no second copy of a 1.34 spec to keep in step. Deserializing checks
//! every type (a string where an integer belongs fails, with the field's path from
//! serde_path_to_error); k8s-openapi ignores fields it does not know, as the API server
//! prunes them, so serializing again and comparing finds each unknown field: whatever did not
//! survive. The same check covers ObjectMeta of custom resources and the values a chart
//! passes straight into a pod spec (affinity, resources, nodeSelector).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, Namespace, ResourceRequirements, Service, ServiceAccount, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{join_field, Violation};

/// The Kubernetes minor version k8s-openapi was compiled for.
pub const SCHEMA_VERSION: &str = "1.34";
k8s_openapi::k8s_if_ge_1_35! {
    compile_error!("k8s-openapi's version feature moved: update SCHEMA_VERSION");
}
k8s_openapi::k8s_if_le_1_33! {
    compile_error!("k8s-openapi's version feature moved: update SCHEMA_VERSION");
}

/// Round-trips `value` through `T`: a type error, or each field that did not survive.
pub fn round_trip<T: DeserializeOwned + Serialize>(
    file: &str,
    object: &str,
    prefix: &str,
    value: &Value,
) -> Vec<Violation> {
    let typed: T = match serde_path_to_error::deserialize(value) {
        Ok(t) => t,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            return vec![Violation::new(
                file,
                object,
                join_field(prefix, &field),
                format!(
                    "does not fit Kubernetes {SCHEMA_VERSION}'s schema: {}",
                    e.inner()
                ),
            )];
        }
    };
    let back = serde_json::to_value(&typed).expect("k8s-openapi types serialize");
    let mut out = Vec::new();
    lost(file, object, prefix, value, &back, &mut out);
    out
}

fn lost(
    file: &str,
    object: &str,
    at: &str,
    before: &Value,
    after: &Value,
    out: &mut Vec<Violation>,
) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                if v.is_null() {
                    continue;
                }
                let field = join_field(at, k);
                match a.get(k) {
                    None | Some(Value::Null) => out.push(Violation::new(
                        file,
                        object,
                        field,
                        format!(
                            "unknown field: Kubernetes {SCHEMA_VERSION}'s schema does not have it, \
                             so the API server drops it"
                        ),
                    )),
                    Some(a) => lost(file, object, &field, v, a, out),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, v) in b.iter().enumerate() {
                let field = format!("{at}[{i}]");
                match a.get(i) {
                    Some(a) => lost(file, object, &field, v, a, out),
                    None => out.push(Violation::new(file, object, field, "dropped")),
                }
            }
        }
        (b, a) if b == a => {}
        (Value::Number(b), Value::Number(a)) if b.as_f64() == a.as_f64() => {}
        (b, a) => out.push(Violation::new(
            file,
            object,
            at.to_owned(),
            format!("{b} reads back as {a}"),
        )),
    }
}

/// A Kubernetes type a chart value is passed into.
#[derive(Debug, Clone, Copy)]
pub enum K8sType {
    Affinity,
    Resources,
    NodeSelector,
    Tolerations,
}

/// Checks `value` as a `ty`.
pub fn check_typed(
    file: &str,
    object: &str,
    field: &str,
    ty: K8sType,
    value: &Value,
) -> Vec<Violation> {
    type Selector = std::collections::BTreeMap<String, String>;
    match ty {
        K8sType::Affinity => round_trip::<Affinity>(file, object, field, value),
        K8sType::Resources => round_trip::<ResourceRequirements>(file, object, field, value),
        K8sType::NodeSelector => round_trip::<Selector>(file, object, field, value),
        K8sType::Tolerations => round_trip::<Vec<Toleration>>(file, object, field, value),
    }
}

/// Whether meshstack renders `apiVersion`/`kind` as a core (non-custom) kind.
pub fn is_core(api_version: &str) -> bool {
    !api_version.contains('.') || api_version.starts_with("apps/")
}

/// Checks a core object against its k8s-openapi type.
pub fn check_object(file: &str, object: &str, value: &Value) -> Vec<Violation> {
    let kind = (
        value["apiVersion"].as_str().unwrap_or(""),
        value["kind"].as_str().unwrap_or(""),
    );
    match kind {
        ("v1", "Namespace") => round_trip::<Namespace>(file, object, "", value),
        ("v1", "Service") => round_trip::<Service>(file, object, "", value),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(file, object, "", value),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(file, object, "", value),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(file, object, "", value),
        (api, kind) => vec![Violation::new(
            file,
            object,
            "kind",
            format!(
                "{api} {kind}: the contract tests know no schema for this kind; add its \
                 k8s-openapi type to contracts::core::check_object"
            ),
        )],
    }
}

/// Checks a custom resource's `metadata` as ObjectMeta (CRDs leave it to the API server).
pub fn check_metadata(file: &str, object: &str, value: &Value) -> Vec<Violation> {
    match value.get("metadata") {
        Some(meta) => round_trip::<ObjectMeta>(file, object, "metadata", meta),
        None => vec![Violation::new(file, object, "metadata", "missing")],
    }
}
