//! HTTPS between node and pool, both sides rustls: a pool serving a certificate from a test CA
//! made here at run time; a node that trusts the CA joins over `https://127.0.0.1:PORT`, and
//! one that does not is refused with a message that names the certificate problem.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::sync::Arc;

use hearth_inference::ModelStore;
use hearth_node::worker::PoolClient;
use hearth_pool::{Meter, Pool, PoolConfig, SledStore};
use hearth_protocol::{HardwareProfile, KeyPair};

/// A CA, and a certificate it signed for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn test_ca_and_server_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Hearth test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Hearth test pool");
    let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

fn profile() -> HardwareProfile {
    HardwareProfile {
        backend: "cpu".into(),
        device: "test".into(),
        memory_bytes: 0,
        models: vec!["all-minilm-l6-v2".into()],
        matmul_gflops: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_an_https_pool_it_trusts_and_refuses_one_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca_and_server_certificate();
    let (cert_file, key_file) = (dir.path().join("pool.pem"), dir.path().join("pool.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let config = PoolConfig {
        tls_cert_file: Some(cert_file),
        tls_key_file: Some(key_file),
        probation_jobs: 0,
        ..PoolConfig::default()
    };
    let (meter, _) = Meter::load(&ModelStore::from_env(), &config.models);
    let store = Arc::new(SledStore::open(&dir.path().join("pool")).unwrap());
    let pool = Pool::start(config, store, Arc::new(meter)).await.unwrap();
    let url = pool.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let trusting =
        PoolClient::new(&url, KeyPair::generate().unwrap(), Some(ca.as_bytes())).unwrap();
    let joined = trusting.register(profile(), None).await.unwrap();
    assert_eq!(joined.pool_public_key, pool.state().pool_key.public_key());
    assert!(trusting.has_session());
    assert_eq!(pool.state().nodes.len(), 1);

    let stranger = PoolClient::new(&url, KeyPair::generate().unwrap(), None).unwrap();
    let refused = stranger
        .register(profile(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("certificate") && refused.contains("UnknownIssuer"),
        "{refused}"
    );
    assert_eq!(
        pool.state().nodes.len(),
        1,
        "the stranger never got through"
    );

    // A CA file that holds no certificate is refused up front.
    assert!(PoolClient::new(&url, KeyPair::generate().unwrap(), Some(b"not a pem")).is_err());
}
