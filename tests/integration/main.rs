//! meshstack's integration tests: one binary, one module per area. The AWS tests run the real
//! binary against moto servers started by `support` (installed by `scripts/test`).

#[path = "../support/mod.rs"]
mod support;

mod access;
mod attendees;
mod binary_k8s;
mod charts_mirror;
mod cli;
mod cli_surface;
mod config_files;
mod contracts;
mod demo;
mod fault_proxy;
mod faults;
mod fleet;
mod k8s_app;
mod k8s_apply;
mod k8s_locality;
mod k8s_mesh;
mod k8s_stages;
mod k8s_verify;
mod lifecycle;
mod output_files;
mod ownership;
mod real_cluster;
mod redaction;
mod render;
mod scripts;
mod state;
mod supply;
mod sweep;
mod verify_page;
mod versions;
