//! TLS for the public listener (rustls): certificate and key from PEM files,
//! re-read on SIGHUP without a restart, optional client certificates.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

pub use crate::config::TlsSettings;

/// Builds the rustls config, with messages that name the file at fault.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let file = |p: &PathBuf| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_file)
        .map_err(|e| format!("tls.cert_file {}: {e}", file(&settings.cert_file)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_file {}: {e}", file(&settings.cert_file)))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no certificate in it",
            file(&settings.cert_file)
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|e| format!("tls.key_file {}: {e}", file(&settings.key_file)))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("tls.client_ca_file {}: {e}", file(path)))?
            {
                let cert = cert.map_err(|e| format!("tls.client_ca_file {}: {e}", file(path)))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.client_ca_file {}: {e}", file(path)))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls.client_ca_file {}: {e}", file(path)))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: the certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls config in force, replaced whole on reload. Each handshake
/// takes the config current when it starts; connections already open keep
/// theirs.
#[derive(Clone)]
pub struct LiveTlsConfig(Arc<std::sync::RwLock<Arc<ServerConfig>>>);

impl LiveTlsConfig {
    /// Starts with `config`.
    pub fn new(config: Arc<ServerConfig>) -> LiveTlsConfig {
        LiveTlsConfig(Arc::new(std::sync::RwLock::new(config)))
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a whole config: writers only swap an Arc.
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Puts `config` in force for new connections.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}
