//! TLS for sessions (rustls). Trust works like ssh's: a daemon has a certificate (given, or made
//! once and kept), the client pins its SHA-256 fingerprint (`--tls-fingerprint`), or trusts it on
//! first use and records it in `known_hosts` under the user's config folder; a later different
//! certificate is refused. There are no certificate authorities to configure.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, Connection, DigitallySignedStruct, ServerConfig};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// SHA-256 of a certificate, as lowercase hex: what users compare and pin.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The daemon's side: its certificate and key.
#[derive(Debug)]
pub struct Server {
    pub config: Arc<ServerConfig>,
    pub fingerprint: String,
}

impl Server {
    /// From PEM files the user gave.
    pub fn from_files(cert: &Path, key: &Path) -> io::Result<Server> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| other(format!("{}: {e}", cert.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| other(format!("{}: {e}", cert.display())))?;
        let first = certs
            .first()
            .ok_or_else(|| other(format!("{}: no certificate in it", cert.display())))?;
        let fingerprint = fingerprint(first);
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| other(format!("{}: {e}", key.display())))?;
        Self::build(certs, key, fingerprint)
    }

    /// A self-signed certificate kept in `dir` (made on first start, reused after, so clients'
    /// pins stay valid across restarts). Key and certificate share one file, written whole and
    /// renamed into place, so two daemons starting at once never pair one's key with the
    /// other's certificate.
    pub fn self_signed(dir: &Path) -> io::Result<Server> {
        let identity = dir.join("identity.pem");
        if !identity.exists() {
            std::fs::create_dir_all(dir)?;
            let made = rcgen::generate_simple_self_signed(vec!["blit-daemon".to_string()])
                .map_err(other)?;
            let pem = format!("{}{}", made.key_pair.serialize_pem(), made.cert.pem());
            let tmp = dir.join(format!(".identity.{}.tmp", std::process::id()));
            write_private(&tmp, pem.as_bytes())?;
            std::fs::rename(&tmp, &identity)?;
        }
        Self::from_files(&identity, &identity)
    }

    fn build(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        fingerprint: String,
    ) -> io::Result<Server> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(other)?;
        Ok(Server {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// Runs the handshake on a fresh connection.
    pub fn accept(&self, sock: &mut TcpStream) -> io::Result<Connection> {
        let mut conn = rustls::ServerConnection::new(Arc::clone(&self.config)).map_err(other)?;
        while conn.is_handshaking() {
            conn.complete_io(sock)?;
        }
        // The writer thread drains every record right after encrypting (see [`Writer`]); the
        // default cap would make a large write fail half-way instead.
        conn.set_buffer_limit(None);
        Ok(Connection::Server(conn))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// Accepts exactly one certificate (by fingerprint), or on first use any, remembering which.
#[derive(Debug)]
struct Pinned {
    want: Option<String>,
    seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        *self.seen.lock().unwrap() = Some(fp.clone());
        match &self.want {
            Some(w) if !w.eq_ignore_ascii_case(&fp) => Err(rustls::Error::General(format!(
                "the daemon's certificate has fingerprint {fp}, not the expected {w} \
                 (if the daemon's certificate really changed, remove its line from known_hosts)"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where the client remembers daemons it trusted: `$BLIT_KNOWN_HOSTS`, else
/// `$XDG_CONFIG_HOME/blit/known_hosts`, else `~/.config/blit/known_hosts`.
pub fn known_hosts_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BLIT_KNOWN_HOSTS") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("blit").join("known_hosts"))
}

fn known_fingerprint(file: &Path, host: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(host)).then(|| parts.next().map(str::to_string))?
    })
}

fn remember(file: &Path, host: &str, fp: &str) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(f, "{host} {fp}")
}

/// Runs the client's handshake. `host` is `HOST:PORT` as the user wrote it (the known_hosts key).
pub fn connect(sock: &mut TcpStream, host: &str, pin: Option<&str>) -> io::Result<Connection> {
    let known = known_hosts_path();
    let recorded = known.as_deref().and_then(|k| known_fingerprint(k, host));
    let want = pin.map(str::to_string).or(recorded.clone());
    let verifier = Arc::new(Pinned {
        want,
        seen: Mutex::new(None),
        provider: provider(),
    });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from("blit-daemon").map_err(other)?;
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(other)?;
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    conn.set_buffer_limit(None);
    if pin.is_none() && recorded.is_none() {
        let seen = verifier.seen.lock().unwrap().clone();
        if let (Some(fp), Some(file)) = (seen, known) {
            eprintln!(
                "blit: trusting {host} on first use: certificate fingerprint {fp} (recorded in {})",
                file.display()
            );
            remember(&file, host, &fp)?;
        }
    }
    Ok(Connection::Client(conn))
}

/// The receiving half of a TLS session for the peer's reader thread: raw bytes from the socket
/// go into the shared connection, plaintext comes out. The socket is read outside the lock (so
/// the writer thread can always encrypt) and only ever written by the writer thread
/// ([`Writer`]); when decrypting produced something to send (a key update), `wake` asks that
/// thread to send it.
pub struct Reader {
    pub sock: TcpStream,
    pub conn: Arc<Mutex<Connection>>,
    pub wake: Box<dyn Fn() + Send>,
    /// Raw bytes read but not yet taken by the TLS layer (it takes no more while its plaintext
    /// buffer is full).
    pub raw: Vec<u8>,
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; 32 << 10];
        loop {
            {
                let mut c = self.conn.lock().unwrap();
                let mut fed = 0;
                let mut refused = None;
                while fed < self.raw.len() {
                    match c.read_tls(&mut &self.raw[fed..]) {
                        Ok(0) => break,
                        Ok(n) => {
                            fed += n;
                            c.process_new_packets().map_err(other)?;
                        }
                        Err(e) => {
                            refused = Some(e);
                            break;
                        }
                    }
                }
                self.raw.drain(..fed);
                if c.wants_write() {
                    (self.wake)();
                }
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if let Some(e) = refused {
                    return Err(e);
                }
            }
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The sending half: plaintext is encrypted under the lock, then written to the socket outside
/// it, so a full socket never stalls the reader.
pub struct Writer {
    pub sock: TcpStream,
    pub conn: Arc<Mutex<Connection>>,
    /// Encrypted records on their way to the socket (reused: see `wire::buffer`).
    pub out: Vec<u8>,
}

impl Writer {
    fn drain(&mut self) -> io::Result<()> {
        self.out.clear();
        {
            let mut c = self.conn.lock().unwrap();
            while c.wants_write() {
                c.write_tls(&mut self.out)?;
            }
        }
        self.sock.write_all(&self.out)
    }

    /// Ends the session cleanly (a TLS close, so the other side can tell the end from a cut).
    pub fn close(&mut self) -> io::Result<()> {
        self.conn.lock().unwrap().send_close_notify();
        self.drain()
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.conn.lock().unwrap().writer().write_all(buf)?;
        self.drain()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.sock.flush()
    }
}
