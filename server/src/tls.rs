//! HTTPS served by the binary itself, and the certificates of `patrol tls`.
//!
//! The phone app needs a secure origin (geolocation, service workers) and an intranet may
//! have no TLS terminator in front of the service, so `patrol serve` can speak TLS on its
//! own (rustls on ring), and `patrol tls` makes a certificate for it or a signing request
//! for the network's own certificate authority.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::settings::TlsFiles;

/// File name of the certificate chain `patrol tls self-signed` writes (the server's
/// certificate, then the certificate that signed it).
pub const CERT_FILE: &str = "patrol-cert.pem";
/// File name of the private key of the server's certificate.
pub const KEY_FILE: &str = "patrol-key.pem";
/// File name of the certificate a phone installs to trust the server.
pub const CA_FILE: &str = "patrol-ca.pem";
/// File name of the certificate signing request of `patrol tls csr`.
pub const CSR_FILE: &str = "patrol.csr";

/// Longest validity of a server certificate that iOS and macOS accept.
pub const MAX_APPLE_DAYS: u32 = 825;

/// A client gets this long to finish its handshake, so that one that connects and says
/// nothing holds a socket for a bounded time only.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the certificate chain and key and builds the TLS configuration of the server;
/// the error names the file and what is wrong with it.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert, key) = (&files.cert, &files.key);
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("reading the TLS certificate file {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "the TLS certificate file {} is not PEM: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate file {} holds no certificate (no BEGIN CERTIFICATE block)",
            cert.display()
        );
    }
    let key_pem = std::fs::read(key)
        .with_context(|| format!("reading the TLS key file {}", key.display()))?;
    let private_key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => bail!(
            "the TLS key file {} holds no private key (no BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
            key.display()
        ),
        Err(e) => bail!("the TLS key file {} is not PEM: {e}", key.display()),
    };
    // ring, named rather than left to the process default, so that nothing else linked in
    // can change which provider serves.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => anyhow!(
                "the TLS key in {} does not belong to the first certificate in {}",
                key.display(),
                cert.display()
            ),
            other => anyhow!(
                "the TLS certificate {} or key {} is unusable: {other}",
                cert.display(),
                key.display()
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener for `axum::serve` that hands out connections once their TLS handshake is
/// done. The handshakes run in tasks of their own, so a slow or silent client delays no
/// one else; a failed one (a plain-HTTP request, a client that does not trust the
/// certificate) is logged at debug and its connection closed.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` (needs a Tokio runtime).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            local_addr,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // axum drops the listener when it stops accepting at shutdown; the port closes now
        // rather than when the accepting task next wakes.
        self.acceptor.abort();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
) {
    loop {
        // axum's own accept: it retries, and waits out a full file table the way plain
        // HTTP serving does.
        let (tcp, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = ready.closed() => return,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Fails only when the server has stopped; the connection just closes.
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does when aborted): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// What `patrol tls self-signed` makes, as PEM text.
pub struct SelfSigned {
    /// The certificate a phone installs: a certificate authority that signed the server's
    /// certificate and whose key was thrown away afterwards, so it can vouch for nothing
    /// else.
    pub ca_pem: String,
    /// The server's certificate followed by the CA's, for `PATROL_TLS_CERT`.
    pub chain_pem: String,
    /// The server's private key, for `PATROL_TLS_KEY`.
    pub key_pem: String,
}

/// Makes a certificate for `hosts` (DNS names or IP addresses) valid for `days` from
/// yesterday, signed by a one-off CA.
///
/// Why a CA and not one certificate signing itself: Android installs only a certificate
/// marked as a CA as a "CA certificate", and rustls-based clients refuse a CA certificate
/// as a server's own. A CA whose key is discarded right away is trusted by both and can
/// sign nothing more.
pub fn self_signed(hosts: &[String], days: u32) -> anyhow::Result<SelfSigned> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let sans = subject_alt_names(hosts)?;
    if days == 0 {
        bail!("--days must be at least 1");
    }
    // From yesterday, so that a phone whose clock is a little behind accepts it too.
    let from = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let until = from + chrono::Days::new(u64::from(days));
    let date = |d: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("patrol CA for {}", sans[0]));
    ca.distinguished_name
        .push(DnType::OrganizationName, "patrol (self-signed)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = date(from);
    ca.not_after = date(until);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let common_name = sans[0].clone();
    let mut server = CertificateParams::new(sans)?;
    server
        .distinguished_name
        .push(DnType::CommonName, common_name);
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = date(from);
    server.not_after = date(until);
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    drop(issuer);

    Ok(SelfSigned {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
    })
}

/// What `patrol tls csr` makes, as PEM text.
pub struct SigningRequest {
    /// The PKCS#10 request for the network's CA.
    pub csr_pem: String,
    /// The private key it was made for, for `PATROL_TLS_KEY`.
    pub key_pem: String,
}

/// Makes a new private key and a certificate signing request for `hosts`.
pub fn signing_request(hosts: &[String]) -> anyhow::Result<SigningRequest> {
    let sans = subject_alt_names(hosts)?;
    let common_name = sans[0].clone();
    let mut params = rcgen::CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    Ok(SigningRequest {
        csr_pem: csr.pem()?,
        key_pem: key.serialize_pem(),
    })
}

/// Checks each host as a client would (a DNS name or an IP address) and returns them as
/// rcgen takes them (it makes an IP address an IP subjectAltName).
fn subject_alt_names(hosts: &[String]) -> anyhow::Result<Vec<String>> {
    if hosts.is_empty() {
        bail!("name at least one --host (a DNS name or an IP address)");
    }
    hosts
        .iter()
        .map(|h| {
            let h = h.trim();
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            match ServerName::try_from(bare) {
                Ok(ServerName::IpAddress(ip)) => Ok(std::net::IpAddr::from(ip).to_string()),
                Ok(_) => Ok(bare.to_ascii_lowercase()),
                Err(_) => bail!("--host {h:?} is neither a DNS name nor an IP address"),
            }
        })
        .collect()
}

/// Writes `patrol tls self-signed`'s files into `dir` (made if missing); the paths written.
pub fn write_self_signed(
    dir: &Path,
    hosts: &[String],
    days: u32,
    force: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let made = self_signed(hosts, days)?;
    write_files(
        dir,
        &[
            (CERT_FILE, &made.chain_pem, false),
            (KEY_FILE, &made.key_pem, true),
            (CA_FILE, &made.ca_pem, false),
        ],
        force,
    )
}

/// Writes `patrol tls csr`'s files into `dir` (made if missing); the paths written.
pub fn write_signing_request(
    dir: &Path,
    hosts: &[String],
    force: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let made = signing_request(hosts)?;
    write_files(
        dir,
        &[
            (KEY_FILE, &made.key_pem, true),
            (CSR_FILE, &made.csr_pem, false),
        ],
        force,
    )
}

/// Writes each (name, contents, private) into `dir`; none if any exists already and
/// `force` is not set. A private file is readable by its owner only (on Unix).
fn write_files(
    dir: &Path,
    files: &[(&str, &str, bool)],
    force: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = files.iter().map(|(name, _, _)| dir.join(name)).collect();
    if !force && let Some(existing) = paths.iter().find(|p| p.exists()) {
        bail!(
            "{} exists already; pass --force to replace it",
            existing.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    for (path, (_, contents, private)) in paths.iter().zip(files) {
        #[cfg(not(unix))]
        let _ = private;
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        #[cfg(unix)]
        if *private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        // A replaced file keeps its old mode, which the open above does not change.
        #[cfg(unix)]
        if *private {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", path.display()))?;
        }
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(paths)
}
