//! Mutual TLS between the cluster's processes: `tauc-job` ↔ scheduler
//! (gRPC, and the HTTP job view and metrics on the same port), executor →
//! scheduler, and everyone → an executor's Flight port (shuffle data and
//! results).
//!
//! One CA signs a certificate for every process; each process presents its
//! own and accepts only peers the CA signed. The scheduler runs whatever
//! plan it is sent with the cluster's S3 credentials, so a server-only TLS
//! (anyone may connect) would encrypt the traffic but still let anyone on
//! the network read the warehouse: client certificates are required.
//!
//! Ballista 55 builds every client connection through one hook (an endpoint
//! override) but starts two of its servers itself: the executor's Flight
//! server can be replaced (tauc serves it with TLS), its task-push gRPC
//! server cannot, and the scheduler checks that port in plain text when an
//! executor registers. With TLS, executors therefore poll the scheduler for
//! tasks (Ballista's pull mode, `--task-mode pull`) and open no task-push
//! port.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::EndpointOverrideFn;
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_endpoint};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

pub use tauc_common::config::TlsFiles;

/// Loaded, checked TLS material of one process.
pub struct ClusterTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::config(format!("cannot read {flag} {}: {e}", path.display())))
}

fn certs(flag: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::config(format!("{flag} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{flag} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

impl ClusterTls {
    /// The loaded settings; `None` when no file is given (plain TCP).
    pub fn from_files(files: &TlsFiles) -> Result<Option<Arc<ClusterTls>>> {
        match (&files.ca, &files.cert, &files.key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => ClusterTls::load(ca, cert, key).map(Some),
            _ => Err(Error::config(
                "--cluster-ca, --cluster-cert and --cluster-key (TAUC_CLUSTER_CA, \
                 TAUC_CLUSTER_CERT, TAUC_CLUSTER_KEY) go together: give all three for TLS \
                 between the cluster's processes, or none",
            )),
        }
    }

    fn load(ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<Arc<ClusterTls>> {
        let ca = read("--cluster-ca", ca_path)?;
        let cert = read("--cluster-cert", cert_path)?;
        let key = read("--cluster-key", key_path)?;
        let ca_certs = certs("--cluster-ca", ca_path, &ca)?;
        let chain = certs("--cluster-cert", cert_path, &cert)?;
        let private = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            Error::config(format!(
                "--cluster-key {} holds no PEM private key: {e}",
                key_path.display()
            ))
        })?;
        let acceptor = acceptor(ca_certs, chain, private).map_err(|e| {
            Error::config(format!(
                "--cluster-ca {}, --cluster-cert {} and --cluster-key {} do not make a TLS \
                 server: {e}",
                ca_path.display(),
                cert_path.display(),
                key_path.display()
            ))
        })?;
        Ok(Arc::new(ClusterTls {
            ca,
            cert,
            key,
            acceptor,
        }))
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }

    /// For tonic clients: trust only the cluster's CA, present this
    /// process's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(self.identity())
    }

    /// For tonic servers (the executor's Flight port): this process's
    /// certificate, and clients must show one the CA signed.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Ballista's endpoint hook: every gRPC and Flight connection Ballista
    /// opens goes over TLS with [`ClusterTls::client`]. Ballista writes
    /// some URLs as `http://…` whatever its TLS setting; they are turned
    /// into `https://…` (tonic only speaks TLS to an `https` URL).
    pub fn endpoint_override(self: &Arc<Self>) -> EndpointOverrideFn {
        self.endpoint_override_relayed(None)
    }

    /// [`ClusterTls::endpoint_override`] for a process that reaches one
    /// peer through a loopback relay (the executor's scheduler link):
    /// connections to `relayed.0` (`127.0.0.1:port`) check the certificate
    /// against the peer's own name, `relayed.1`.
    pub fn endpoint_override_relayed(
        self: &Arc<Self>,
        relayed: Option<(String, String)>,
    ) -> EndpointOverrideFn {
        let tls = self.clone();
        Arc::new(move |endpoint| {
            let name = relayed.as_ref().and_then(|(via, name)| {
                (endpoint.uri().authority().map(|a| a.as_str()) == Some(via.as_str()))
                    .then(|| name.clone())
            });
            let endpoint = if endpoint.uri().scheme_str() == Some("https") {
                endpoint
            } else {
                let authority = endpoint
                    .uri()
                    .authority()
                    .ok_or("a gRPC URL without a host")?
                    .to_string();
                create_grpc_client_endpoint(
                    format!("https://{authority}"),
                    Some(&GrpcClientConfig::default()),
                )?
            };
            let client = match name {
                Some(name) => tls.client().domain_name(name),
                None => tls.client(),
            };
            Ok(endpoint.tls_config(client)?)
        })
    }

    /// An HTTP client of the scheduler's job view and health check.
    pub fn http_client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let mut both = self.cert.clone();
        both.push(b'\n');
        both.extend_from_slice(&self.key);
        let bad = |e: reqwest::Error| Error::config(format!("cluster TLS files: {e}"));
        Ok(builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca).map_err(bad)?)
            .identity(reqwest::Identity::from_pem(&both).map_err(bad)?))
    }

    /// Accepts TLS on `listener` (HTTP/2 for gRPC, HTTP/1.1 for the job
    /// view and metrics), for `axum::serve`.
    pub fn listener(&self, listener: TcpListener) -> Result<TlsListener> {
        TlsListener::new(listener, self.acceptor.clone())
    }
}

/// A rustls server that requires a client certificate signed by the CA.
fn acceptor(
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> std::result::Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a peer has to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// TLS connections of a TCP listener, handshakes done apart so a slow or
/// failing peer does not hold up the others. A failed handshake (a plain
/// TCP client, an unknown certificate) is logged with the peer's address.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> Result<TlsListener> {
        let local = listener
            .local_addr()
            .map_err(|e| Error::Server(format!("listener address: {e}")))?;
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept on {local}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake refused: {e}"),
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // the accept loop never ends while the listener lives
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
