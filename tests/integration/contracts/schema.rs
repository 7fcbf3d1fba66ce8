//! Custom resources against their CRDs' `openAPIV3Schema`, strictly: a field the schema does
//! not declare is an error, because the API server prunes it without a word.
//!
//! The engine is the JSON Schema validator kube-fake-client's `validation` feature wraps
//! (`jsonschema`, draft 4, the dialect OpenAPI v3 schemas are written in), used directly on the
//! schema in memory. On its own it falls short of the API server in the one way that matters
//! here: JSON Schema admits any property a schema does not forbid, whereas a structural schema
//! prunes every property it does not declare. [`strict`] closes that gap by rewriting the
//! schema the way the API server reads it:
//!
//! - every `type: object` node gets `additionalProperties: false`, unless it keeps unknown
//!   fields (`x-kubernetes-preserve-unknown-fields: true`) or is a map (`additionalProperties`
//!   already set);
//! - `x-kubernetes-embedded-resource` objects and the root also declare `apiVersion`, `kind`
//!   and `metadata` (whose fields are checked as Kubernetes' ObjectMeta, in `core`);
//! - `x-kubernetes-int-or-string` becomes `anyOf: [integer, string]`, `nullable: true` adds
//!   `null` to the type;
//! - properties declared inside `oneOf`/`anyOf`/`allOf`/`not` branches (how Istio's generated
//!   schemas spell protobuf oneofs; structural CRD schemas never do) count as declared.
//!
//! Not checked, and said so in the README: CEL rules (`x-kubernetes-validations`) and `format`
//! (the API server's format list and JSON Schema's differ; none of meshstack's fields has one
//! that matters).

use serde_json::{json, Map, Value};

use super::Violation;

/// A schema node closed as the module doc says, without the root's object header (for schemas
/// that are not a resource's, like Istio's MeshConfig).
pub fn strict_inner(schema: &Value) -> Value {
    let mut schema = schema.clone();
    close(&mut schema);
    schema
}

/// A CRD's `openAPIV3Schema` as the API server applies it (see the module doc).
pub fn strict(schema: &Value) -> Value {
    let mut schema = schema.clone();
    close(&mut schema);
    if let Some(props) = schema
        .as_object_mut()
        .and_then(|o| o.entry("properties").or_insert(json!({})).as_object_mut())
    {
        declare_object_header(props);
    }
    schema
}

fn declare_object_header(props: &mut Map<String, Value>) {
    props.insert("apiVersion".into(), json!({"type": "string"}));
    props.insert("kind".into(), json!({"type": "string"}));
    // ObjectMeta is the API server's, not the CRD's: checked separately, field by field.
    props.insert("metadata".into(), json!({"type": "object"}));
}

fn branch_properties(branch: &Value, out: &mut Map<String, Value>) {
    let Some(obj) = branch.as_object() else {
        return;
    };
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for b in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            branch_properties(b, out);
        }
    }
    if let Some(not) = obj.get("not") {
        branch_properties(not, out);
    }
}

fn close(node: &mut Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let mut lifted = Map::new();
    for key in ["oneOf", "anyOf", "allOf"] {
        for b in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            branch_properties(b, &mut lifted);
        }
    }
    if let Some(not) = obj.get("not") {
        branch_properties(not, &mut lifted);
    }
    if !lifted.is_empty() {
        if let Some(props) = obj.entry("properties").or_insert(json!({})).as_object_mut() {
            for (k, v) in lifted {
                props.entry(k).or_insert(v);
            }
        }
    }
    if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        && !obj.contains_key("type")
        && !obj.contains_key("anyOf")
    {
        obj.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = obj.get("type").cloned() {
            obj.insert("type".into(), json!([t, "null"]));
        }
    }
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(close);
    }
    if let Some(items) = obj.get_mut("items") {
        match items {
            Value::Array(list) => list.iter_mut().for_each(close),
            other => close(other),
        }
    }
    if let Some(ap) = obj.get_mut("additionalProperties") {
        if ap.is_object() {
            close(ap);
        }
    }
    let typed_object = match obj.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => obj.contains_key("properties"),
    };
    let keeps_unknown = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if obj.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
        if let Some(props) = obj.entry("properties").or_insert(json!({})).as_object_mut() {
            declare_object_header(props);
        }
    }
    if typed_object && !keeps_unknown && !obj.contains_key("additionalProperties") {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
}

/// `/spec/template/0/key` -> `spec.template[0].key`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() {
        "(the whole object)".into()
    } else {
        out
    }
}

/// A compiled strict schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles `schema` (already [`strict`] if it should be), whose `$ref`s point into
    /// `root` when given (Istio's `components.schemas`).
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        let validator = jsonschema::draft4::options()
            .should_validate_formats(false)
            .build(schema)
            .map_err(|e| e.to_string())?;
        Ok(Schema { validator })
    }

    /// Every way `value` breaks the schema, as violations of `file`/`object`, with the field
    /// path under `prefix` (e.g. `meshConfig`).
    pub fn check(&self, file: &str, object: &str, prefix: &str, value: &Value) -> Vec<Violation> {
        let join = |field: String| match (prefix.is_empty(), field.as_str()) {
            (true, _) => field,
            (false, "(the whole object)") => prefix.to_owned(),
            (false, f) => format!("{prefix}.{f}"),
        };
        self.validator
            .iter_errors(value)
            .flat_map(|e| {
                let at = e.instance_path().to_string();
                match e.kind() {
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                        unexpected
                            .iter()
                            .map(|name| {
                                Violation::new(
                                    file,
                                    object,
                                    join(field_path(&format!("{at}/{name}"))),
                                    "unknown field: the schema does not declare it",
                                )
                            })
                            .collect::<Vec<_>>()
                    }
                    _ => vec![Violation::new(
                        file,
                        object,
                        join(field_path(&at)),
                        e.to_string(),
                    )],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_closes_objects_but_keeps_maps_and_preserved_fields() {
        let schema = strict(&json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {
                    "a": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "port": {"x-kubernetes-int-or-string": true},
                }}
            }
        }));
        let s = Schema::compile(&schema).unwrap();
        let ok = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n"},
            "spec": {"a": "x", "labels": {"k": "v"}, "free": {"any": 1}, "port": 80}});
        assert!(s.check("f", "X n", "", &ok).is_empty());
        let bad = json!({"spec": {"a": "x", "b": 1, "port": true}});
        let found = s.check("f", "X n", "", &bad);
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"spec.b"), "{found:?}");
        assert!(fields.contains(&"spec.port"), "{found:?}");
    }
}
