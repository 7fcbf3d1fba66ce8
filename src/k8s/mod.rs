//! The Kubernetes side: cluster access (EKS tokens, kubeconfig, [`client`]), server-side apply
//! and waits ([`apply`]), the helm seam, and HTTP to pod ports ([`pod_http`]).

pub mod apply;
pub mod client;
pub mod helm;
pub mod kubeconfig;
pub mod pod_http;
pub mod token;
