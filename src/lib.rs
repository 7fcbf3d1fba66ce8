//! meshstack as a library: the binary (`src/main.rs`) is a thin shell over these modules, and
//! the integration tests use them directly.
//!
//! - [`config`]: stack files, validated before anything touches AWS.
//! - [`engine`]: the stage graph, the parallel walk, the journal and lock, progress output —
//!   free of AWS and Kubernetes details.
//! - [`aws`]: SDK clients, call counting, error classification, polling.
//! - [`stages`]: one file per stage.
//! - [`locality`]: the locality pattern: placement, policy, Envoy counters, the traffic report.
//! - [`render`]: the Kubernetes manifests and helm values, filled in from the stack.
//! - [`inspect`]: `meshstack pods` and `meshstack verify`, reading the running demo.
//! - [`cli`] and [`commands`]: the command line.

pub mod aws;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod engine;
pub mod inspect;
pub mod k8s;
pub mod locality;
pub mod render;
pub mod stages;
