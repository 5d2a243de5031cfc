//! Certificates: loads the configured PEM chain and key, or on loopback
//! generates a self-signed certificate for `localhost`, 127.0.0.1 and ::1
//! once into `<data_dir>/tls/`, and builds the rustls configs QUIC and wss use.
//!
//! Owns the `[tls]` settings ([`TlsConfig`]) and reads nothing else of the
//! configuration: the data directory is handed in. Never listens or
//! accepts; the transports do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The `[tls]` section: the certificate QUIC (and wss) serve.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain for QUIC (and wss when `ws_tls`). Empty: a
    /// self-signed certificate is generated into `<data_dir>/tls/` — allowed
    /// only on loopback addresses.
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`.
    pub key: Option<PathBuf>,
    /// Serve `wss://` instead of `ws://` on `ws_addr` with the same certificate.
    pub ws_tls: bool,
}

/// A certificate chain and its key.
pub struct CertKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Where the certificate PEM lives (clients of a dev node trust this file).
    pub cert_path: PathBuf,
}

fn read_pem(cert: &Path, key: &Path) -> anyhow::Result<CertKey> {
    let chain = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("parsing {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("parsing {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    Ok(CertKey {
        chain,
        key,
        cert_path: cert.to_path_buf(),
    })
}

/// The configured certificate, or the dev one generated into
/// `<data_dir>/tls/` (`data_dir` is `server.data_dir`).
pub fn load_or_generate(tls: &TlsConfig, data_dir: &Path) -> anyhow::Result<CertKey> {
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        return read_pem(cert, key);
    }
    let dir = data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating the dev certificate directory {} (in server.data_dir)",
                dir.display()
            )
        })?;
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        for (path, pem) in [
            (&cert, generated.cert.pem()),
            (&key, generated.signing_key.serialize_pem()),
        ] {
            std::fs::write(path, pem)
                .with_context(|| format!("writing the dev certificate {}", path.display()))?;
        }
    }
    read_pem(&cert, &key)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls server config for QUIC with ALPN `huddle/1`.
pub fn quic_server_config(ck: &CertKey) -> anyhow::Result<quinn::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(ck.chain.clone(), ck.key.clone_key())?;
    tls.alpn_protocols = vec![huddle_schema::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// rustls server config for `wss://`.
pub fn ws_tls_acceptor(ck: &CertKey) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(ck.chain.clone(), ck.key.clone_key())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}
