//! The local API server's certificates, made fresh for each server: a CA, and a certificate
//! for `127.0.0.1` and `localhost` that it signs. The binary is told to trust the CA (the PEM
//! file [`Tls::ca_file`]), exactly as it trusts an EKS cluster's CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls;

/// The server's TLS configuration and where the CA is written.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub ca_file: PathBuf,
    /// The CA in PEM, for in-process clients.
    pub ca_pem: String,
}

impl Tls {
    /// A new CA and server certificate; the CA's PEM goes to `dir/ca.pem`.
    pub fn generate(dir: &Path) -> Tls {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "meshstack test API server CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("the CA signs itself");
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().expect("a server key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        leaf.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("the CA signs it");

        let ca_pem = ca_cert.pem();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("a valid certificate and key");
        Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_file,
            ca_pem,
        }
    }
}
