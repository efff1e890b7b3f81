//! HTTPS (settings `server.tls_cert`, `server.tls_key`): rustls on ring,
//! HTTP/2 and HTTP/1.1 by ALPN. The certificate and key are read again when
//! either file changes (checked every few seconds) and on SIGHUP; a pair
//! that does not load is logged and counted, and the old one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::telemetry::TLS_RELOADS;

/// How often the files are looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate or key that does not load; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message} ({path})")]
pub struct TlsError {
    pub setting: &'static str,
    pub path: PathBuf,
    pub message: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |message: String| TlsError {
        setting: "server.tls_cert",
        path: cert.to_owned(),
        message,
    };
    let key_err = |message: String| TlsError {
        setting: "server.tls_key",
        path: key.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(format!("cannot read a PEM certificate chain: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("holds no PEM certificate".into()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, private, &provider())
        .map_err(|e| key_err(format!("does not fit the certificate in server.tls_cert: {e}")))
}

/// The certificate in use; swapped by reloads, read by every handshake.
#[derive(Debug)]
struct Current {
    cert: PathBuf,
    key: PathBuf,
    pair: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.read().clone())
    }
}

impl Current {
    /// Reads the files again; the old pair stays when they do not load.
    fn reload(&self) -> bool {
        match load(&self.cert, &self.key) {
            Ok(pair) => {
                *self.pair.write() = Arc::new(pair);
                metrics::counter!(TLS_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                metrics::counter!(TLS_RELOADS, "outcome" => "error").increment(1);
                tracing::error!(error = %e, "TLS certificate reload failed; the previous certificate stays in use");
                false
            }
        }
    }

    /// What changes when either file is rewritten or replaced.
    fn stamp(&self) -> Option<[(SystemTime, u64); 2]> {
        let one = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }
}

/// The HTTPS side of the server: the acceptor, and the task that reloads
/// its certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
}

impl Tls {
    /// Loads the pair (an error names the setting at fault).
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pair = load(cert, key)?;
        let current = Arc::new(Current {
            cert: cert.to_owned(),
            key: key.to_owned(),
            pair: RwLock::new(Arc::new(pair)),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                setting: "server.tls_cert",
                path: cert.to_owned(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reloads now (as SIGHUP does); `false` when the files do not load.
    pub fn reload(&self) -> bool {
        self.current.reload()
    }

    /// Watches the files and SIGHUP until `stop` fires.
    pub async fn watch(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut seen = self.current.stamp();
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let signalled = tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(WATCH_INTERVAL) => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = self.current.stamp();
            if signalled || (now.is_some() && now != seen) {
                let current = self.current.clone();
                // File reads and key parsing off the async threads.
                let _ = tokio::task::spawn_blocking(move || current.reload()).await;
                seen = now;
            }
        }
    }
}
