//! TLS on every TCP listener (rustls).
//!
//! `--tls-cert-file` and `--tls-key-file` (PEM: the certificate chain, leaf
//! first, and its private key in PKCS#8, PKCS#1 or SEC1) turn TLS on for
//! every TCP port; `--tls-client-ca-file` also asks every client for a
//! certificate signed by one of its CAs (mutual TLS), and
//! `--tls-min-version` (`1.2` or `1.3`) is the oldest version accepted. The
//! names follow the OpenTelemetry Collector's `cert_file`, `key_file`,
//! `client_ca_file` and `min_version`.
//!
//! The files are read again when their content changes and on SIGHUP
//! ([`crate::reload`]); new connections get the new configuration, open
//! ones keep theirs. Files that do not load at start stop the start; later
//! they keep the configuration in force and the error is logged.
//!
//! Every listener offers ALPN `h2` and `http/1.1` (gRPC clients need `h2`).
//! Handshakes run in tasks of their own with a time limit, so a client that
//! connects and says nothing holds up no one ([`TlsListener`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::server::TlsStream;

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MinVersion {
    Tls12,
    Tls13,
}

impl MinVersion {
    /// The versions offered, newest first.
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        const FROM_12: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        const FROM_13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => FROM_12,
            MinVersion::Tls13 => FROM_13,
        }
    }
}

impl std::str::FromStr for MinVersion {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "1.2" => Ok(MinVersion::Tls12),
            "1.3" => Ok(MinVersion::Tls13),
            "1.0" | "1.1" => bail!("TLS {s} is not offered (rustls speaks 1.2 and 1.3)"),
            _ => bail!("invalid TLS version {s:?}: use 1.2 or 1.3"),
        }
    }
}

/// Where the certificate, key and client CAs are, and the oldest version.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) client_ca_file: Option<PathBuf>,
    pub(crate) min_version: MinVersion,
}

impl TlsSettings {
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert_file.clone(), self.key_file.clone()];
        files.extend(self.client_ca_file.clone());
        files
    }

    /// The server configuration from the files' `contents` (in the order
    /// of [`TlsSettings::files`]).
    /// The certificate chain and key from the PEM `cert` and `key` (the
    /// contents of the two files).
    fn identity(
        &self,
        cert: &[u8],
        key: &[u8],
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let name = |p: &PathBuf| p.display().to_string();
        let certs = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("invalid certificate file {}", name(&self.cert_file)))?;
        if certs.is_empty() {
            bail!(
                "certificate file {} holds no PEM certificate",
                name(&self.cert_file)
            );
        }
        let key = PrivateKeyDer::from_pem_slice(key).with_context(|| {
            format!(
                "invalid key file {} (a PEM private key: PKCS#8, PKCS#1 or SEC1)",
                name(&self.key_file)
            )
        })?;
        Ok((certs, key))
    }

    fn server_config(&self, contents: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
        let name = |p: &PathBuf| p.display().to_string();
        let (certs, key) = self.identity(&contents[0], &contents[1])?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(self.min_version.versions())
            .context("TLS versions")?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&contents[2]) {
                    let cert =
                        cert.with_context(|| format!("invalid client CA file {}", name(path)))?;
                    roots.add(cert).with_context(|| {
                        format!(
                            "client CA file {}: a certificate rustls cannot use",
                            name(path)
                        )
                    })?;
                }
                if roots.is_empty() {
                    bail!("client CA file {} holds no PEM certificate", name(path));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .with_context(|| format!("client CA file {}", name(path)))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "certificate {} and key {} do not make a usable pair",
                name(&self.cert_file),
                name(&self.key_file)
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// How this node calls the other nodes of its cluster over TLS: their
    /// certificates checked against `ca_file` (or the system's roots), and
    /// this node's certificate presented when they ask for one (clusters
    /// with `--tls-client-ca-file`: it must then be good for client
    /// authentication too). Read once, at start.
    pub(crate) fn cluster_client(
        &self,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<rustls::ClientConfig> {
        let roots = roots(ca_file, "--cluster-ca-file")?;
        let name = |p: &PathBuf| p.display().to_string();
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", name(p)));
        let (certs, key) = self.identity(&read(&self.cert_file)?, &read(&self.key_file)?)?;
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(self.min_version.versions())
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .with_context(|| {
                format!(
                    "certificate {} and key {} do not make a usable client identity",
                    name(&self.cert_file),
                    name(&self.key_file)
                )
            })
    }

    /// Loads the files now (an error stops the start) and keeps the
    /// configuration current as they change.
    pub(crate) fn watch(
        &self,
        every: Duration,
    ) -> anyhow::Result<watch::Receiver<Arc<ServerConfig>>> {
        let settings = self.clone();
        crate::reload::watch_files("TLS certificate", self.files(), every, move |contents| {
            settings.server_config(contents)
        })
    }
}

/// The CA certificates in the PEM file `ca_file` (named `setting` in
/// errors), or the system's roots when there is none.
pub(crate) fn roots(
    ca_file: Option<&std::path::Path>,
    setting: &str,
) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read {setting} {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.with_context(|| format!("invalid PEM in {setting} {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("invalid CA certificate in {}", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{setting} {} holds no certificate", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// The one crypto provider: deltalake's dependencies compile both of
/// rustls's (aws-lc-rs and ring), so none is chosen by default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Handshakes that may be under way on one listener at once; a connection
/// beyond is closed at once (counted as `refused`). Accepting never waits
/// for a handshake, so clients that connect and say nothing cannot keep
/// others out: each has [`HANDSHAKE_TIMEOUT`], and it takes this many of
/// them every ten seconds to fill the listener.
const MAX_HANDSHAKES: usize = 4096;

/// A client has this long to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: &'static str,
    outcome: &'static str,
}

/// Handshakes per listener and outcome (`ok`, `failed`, `timeout`).
#[derive(Default)]
pub(crate) struct TlsMetrics {
    handshakes: Family<HandshakeLabels, Counter>,
}

impl TlsMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "tracelake_tls_handshakes",
            "TLS handshakes by listener and outcome (ok, failed, closed: by the client before \
             it began, timeout, refused)",
            self.handshakes.clone(),
        );
    }

    fn count(&self, listener: &'static str, outcome: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeLabels { listener, outcome })
            .inc();
    }
}

/// A TCP listener whose connections come out with their TLS handshake
/// done: a task accepts, each handshake runs in a task of its own (at most
/// [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]), and
/// [`axum::serve`] takes the finished ones. Dropping it stops the
/// accepting.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        name: &'static str,
        tcp: TcpListener,
        configs: watch::Receiver<Arc<ServerConfig>>,
        metrics: Arc<TlsMetrics>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: wait, as axum's
                        // own loop does, rather than spin.
                        tracing::warn!(%error, "{name}: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                // gRPC (OTLP, Flight SQL, SQL workers) streams small
                // messages: no Nagle delays.
                let _ = stream.set_nodelay(true);
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    metrics.count(name, "refused");
                    tracing::debug!(%peer, "{name}: {MAX_HANDSHAKES} TLS handshakes under way; closed");
                    drop(stream);
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&configs.borrow()));
                let tx = tx.clone();
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            metrics.count(name, "ok");
                            let _ = tx.send((tls, peer)).await;
                        }
                        // Closed before saying anything: a TCP check (a
                        // load balancer's, a query node's of its SQL
                        // workers), not a failed client.
                        Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                            metrics.count(name, "closed");
                            tracing::trace!(%peer, %error, "{name}: closed before the TLS handshake");
                        }
                        Ok(Err(error)) => {
                            metrics.count(name, "failed");
                            // A port scanner or a plain-text client: worth
                            // a line when looking, not a warning.
                            tracing::debug!(%peer, %error, "{name}: TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.count(name, "timeout");
                            tracing::debug!(%peer, "{name}: TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task holds the sender until it is aborted,
            // which only dropping this listener does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_version_names() {
        assert_eq!("1.2".parse::<MinVersion>().unwrap(), MinVersion::Tls12);
        assert_eq!("1.3".parse::<MinVersion>().unwrap(), MinVersion::Tls13);
        let old = "1.1".parse::<MinVersion>().unwrap_err().to_string();
        assert!(old.contains("not offered"), "{old}");
        assert!("tls13".parse::<MinVersion>().is_err());
    }

    fn settings(dir: &std::path::Path, ca: bool) -> TlsSettings {
        TlsSettings {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: ca.then(|| dir.join("ca.pem")),
            min_version: MinVersion::Tls12,
        }
    }

    #[test]
    fn files_that_are_not_pem_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false);
        let error = s
            .server_config(&[b"not a certificate".to_vec(), Vec::new()])
            .unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("cert.pem") && text.contains("no PEM certificate"),
            "{text}"
        );
        let missing = s.watch(Duration::from_secs(1)).unwrap_err();
        assert!(
            format!("{missing:#}").contains("cannot read"),
            "{missing:#}"
        );
    }
}
