//! The REST listener: accepts TCP connections, optionally wraps them in TLS
//! (rustls with the ring provider, the one async-nats already brings), and
//! serves HTTP/1.1 on each with hyper.
//!
//! It replaces `axum::serve` because that offers no setting for what a
//! hostile client can hold: here a connection must send its whole request
//! head within `http_header_read_timeout` (a slow-loris client is cut off,
//! an idle keep-alive connection closed), the head may be at most
//! `http_max_header_bytes` (hyper answers 431 beyond), a TLS handshake must
//! finish within the same timeout, and at most `http_max_connections` are
//! open at once (further clients wait in the kernel's accept queue). With
//! `http_max_connections_per_ip`, one client address cannot hold them all:
//! a connection past its share is closed as soon as it is accepted.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// The PEM files of the listener's certificate chain and private key.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (`http_tls_cert`).
    pub cert: PathBuf,
    /// Private key: PKCS#8, PKCS#1 or SEC1 (`http_tls_key`).
    pub key: PathBuf,
}

/// How the listener treats connections.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerSettings {
    /// TLS, when both files are configured; plain HTTP otherwise.
    pub tls: Option<TlsFiles>,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// How long a connection may take to send a request head (and to finish
    /// a TLS handshake) before it is closed.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address (0: no cap).
    pub max_connections_per_ip: usize,
}

impl Default for ListenerSettings {
    /// The documented defaults (config/default.toml).
    fn default() -> ListenerSettings {
        ListenerSettings {
            tls: None,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 0,
        }
    }
}

/// Why the listener cannot start; each names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A PEM file cannot be read.
    #[error("cannot read {path} ({key}): {source}")]
    Read {
        /// The configuration key that named the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path} ({key}): {problem}")]
    Pem {
        /// The configuration key that named the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refuses the pair (e.g. the key does not match the certificate).
    #[error("http_tls_cert and http_tls_key do not make a TLS server: {0}")]
    Tls(#[from] rustls::Error),
    /// The address cannot be bound.
    #[error("cannot listen on {addr} (http_addr): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, ListenerError> {
    std::fs::read(path).map_err(|source| ListenerError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the certificate chain and key into a TLS acceptor (HTTP/1.1 over
/// TLS 1.2 or 1.3, ring's safe defaults). Done before anything else at
/// start-up, so a bad file stops the service at once, naming the key.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ListenerError> {
    let pem_error = |key, path: &Path, problem: String| ListenerError::Pem {
        key,
        path: path.to_path_buf(),
        problem,
    };
    let cert_pem = read_pem("http_tls_cert", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("http_tls_cert", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "http_tls_cert",
            &files.cert,
            "holds no PEM certificate (BEGIN CERTIFICATE)".into(),
        ));
    }
    let key_pem = read_pem("http_tls_key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            "http_tls_key",
            &files.key,
            format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Only HTTP/1.1 is served: say so, so no client tries h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A bound REST listener, TLS or plain.
pub struct RestListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: ListenerSettings,
}

impl RestListener {
    /// Binds `addr`; `tls` from [`tls_acceptor`] when TLS is configured.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        settings: ListenerSettings,
    ) -> Result<RestListener, ListenerError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind { addr, source })?;
        Ok(RestListener { tcp, tls, settings })
    }

    /// The bound address (the real port when port 0 was asked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves `router` until `stop` completes; then accepts no more, asks
    /// every connection to close after its current request, and waits for
    /// them at most `header_read_timeout`.
    pub async fn serve(self, router: Router, stop: impl Future<Output = ()>) {
        let settings = &self.settings;
        let connections = Arc::new(Semaphore::new(settings.max_connections));
        let per_client = Arc::new(ClientConnections::default());
        let (closing, closing_seen) = watch::channel(false);
        let service = TowerToHyperService::new(router);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_header_size(settings.max_header_bytes)
            // The read buffer only ever holds a head (GETs carry no body);
            // hyper's floor is 8 KiB.
            .max_buf_size(settings.max_header_bytes.max(8192));
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                _ = &mut stop => break,
                permit = connections.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                _ = &mut stop => break,
                accepted = self.tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: pause briefly rather than spin.
                    tracing::warn!("REST listener: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let client_slot = match settings.max_connections_per_ip {
                0 => None,
                cap => match per_client.admit(peer.ip(), cap) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(%peer, "REST listener: client at http_max_connections_per_ip, closed");
                        continue;
                    }
                },
            };
            let connection = Connection {
                http: http.clone(),
                service: service.clone(),
                closing: closing_seen.clone(),
            };
            let tls = self.tls.clone();
            let handshake_timeout = settings.header_read_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let _client_slot = client_slot;
                match tls {
                    None => connection.drive(stream).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => connection.drive(stream).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(self.tcp);
        let _ = closing.send(true);
        let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout(settings.header_read_timeout, connections.acquire_many(all)).await;
        if drained.is_err() {
            tracing::debug!("REST listener: connections still open at shutdown were dropped");
        }
    }
}

/// How many connections each client address has open.
#[derive(Default)]
struct ClientConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client address, given back when dropped.
struct ClientSlot {
    clients: Arc<ClientConnections>,
    ip: IpAddr,
}

impl ClientConnections {
    /// A slot for one more connection from `ip`, unless it has `cap` open.
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        // An IPv4 client seen through an IPv6 socket is the same client.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What each connection's task needs.
struct Connection {
    http: http1::Builder,
    service: TowerToHyperService<Router>,
    closing: watch::Receiver<bool>,
}

impl Connection {
    /// Serves one connection until it closes, or until shutdown asks it to
    /// close after its current request.
    async fn drive<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Upgrades are allowed so that a WebSocket route works as it did
        // under `axum::serve`.
        let connection = self
            .http
            .serve_connection(TokioIo::new(stream), self.service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("REST connection ended: {e}");
                }
                return;
            }
            _ = self.closing.wait_for(|closing| *closing) => {}
        }
        connection.as_mut().graceful_shutdown();
        if let Err(e) = connection.await {
            tracing::debug!("REST connection ended at shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_address_gets_at_most_its_cap_and_slots_come_back() {
        let clients = Arc::new(ClientConnections::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let a_as_v6: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = clients.admit(a, 2).unwrap();
        let second = clients.admit(a_as_v6, 2).unwrap();
        assert!(
            clients.admit(a, 2).is_none(),
            "a third from the same client"
        );
        let other = clients.admit(b, 2);
        assert!(other.is_some(), "another client is not affected");
        drop(first);
        let again = clients.admit(a, 2);
        assert!(again.is_some(), "a closed connection frees its slot");
        drop((second, other, again));
        assert!(
            clients.open.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }
}
