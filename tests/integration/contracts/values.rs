//! Helm values meshstack sets against the pinned chart's defaults: helm ignores a key the
//! chart does not read, so a misspelt key is a setting silently not made.
//!
//! A key must exist at its path in the chart's `values.yaml` (for kube-prometheus-stack, with
//! each subchart's defaults merged under its key, as helm merges them), and a scalar must be
//! of the default's kind (a number stays a number). The walk stops, accepting what is below:
//!
//! - at a map the chart documents as free-form by defaulting it to `{}` (annotations, labels);
//! - at a key documented without a default (`key:` followed by comments only);
//! - at a list (helm replaces a list whole; what it holds is the template's business);
//! - at an entry of the chart's explicit allow-list ([`Chart::free_form`], each with why).
//!
//! Values the chart hands straight to a pod spec (affinity, resources, nodeSelector,
//! tolerations) are checked as those Kubernetes types instead ([`Chart::typed`]), and Istio's
//! `meshConfig` against the MeshConfig schema of the pinned Istio API ([`Chart::schemas`]). A
//! chart with a `values.schema.json` (Istio's gateway) is also checked against it, as helm
//! checks it on install.

use serde_json::Value;

use super::core::{check_typed, K8sType};
use super::schema::Schema;
use super::{join_field, Violation};

/// What one chart accepts.
pub struct Chart {
    /// For messages: the chart and version, like `karpenter 1.8.1`.
    pub name: String,
    /// The chart's defaults (subcharts merged in).
    pub defaults: Value,
    /// Paths (dotted) below which anything goes, with the reason.
    pub free_form: Vec<(&'static str, &'static str)>,
    /// Paths whose value is a Kubernetes type.
    pub typed: Vec<(&'static str, K8sType)>,
    /// Paths whose value is checked against a schema instead of the defaults.
    pub schemas: Vec<(&'static str, Schema)>,
    /// The chart's own values.schema.json, which helm enforces, if it has one.
    pub values_schema: Option<Schema>,
}

/// `defaults` with a subchart's defaults `sub` merged under `key`, as helm merges them: what
/// the parent sets under `key` wins over the subchart's own default.
pub fn merge_subchart(defaults: &mut Value, key: &str, sub: Value) {
    fn overlay(base: &mut Value, top: Value) {
        match (base, top) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(existing) => overlay(existing, v),
                        None => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (base, top) => *base = top,
        }
    }
    let slot = defaults
        .as_object_mut()
        .expect("chart defaults are a mapping")
        .entry(key.to_owned())
        .or_insert(Value::Null);
    let mut merged = sub;
    if !slot.is_null() {
        overlay(&mut merged, slot.take());
    }
    *slot = merged;
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

impl Chart {
    /// Every key of `values` (the rendered `file`) the chart would not read.
    pub fn check(&self, file: &str, values: &Value) -> Vec<Violation> {
        let object = format!("values for {}", self.name);
        let mut out = Vec::new();
        if let Some(schema) = &self.values_schema {
            out.extend(schema.check(file, &object, "", values));
        }
        self.walk(file, &object, "", values, &self.defaults, &mut out);
        out
    }

    fn walk(
        &self,
        file: &str,
        object: &str,
        at: &str,
        value: &Value,
        default: &Value,
        out: &mut Vec<Violation>,
    ) {
        if let Some((_, ty)) = self.typed.iter().find(|(p, _)| *p == at) {
            out.extend(check_typed(file, object, at, *ty, value));
            return;
        }
        if let Some((_, schema)) = self.schemas.iter().find(|(p, _)| *p == at) {
            out.extend(schema.check(file, object, at, value));
            return;
        }
        if self.free_form.iter().any(|(p, _)| *p == at) {
            return;
        }
        match (value, default) {
            (_, Value::Null) => {}
            // A `{}` default: a free-form map.
            (Value::Object(_), Value::Object(known)) if known.is_empty() => {}
            (Value::Object(set), Value::Object(known)) => {
                for (k, v) in set {
                    let field = join_field(at, k);
                    match known.get(k) {
                        Some(d) => self.walk(file, object, &field, v, d, out),
                        None => out.push(Violation::new(
                            file,
                            object,
                            field,
                            format!(
                                "unknown key: {} has no such value (helm ignores it); its \
                                 keys here are {}",
                                self.name,
                                known.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        )),
                    }
                }
            }
            (Value::Array(_), Value::Array(_)) => {}
            (Value::Object(_) | Value::Array(_), d)
            | (_, d @ (Value::Object(_) | Value::Array(_))) => out.push(Violation::new(
                file,
                object,
                at.to_owned(),
                format!("{} where {} has {}", kind_of(value), self.name, kind_of(d)),
            )),
            (v, d) if kind_of(v) == kind_of(d) => {}
            (v, d) => out.push(Violation::new(
                file,
                object,
                at.to_owned(),
                format!(
                    "{} where {} has {} ({d})",
                    kind_of(v),
                    self.name,
                    kind_of(d)
                ),
            )),
        }
    }
}
