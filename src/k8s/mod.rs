//! The Kubernetes side: cluster access (EKS tokens, kubeconfig, [`client`]), server-side apply
//! and waits ([`apply`]), and the helm seam.

pub mod apply;
pub mod client;
pub mod helm;
pub mod kubeconfig;
pub mod token;
