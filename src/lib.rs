//! meshstack as a library: the binary (`src/main.rs`) is a thin shell over these modules, and
//! the integration tests use them directly.
//!
//! - [`config`]: stack files, validated before anything touches AWS.
//! - [`engine`]: the stage graph, the parallel walk, the journal and lock, progress output —
//!   free of AWS and Kubernetes details.
//! - [`aws`]: SDK clients, call counting, error classification, polling, shared state in S3.
//! - [`stages`]: one file per stage.
//! - [`locality`]: the locality pattern: placement, policy, Envoy counters, the traffic report.
//! - [`names`]: every derived resource name and namespace, in one place.
//! - [`policies`]: every IAM document meshstack writes, built in one pure module.
//! - [`versions`]: which Kubernetes, Karpenter, Istio and AMI versions work together, and
//!   EKS's support calendar.
//! - [`charts`]: every helm chart: its repository, its version, and the mirror setting.
//! - [`render`]: the Kubernetes manifests and helm values, filled in from the stack.
//! - [`redact`]: secrets out of every log line, by their shapes.
//! - [`retry`]: back-off, waits and retries, for adapters and stages alike.
//! - [`inspect`]: `meshstack pods` and `meshstack verify`, reading the running demo.
//! - [`cli`] and [`commands`]: the command line.

pub mod aws;
pub mod charts;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod engine;
pub mod files;
pub mod fleet;
pub mod handout;
pub mod images;
pub mod inspect;
pub mod k8s;
pub mod locality;
pub mod names;
pub mod policies;
pub mod prices;
pub mod quotas;
pub mod redact;
pub mod render;
pub mod retry;
pub mod stages;
pub mod versions;
