//! TLS client configuration for `wss://` and `quic://`: which server
//! certificates to trust — the web PKI roots, the certificates of one PEM file
//! (a dev gateway writes its self-signed one to `<data dir>/tls/cert.pem`), or,
//! for development only, anything at all.
//!
//! Owns [`TlsOptions`] (re-exported as `transport::TlsOptions`) and building
//! and caching `rustls::ClientConfig`s (always with the `ring` provider);
//! never opens a socket and never depends on the transport above it.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ClientError;

/// How many distinct TLS configurations are cached. Thousands of connections
/// with the same options (the load generator) share one configuration, its
/// root store and its session-resumption cache.
const CACHE_ENTRIES: usize = 8;

/// Which server certificates a TLS connection (`wss://`, `quic://`) trusts.
///
/// The default trusts the web PKI roots and checks the server name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust exactly the certificates of this PEM buffer (instead of the web
    /// PKI), e.g. a dev gateway's `<data dir>/tls/cert.pem`.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Accept any server certificate. **Development only**: anyone on the path
    /// can impersonate the gateway. Overrides `ca_cert_pem`.
    pub accept_invalid_certs: bool,
    /// The name the server certificate must carry (and the TLS SNI). Defaults
    /// to the URL host for `wss://` and to `localhost` for `quic://`.
    pub server_name: Option<String>,
}

#[derive(PartialEq, Eq)]
struct Key {
    quic: bool,
    insecure: bool,
    ca_cert_pem: Option<Vec<u8>>,
}

/// Recently built configurations, newest last; at most [`CACHE_ENTRIES`].
static CACHE: Mutex<Vec<(Key, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());

/// The rustls client configuration for `tls`. `quic` selects TLS 1.3 only and
/// the Huddle ALPN id, as QUIC requires.
pub(crate) fn client_config(
    tls: &TlsOptions,
    quic: bool,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let key = Key {
        quic,
        insecure: tls.accept_invalid_certs,
        ca_cert_pem: if tls.accept_invalid_certs {
            None
        } else {
            tls.ca_cert_pem.clone()
        },
    };
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, config)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(config.clone());
    }
    let config = Arc::new(build(&key)?);
    if cache.len() >= CACHE_ENTRIES {
        cache.remove(0);
    }
    cache.push((key, config.clone()));
    Ok(config)
}

fn build(key: &Key) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if key.quic {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ClientError::Transport(format!("TLS setup failed: {e}")))?;
    let mut config = if key.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &key.ca_cert_pem {
            Some(pem) => {
                for cert in parse_pem_certs(pem)? {
                    roots.add(cert).map_err(|e| {
                        ClientError::Transport(format!("cannot trust the CA certificate: {e}"))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if key.quic {
        config.alpn_protocols = vec![huddle_schema::ALPN.to_vec()];
    }
    Ok(config)
}

/// Every certificate in a PEM buffer; an error when there is none.
fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let mut reader = pem;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Transport(format!("cannot read the CA certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Transport(
            "the CA certificate PEM holds no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

/// A certificate verifier that accepts every server certificate, whatever its
/// issuer, name or validity period. It still checks that the server holds the
/// key of the certificate it presented (the handshake signature), but that
/// proves nothing about who the server is.
///
/// **Development only**: it is what [`TlsOptions::accept_invalid_certs`]
/// selects, and it makes the connection open to any man in the middle.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_and_web_pki_configs_build_and_are_cached() {
        let insecure = TlsOptions {
            accept_invalid_certs: true,
            ..TlsOptions::default()
        };
        let a = client_config(&insecure, true).unwrap();
        let b = client_config(&insecure, true).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![huddle_schema::ALPN.to_vec()]);
        let web = client_config(&TlsOptions::default(), false).unwrap();
        assert!(web.alpn_protocols.is_empty());
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        let tls = TlsOptions {
            ca_cert_pem: Some(b"not a pem".to_vec()),
            ..TlsOptions::default()
        };
        assert!(matches!(
            client_config(&tls, false),
            Err(ClientError::Transport(_))
        ));
    }

    #[test]
    fn self_signed_pem_is_trusted() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = TlsOptions {
            ca_cert_pem: Some(cert.cert.pem().into_bytes()),
            ..TlsOptions::default()
        };
        assert!(client_config(&tls, true).is_ok());
    }
}
