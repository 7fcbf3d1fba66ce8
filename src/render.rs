//! The Kubernetes manifests and helm values files meshstack applies, with the stack's values
//! filled in: what `meshstack render` writes and what the Kubernetes stages apply.
//!
//! The templates are the repository's own files (`karpenter/`, `observability/`,
//! `stacks/istio/`, `stacks/ecommerce/`), embedded at build time so the binary works outside
//! a checkout. A template names a value as `${NAME}`; [`render`] replaces every placeholder
//! from one table built from the stack and the [`RenderInputs`], and refuses anything it
//! cannot fill (an unknown name, a malformed `${`), so no placeholder ever reaches a cluster.
//! Values are restricted to characters that cannot change a YAML document's structure, and
//! every rendered file is parsed before it is returned.
//!
//! The same module decides which Karpenter API the stack gets, by `karpenter.version`, and
//! refuses Karpenter/Kubernetes pairs that cannot work (see [`crate::versions`]).
//!
//! Rendering is pure and deterministic: the same stack and inputs give byte-identical files
//! in the same order.

use std::collections::BTreeMap;

use crate::config::Stack;
use crate::locality::policy::{self, PolicyError};
use crate::names::{self, Role};
use crate::versions::KarpenterApi;

/// Account ID `meshstack render` uses unless given one: renders offline, without credentials.
pub const OFFLINE_ACCOUNT_ID: &str = "000000000000";

/// The API server endpoint `meshstack render` uses unless given one: the reserved `.invalid`
/// top-level domain, so the placeholder can never resolve.
pub fn offline_endpoint(stack: &Stack) -> String {
    format!("https://{}.example.invalid", stack.cluster_name())
}

/// Every template, by its path in the repository, in the order the stages apply them.
const TEMPLATES: &[(&str, &str)] = &[
    (KARPENTER_VALUES, include_str!("../karpenter/values.yaml")),
    (
        "karpenter/ec2nodeclass.yaml",
        include_str!("../karpenter/ec2nodeclass.yaml"),
    ),
    (
        "karpenter/nodepool.yaml",
        include_str!("../karpenter/nodepool.yaml"),
    ),
    (
        "karpenter/provisioner.yaml",
        include_str!("../karpenter/provisioner.yaml"),
    ),
    (
        "observability/prometheus-values.yaml",
        include_str!("../observability/prometheus-values.yaml"),
    ),
    (
        "observability/monitoring.yaml",
        include_str!("../observability/monitoring.yaml"),
    ),
    (
        "stacks/istio/base-values.yaml",
        include_str!("../stacks/istio/base-values.yaml"),
    ),
    (
        "stacks/istio/istiod-values.yaml",
        include_str!("../stacks/istio/istiod-values.yaml"),
    ),
    (
        "stacks/istio/gateway-values.yaml",
        include_str!("../stacks/istio/gateway-values.yaml"),
    ),
    (
        "observability/jaeger.yaml",
        include_str!("../observability/jaeger.yaml"),
    ),
    (
        "observability/kiali-operator-values.yaml",
        include_str!("../observability/kiali-operator-values.yaml"),
    ),
    (
        "observability/kiali.yaml",
        include_str!("../observability/kiali.yaml"),
    ),
    (
        "stacks/ecommerce/namespace.yaml",
        include_str!("../stacks/ecommerce/namespace.yaml"),
    ),
    (
        "stacks/ecommerce/graphql.yaml",
        include_str!("../stacks/ecommerce/graphql.yaml"),
    ),
    (
        "stacks/ecommerce/orders.yaml",
        include_str!("../stacks/ecommerce/orders.yaml"),
    ),
    (
        "stacks/ecommerce/products.yaml",
        include_str!("../stacks/ecommerce/products.yaml"),
    ),
    (
        "stacks/ecommerce/gateway.yaml",
        include_str!("../stacks/ecommerce/gateway.yaml"),
    ),
    (
        "stacks/ecommerce/virtual-services.yaml",
        include_str!("../stacks/ecommerce/virtual-services.yaml"),
    ),
    (
        ORDERS_DESTINATION_RULE,
        include_str!("../stacks/locality/orders-destination-rule.yaml"),
    ),
    (
        PRODUCTS_TRAFFIC_POLICY,
        include_str!("../stacks/locality/products-traffic-policy.yaml"),
    ),
    (
        TRAFFIC_DISTRIBUTION,
        include_str!("../stacks/locality/traffic-distribution.yaml"),
    ),
];

/// The orders DestinationRule, whose locality setting is generated from the zones.
pub const ORDERS_DESTINATION_RULE: &str = "stacks/locality/orders-destination-rule.yaml";
/// products-service's `internalTrafficPolicy: Local`, a partial object.
pub const PRODUCTS_TRAFFIC_POLICY: &str = "stacks/locality/products-traffic-policy.yaml";
/// `locality.mode: traffic-distribution`: the `trafficDistribution` of orders-service and
/// products-service, partial objects.
pub const TRAFFIC_DISTRIBUTION: &str = "stacks/locality/traffic-distribution.yaml";

const KARPENTER_VALUES: &str = "karpenter/values.yaml";
const KARPENTER_V1: [&str; 2] = ["karpenter/ec2nodeclass.yaml", "karpenter/nodepool.yaml"];
const KARPENTER_V1ALPHA5: [&str; 1] = ["karpenter/provisioner.yaml"];

/// What `render` needs besides the stack: facts about the account and the cluster that only
/// AWS knows (or that `meshstack render` defaults offline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderInputs {
    /// 12-digit AWS account ID (for the Karpenter controller role's ARN).
    pub account_id: String,
    /// AWS region, like `us-east-1`.
    pub region: String,
    /// ARN partition: `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The cluster's availability zones, in order; the NodePool may launch in exactly these
    /// and the orders locality rule is generated for them (the `locality` stage passes the
    /// zones the app really runs in).
    pub zones: Vec<String>,
    /// The EKS API server endpoint, `https://...`.
    pub cluster_endpoint: String,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// The template's path in the repository, like `karpenter/nodepool.yaml`; also where
    /// `meshstack render` writes it under `--out`.
    pub path: String,
    /// The file, every placeholder filled in.
    pub content: String,
}

impl RenderedFile {
    /// Helm values (`*values.yaml`) rather than Kubernetes objects.
    pub fn is_helm_values(&self) -> bool {
        self.path.ends_with("values.yaml")
    }
}

/// Why the stack cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// One of the [`RenderInputs`] is malformed.
    #[error("{what}: {message}")]
    Input {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A template names a placeholder that has no value.
    #[error("{file}, line {line}: unknown placeholder ${{{name}}}; the known ones are {known}")]
    UnknownPlaceholder {
        /// The template's path.
        file: String,
        /// 1-based line.
        line: usize,
        /// The name between `${` and `}`.
        name: String,
        /// Every name that has a value, comma-separated.
        known: String,
    },
    /// `${` that does not start a well-formed `${NAME}`.
    #[error(
        "{file}, line {line}: `${{` does not start a placeholder like ${{CLUSTER_NAME}} \
         (upper-case letters, digits and _ between the braces)"
    )]
    Malformed {
        /// The template's path.
        file: String,
        /// 1-based line.
        line: usize,
    },
    /// A value holds characters that could change the YAML it is put into.
    #[error(
        "the value {value:?} for ${{{name}}} may contain only letters, digits and . _ : / @ + -"
    )]
    UnsafeValue {
        /// The placeholder.
        name: &'static str,
        /// The offending value.
        value: String,
    },
    /// No locality rule can be generated for the zones.
    #[error("orders locality rule: {0}")]
    Locality(#[from] PolicyError),
    /// A rendered file does not parse as YAML: a bug in a template.
    #[error("{file}: the rendered file is not valid YAML: {message}")]
    Yaml {
        /// The template's path.
        file: String,
        /// What the YAML parser said.
        message: String,
    },
}

/// A placeholder's value: a scalar is inserted as is, a list as a YAML flow sequence of
/// double-quoted strings, like `["us-east-1a", "us-east-1b"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Inserted verbatim; templates quote it where YAML would otherwise retype it.
    Scalar(String),
    /// Inserted as `["a", "b"]`.
    List(Vec<String>),
    /// A structure meshstack generated, inserted as one line of JSON, which YAML reads as a
    /// flow node; serde_json quotes and escapes every string, so it cannot change the
    /// surrounding document's structure.
    Json(serde_json::Value),
}

/// The Kiali CR's `spec.deployment` for the stack's Kiali: the namespaces Kiali may see and
/// where it runs. Kiali 2 removed `accessible_namespaces` (kiali-operator 2.x CRD docs:
/// `cluster_wide_access: false` with `discovery_selectors` instead), so the shape follows the
/// kiali-operator the stack's Istio gets ([`crate::versions::kiali_operator`]).
fn kiali_deployment(stack: &Stack) -> serde_json::Value {
    let kiali =
        crate::versions::kiali_operator(stack.istio.version).expect("validated with the stack");
    let node_selector = serde_json::json!({"meshstack.io/pool": "system"});
    if kiali.major >= 2 {
        serde_json::json!({
            "cluster_wide_access": false,
            "discovery_selectors": {"default": [
                {"matchLabels": {"kubernetes.io/metadata.name": names::namespace::APP}}
            ]},
            "node_selector": node_selector,
        })
    } else {
        serde_json::json!({
            "accessible_namespaces": [names::namespace::APP],
            "node_selector": node_selector,
        })
    }
}

/// The ARN partition of a region: `aws-cn` for China, `aws-us-gov` for GovCloud, else `aws`.
pub fn partition_for_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The template paths for `api`, in apply order.
pub fn template_paths(api: KarpenterApi) -> Vec<&'static str> {
    let (wanted, unwanted): (&[&str], &[&str]) = match api {
        KarpenterApi::V1Alpha5 => (&KARPENTER_V1ALPHA5, &KARPENTER_V1),
        KarpenterApi::V1 | KarpenterApi::V1Beta1 => (&KARPENTER_V1, &KARPENTER_V1ALPHA5),
    };
    debug_assert!(wanted.iter().all(|p| template(p).is_some()));
    TEMPLATES
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| !unwanted.contains(path))
        .collect()
}

fn template(path: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(p, _)| *p == path).map(|(_, t)| *t)
}

/// Renders every manifest and helm values file for the stack, in apply order.
///
/// # Errors
/// [`RenderError::Input`] or [`RenderError::UnsafeValue`] for a
/// malformed input; the template errors only for a broken template (which the tests catch).
pub fn render(stack: &Stack, inputs: &RenderInputs) -> Result<Vec<RenderedFile>, RenderError> {
    let api = stack.karpenter_api();
    let vars = variables(stack, inputs)?;
    let off = locality_templates_off(stack.locality.mode);
    template_paths(api)
        .into_iter()
        .filter(|path| !off.contains(path))
        .map(|path| render_file(path, &vars))
        .collect()
}

/// The locality templates `mode` does not use: the 2023 pattern's (the orders rule and
/// `internalTrafficPolicy: Local`) or `trafficDistribution`'s.
pub fn locality_templates_off(mode: crate::config::LocalityMode) -> &'static [&'static str] {
    if mode.uses_destination_rule() {
        &[TRAFFIC_DISTRIBUTION]
    } else {
        &[ORDERS_DESTINATION_RULE, PRODUCTS_TRAFFIC_POLICY]
    }
}

fn render_file(
    path: &str,
    vars: &BTreeMap<&'static str, Value>,
) -> Result<RenderedFile, RenderError> {
    let text = template(path).expect("template_paths lists embedded templates");
    let content = substitute(path, text, vars)?;
    check_yaml(path, &content)?;
    Ok(RenderedFile {
        path: path.to_owned(),
        content,
    })
}

/// The annotation that picks the in-tree AWS cloud provider's load balancer type.
pub const GATEWAY_LB_ANNOTATION: &str = "service.beta.kubernetes.io/aws-load-balancer-type";
/// What the gateway asks for: a Network Load Balancer (what `prices` charges for).
pub const GATEWAY_LB_TYPE: &str = "nlb";

/// The ingress gateway's `service` values: an NLB, open to the stack's
/// `istio.ingress_source_ranges` only when it sets them (the key is left out otherwise, so
/// that the values — compared by value — stay those of a stack without the setting).
fn gateway_service(stack: &Stack) -> serde_json::Value {
    let mut service = serde_json::json!({
        "type": "LoadBalancer",
        "annotations": {GATEWAY_LB_ANNOTATION: GATEWAY_LB_TYPE},
    });
    if !stack.istio.ingress_source_ranges.is_empty() {
        service["loadBalancerSourceRanges"] = stack
            .istio
            .ingress_source_ranges
            .iter()
            .map(|c| c.to_string())
            .collect();
    }
    service
}

/// Every placeholder's value for the stack and inputs.
///
/// # Errors
/// [`RenderError::Input`] for a malformed input, [`RenderError::UnsafeValue`] for a value
/// with characters that could change the YAML it goes into.
pub fn variables(
    stack: &Stack,
    inputs: &RenderInputs,
) -> Result<BTreeMap<&'static str, Value>, RenderError> {
    check_inputs(inputs)?;
    let locality = &stack.locality;
    let orders_lb = policy::locality_lb_setting(locality, &inputs.region, &inputs.zones)?;
    let karpenter_role_arn = Role::Karpenter.arn(stack, &inputs.partition, &inputs.account_id);
    let mut vars = BTreeMap::from([
        ("STACK_NAME", Value::Scalar(stack.name.clone())),
        (
            "CLUSTER_NAME",
            Value::Scalar(stack.cluster_name().to_owned()),
        ),
        (
            "CLUSTER_ENDPOINT",
            Value::Scalar(inputs.cluster_endpoint.clone()),
        ),
        ("NODE_ROLE_NAME", Value::Scalar(Role::Node.name(stack))),
        (
            "INSTANCE_PROFILE",
            Value::Scalar(names::instance_profile(stack)),
        ),
        (
            "INTERRUPTION_QUEUE",
            Value::Scalar(names::interruption_queue(stack)),
        ),
        ("KARPENTER_ROLE_ARN", Value::Scalar(karpenter_role_arn)),
        // Two replicas need two system nodes (they keep apart by hostname).
        (
            "KARPENTER_REPLICAS",
            Value::Scalar(stack.node_group.size.min(2).to_string()),
        ),
        ("ZONES", Value::List(inputs.zones.clone())),
        (
            "CAPACITY_TYPES",
            Value::List(
                stack
                    .karpenter
                    .capacity_types
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
            ),
        ),
        (
            "TRACING_SAMPLING",
            Value::Scalar(decimal(stack.istio.tracing_sampling.get())),
        ),
        ("ORDERS_LOCALITY_LB_SETTING", Value::Json(orders_lb.setting)),
        ("KIALI_DEPLOYMENT", Value::Json(kiali_deployment(stack))),
        ("GATEWAY_SERVICE", Value::Json(gateway_service(stack))),
        (
            "ORDERS_HTTP2_MAX_REQUESTS",
            Value::Scalar(locality.connection_pool.http2_max_requests.to_string()),
        ),
        (
            "ORDERS_MAX_REQUESTS_PER_CONNECTION",
            Value::Scalar(
                locality
                    .connection_pool
                    .max_requests_per_connection
                    .to_string(),
            ),
        ),
        (
            "ORDERS_CONSECUTIVE_GATEWAY_ERRORS",
            Value::Scalar(
                locality
                    .outlier_detection
                    .consecutive_gateway_errors
                    .to_string(),
            ),
        ),
        (
            "ORDERS_OUTLIER_INTERVAL",
            Value::Scalar(locality.outlier_detection.interval.clone()),
        ),
        (
            "ORDERS_BASE_EJECTION_TIME",
            Value::Scalar(locality.outlier_detection.base_ejection_time.clone()),
        ),
    ]);
    // The app's images: pinned by digest under `images:`, else the seed's tags.
    for image in crate::images::APP_IMAGES {
        let reference = stack
            .images
            .get(image.key)
            .map_or(image.default, String::as_str);
        vars.insert(image.placeholder, Value::Scalar(reference.to_string()));
    }
    for (name, value) in &vars {
        let items = match value {
            Value::Scalar(s) => std::slice::from_ref(s),
            Value::List(items) => items.as_slice(),
            Value::Json(_) => continue,
        };
        if let Some(bad) = items.iter().find(|s| !is_safe(s)) {
            return Err(RenderError::UnsafeValue {
                name,
                value: bad.clone(),
            });
        }
    }
    Ok(vars)
}

/// A float as YAML always reads it back as a float: `100.0`, `0.5` (never `1e-7`).
fn decimal(x: f64) -> String {
    let text = x.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// Characters that, inside or outside quotes, cannot end a YAML scalar or start a structure.
fn is_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/@+-".contains(c))
}

fn check_inputs(inputs: &RenderInputs) -> Result<(), RenderError> {
    let input = |what, message: String| Err(RenderError::Input { what, message });
    let id = &inputs.account_id;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return input(
            "account id",
            format!("`{id}` is not an AWS account ID; account IDs are 12 digits"),
        );
    }
    if !["aws", "aws-cn", "aws-us-gov"].contains(&inputs.partition.as_str()) {
        return input(
            "partition",
            format!(
                "`{}` is not an AWS partition (aws, aws-cn or aws-us-gov)",
                inputs.partition
            ),
        );
    }
    let endpoint = &inputs.cluster_endpoint;
    let host = endpoint.strip_prefix("https://").unwrap_or_default();
    if host.is_empty() || host.starts_with('/') || !is_safe(host) {
        return input(
            "endpoint",
            format!(
                "`{endpoint}` is not an https URL; EKS endpoints look like \
                 https://ABCDEF.gr7.us-east-1.eks.amazonaws.com"
            ),
        );
    }
    if !is_safe(&inputs.region) {
        return input(
            "region",
            format!("`{}` is not an AWS region name", inputs.region),
        );
    }
    if inputs.zones.is_empty() {
        return input("zones", "no zones; the cluster spans at least two".into());
    }
    for zone in &inputs.zones {
        let letter = zone.strip_prefix(inputs.region.as_str());
        if !letter.is_some_and(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_lowercase())) {
            return input(
                "zones",
                format!(
                    "`{zone}` is not a zone of region {} (like {}a)",
                    inputs.region, inputs.region
                ),
            );
        }
    }
    Ok(())
}

/// Replaces every `${NAME}` in `template` (the file at `path`) from `vars`.
///
/// # Errors
/// [`RenderError::UnknownPlaceholder`] for a name without a value and
/// [`RenderError::Malformed`] for a `${` that does not open `${NAME}`; in both the line is
/// the template's. Nothing is left that looks like a placeholder when this succeeds.
pub fn substitute(
    path: &str,
    template: &str,
    vars: &BTreeMap<&'static str, Value>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let line = template[..template.len() - rest.len() + start]
            .matches('\n')
            .count()
            + 1;
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name = after
            .find('}')
            .map(|end| &after[..end])
            .filter(|name| {
                name.starts_with(|c: char| c.is_ascii_uppercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .ok_or_else(|| RenderError::Malformed {
                file: path.to_owned(),
                line,
            })?;
        match vars.get(name) {
            Some(Value::Scalar(s)) => out.push_str(s),
            Some(Value::List(items)) => {
                let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
                out.push('[');
                out.push_str(&quoted.join(", "));
                out.push(']');
            }
            Some(Value::Json(value)) => out.push_str(&value.to_string()),
            None => {
                return Err(RenderError::UnknownPlaceholder {
                    file: path.to_owned(),
                    line,
                    name: name.to_owned(),
                    known: vars.keys().copied().collect::<Vec<_>>().join(", "),
                })
            }
        }
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    // Values are checked for `$`, `{` and `}`, so substitution cannot produce a placeholder;
    // this makes the guarantee independent of that check.
    if let Some(at) = out.find("${") {
        return Err(RenderError::Malformed {
            file: path.to_owned(),
            line: out[..at].matches('\n').count() + 1,
        });
    }
    Ok(out)
}

/// Every document of a rendered file parses.
fn check_yaml(path: &str, content: &str) -> Result<(), RenderError> {
    use serde::Deserialize;
    for document in serde_yaml::Deserializer::from_str(content) {
        serde_yaml::Value::deserialize(document).map_err(|e| RenderError::Yaml {
            file: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(extra: &str) -> Stack {
        Stack::parse(&format!("name: shop\n{extra}"), "test.yaml").unwrap()
    }

    fn inputs() -> RenderInputs {
        RenderInputs {
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            partition: "aws".into(),
            zones: vec![
                "eu-west-1a".into(),
                "eu-west-1b".into(),
                "eu-west-1c".into(),
            ],
            cluster_endpoint: "https://ABC123.gr7.eu-west-1.eks.amazonaws.com".into(),
        }
    }

    fn file<'a>(files: &'a [RenderedFile], path: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not rendered"))
            .content
    }

    fn docs(content: &str) -> Vec<serde_yaml::Value> {
        use serde::Deserialize;
        serde_yaml::Deserializer::from_str(content)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect()
    }

    #[test]
    fn default_stack_renders_with_no_placeholder_left() {
        let files = render(&Stack::embedded_default(), &inputs()).unwrap();
        // Each locality mode renders its own policies only (the default: failover's two).
        assert_eq!(files.len(), TEMPLATES.len() - KARPENTER_V1ALPHA5.len() - 1);
        for f in &files {
            assert!(!f.content.contains("${"), "{}: {}", f.path, f.content);
            assert!(!f.content.contains("cluster-name"), "{}", f.path);
        }
        // Stable order: the stages' apply order, Karpenter first, the locality policies last.
        assert_eq!(files[0].path, KARPENTER_VALUES);
        assert_eq!(files.last().unwrap().path, PRODUCTS_TRAFFIC_POLICY);
        assert_eq!(
            render(&Stack::embedded_default(), &inputs()).unwrap(),
            files
        );
    }

    #[test]
    fn stack_values_are_substituted() {
        let files = render(
            &stack("node_group: {size: 1}\nistio: {tracing_sampling: 1}\n"),
            &inputs(),
        )
        .unwrap();
        let values = &docs(file(&files, KARPENTER_VALUES))[0];
        assert_eq!(values["settings"]["clusterName"], "shop");
        assert_eq!(values["settings"]["interruptionQueue"], "shop-karpenter");
        assert_eq!(
            values["settings"]["clusterEndpoint"],
            "https://ABC123.gr7.eu-west-1.eks.amazonaws.com"
        );
        assert_eq!(
            values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/shop-karpenter"
        );
        assert_eq!(values["replicas"], 1);

        let class = &docs(file(&files, "karpenter/ec2nodeclass.yaml"))[0];
        assert_eq!(class["spec"]["role"], "shop-node");
        assert_eq!(
            class["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"],
            "shop"
        );
        assert_eq!(
            class["spec"]["securityGroupSelectorTerms"][0]["tags"]["karpenter.sh/discovery"],
            "shop"
        );

        let istiod = &docs(file(&files, "stacks/istio/istiod-values.yaml"))[0];
        assert_eq!(
            istiod["meshConfig"]["defaultConfig"]["tracing"]["sampling"],
            serde_yaml::Value::from(1.0)
        );
    }

    #[test]
    fn zones_and_capacity_types_become_flow_lists() {
        let files = render(
            &stack("karpenter: {capacity_types: [on-demand]}\n"),
            &inputs(),
        )
        .unwrap();
        let text = file(&files, "karpenter/nodepool.yaml");
        assert!(
            text.contains(r#"values: ["eu-west-1a", "eu-west-1b", "eu-west-1c"]"#),
            "{text}"
        );
        let pool = &docs(text)[0];
        let requirements = pool["spec"]["template"]["spec"]["requirements"]
            .as_sequence()
            .unwrap();
        let values = |key: &str| -> Vec<String> {
            let r = requirements.iter().find(|r| r["key"] == key).unwrap();
            serde_yaml::from_value(r["values"].clone()).unwrap()
        };
        assert_eq!(
            values("topology.kubernetes.io/zone"),
            ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
        );
        assert_eq!(values("karpenter.sh/capacity-type"), ["on-demand"]);
        assert!(values("node.kubernetes.io/instance-type").contains(&"m5.large".to_owned()));
    }

    #[test]
    fn karpenter_templates_by_api() {
        assert_eq!(
            template_paths(KarpenterApi::V1Alpha5)
                .into_iter()
                .filter(|p| p.starts_with("karpenter/"))
                .collect::<Vec<_>>(),
            [KARPENTER_VALUES, "karpenter/provisioner.yaml"]
        );
        assert_eq!(
            template_paths(KarpenterApi::V1)
                .into_iter()
                .filter(|p| p.starts_with("karpenter/"))
                .collect::<Vec<_>>(),
            [
                KARPENTER_VALUES,
                "karpenter/ec2nodeclass.yaml",
                "karpenter/nodepool.yaml"
            ]
        );
    }

    /// The legacy files render too (no Kubernetes version meshstack creates can use them
    /// today, so `render` never returns them; this keeps them from rotting).
    #[test]
    fn legacy_provisioner_renders() {
        let vars = variables(&stack(""), &inputs()).unwrap();
        let file = render_file("karpenter/provisioner.yaml", &vars).unwrap();
        let docs = docs(&file.content);
        assert_eq!(docs[0]["kind"], "Provisioner");
        assert_eq!(docs[1]["kind"], "AWSNodeTemplate");
        let template = &docs[1]["spec"];
        assert_eq!(template["instanceProfile"], "shop-karpenter-node");
        assert_eq!(template["subnetSelector"]["karpenter.sh/discovery"], "shop");
        assert_eq!(
            template["securityGroupSelector"]["karpenter.sh/discovery"],
            "shop"
        );
        assert!(!file.content.contains("cluster-name"));
    }

    #[test]
    fn substitution_errors_name_the_file_and_line() {
        let vars = variables(&stack(""), &inputs()).unwrap();
        let err = substitute("t.yaml", "a: 1\nb: ${NOPE}\n", &vars).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.yaml, line 2: unknown placeholder ${NOPE}; the known ones are "),
            "{err}"
        );
        for bad in [
            "x: ${cluster_name}",
            "x: ${CLUSTER_NAME",
            "x: ${}",
            "x: ${ A}",
        ] {
            let err = substitute("t.yaml", bad, &vars).unwrap_err();
            assert!(
                matches!(err, RenderError::Malformed { line: 1, .. }),
                "{bad}: {err:?}"
            );
        }
        // `$` alone (Prometheus relabel replacements) is not a placeholder.
        assert_eq!(
            substitute("t.yaml", "r: '$1:$2' ${CLUSTER_NAME}", &vars).unwrap(),
            "r: '$1:$2' shop"
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut cases: Vec<(RenderInputs, &str)> = Vec::new();
        let mut i = inputs();
        i.account_id = "12345".into();
        cases.push((i, "account id"));
        let mut i = inputs();
        i.cluster_endpoint = "http://x".into();
        cases.push((i, "endpoint"));
        let mut i = inputs();
        i.zones = vec!["us-east-1a".into()];
        cases.push((i, "zones"));
        let mut i = inputs();
        i.zones = vec![];
        cases.push((i, "zones"));
        let mut i = inputs();
        i.partition = "aws-moon".into();
        cases.push((i, "partition"));
        let mut i = inputs();
        i.cluster_endpoint = "https://x\" injected: \"y".into();
        cases.push((i, "endpoint"));
        for (i, what) in cases {
            let err = render(&stack(""), &i).unwrap_err();
            assert!(
                matches!(&err, RenderError::Input { what: w, .. } if *w == what),
                "{what}: {err:?}"
            );
        }
        // Values that could break out of their quotes never reach a template.
        let mut bad = stack("");
        bad.name = "shop\" injected: \"x".into();
        let err = variables(&bad, &inputs()).unwrap_err();
        assert!(
            matches!(
                err,
                RenderError::UnsafeValue {
                    name: "CLUSTER_NAME",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn every_variable_is_used_and_every_template_parses_unrendered_placeholders_aside() {
        let vars = variables(&stack(""), &inputs()).unwrap();
        for name in vars.keys() {
            let placeholder = format!("${{{name}}}");
            assert!(
                TEMPLATES.iter().any(|(_, t)| t.contains(&placeholder)),
                "{placeholder} is never used"
            );
        }
        for (path, _) in TEMPLATES {
            render_file(path, &vars).unwrap();
        }
    }

    #[test]
    fn decimals_read_back_as_floats() {
        for (x, text) in [
            (100.0, "100.0"),
            (0.0, "0.0"),
            (0.5, "0.5"),
            (1e-7, "0.0000001"),
        ] {
            assert_eq!(decimal(x), text);
            let back: serde_yaml::Value = serde_yaml::from_str(&decimal(x)).unwrap();
            assert!(back.is_f64(), "{text}");
        }
    }

    #[test]
    fn partitions() {
        assert_eq!(partition_for_region("us-east-1"), "aws");
        assert_eq!(partition_for_region("cn-north-1"), "aws-cn");
        assert_eq!(partition_for_region("us-gov-west-1"), "aws-us-gov");
    }
}
