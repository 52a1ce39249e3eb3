//! TLS for sessions (rustls). Trust works like ssh's: a daemon has a certificate (given, or made
//! once and kept), the client pins its SHA-256 fingerprint (`--tls-fingerprint`), or trusts it on
//! first use and records it in `known_hosts` under the user's config folder; a later different
//! certificate is refused. There are no certificate authorities to configure.

mod record;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::unbuffered::{
    ConnectionState, EncodeError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SupportedCipherSuite};

/// The record reader, public for its fuzz target alone.
#[doc(hidden)]
pub use record::Opener;
use record::{Kernel, Sealer, Shared};
pub use record::{Reader, Session, Writer};

/// TLS 1.3 suites only (both ends are Blit), fastest first as measured here with *ring*
/// (16 KiB records, one core): AES-128-GCM 6.4-9.0 GB/s, AES-256-GCM 6.8-7.3 GB/s,
/// ChaCha20-Poly1305 2.0-2.3 GB/s. The daemon picks by this order.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as s;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            s::TLS13_AES_128_GCM_SHA256,
            s::TLS13_AES_256_GCM_SHA384,
            s::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
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
            private_dir(dir)?;
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
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(other)?;
        // The record layer is Blit's after the handshake (see `record`), so rustls must hand
        // over the keys, and nothing may follow the handshake that only rustls would expect.
        config.enable_secret_extraction = true;
        config.send_tls13_tickets = 0;
        Ok(Server {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// Runs the handshake on a fresh connection.
    pub fn accept(&self, mut sock: TcpStream) -> io::Result<Session> {
        let mut conn = rustls::server::UnbufferedServerConnection::new(Arc::clone(&self.config))
            .map_err(other)?;
        let early = handshake(&mut conn, &mut sock, |c, b| c.process_tls_records(b))?;
        let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(other)?;
        session(sock, secrets, Kernel::Server(kernel), &early)
    }
}

/// Makes the folder holding the identity (and its missing parents), readable by its owner
/// alone.
fn private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Writes a private key's file: a new file (never one that stands there already, nor through a
/// symlink planted under its name), readable by its owner alone.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
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
/// `$XDG_CONFIG_HOME/blit/known_hosts`, else `~/.config/blit/known_hosts` (on Windows
/// `%APPDATA%\blit\known_hosts`).
pub fn known_hosts_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BLIT_KNOWN_HOSTS") {
        return Some(PathBuf::from(p));
    }
    #[cfg(windows)]
    let base = std::env::var_os("APPDATA").map(PathBuf::from)?;
    #[cfg(not(windows))]
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("blit").join("known_hosts"))
}

/// The fingerprint `known_hosts` records for `host`, if any. The file is read as bytes and every
/// line must parse (`HOST FINGERPRINT`, or a `#` comment): trust fails closed, so a file that
/// cannot be read or understood is an error naming it, never "host unknown", which would trust
/// whoever answers on first use and record it beside the real fingerprint.
fn known_fingerprint(file: &Path, host: &str) -> io::Result<Option<String>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", file.display()),
            ))
        }
    };
    fingerprint_in(&bytes, host).map_err(|(n, why)| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} line {n}: {why}; fix or remove it (trust is never decided from a file that \
                 does not parse)",
                file.display()
            ),
        )
    })
}

/// The fingerprint a known_hosts file's `bytes` record for `host`, if any; `Err` with the line
/// number and what is wrong with it for a file that does not parse as a whole.
pub fn fingerprint_in(bytes: &[u8], host: &str) -> Result<Option<String>, (usize, String)> {
    let mut found: Option<String> = None;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let bad = |why: &str| (i + 1, why.to_string());
        let line = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(h), Some(fp), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not `HOST FINGERPRINT`"));
        };
        if !is_fingerprint(fp) {
            return Err(bad("the fingerprint is not 64 hexadecimal digits"));
        }
        if h == host {
            match &found {
                Some(f) if !f.eq_ignore_ascii_case(fp) => {
                    return Err(bad(&format!("a second, different certificate for {h}")))
                }
                _ => found = Some(fp.to_string()),
            }
        }
    }
    Ok(found)
}

/// Whether `s` is a SHA-256 fingerprint as Blit writes it: 64 hexadecimal digits.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
/// Without a pin, the daemon's certificate is checked against known_hosts, which must exist
/// somewhere (`$BLIT_KNOWN_HOSTS`, the user's config folder): with nowhere to keep it nothing
/// could ever be checked, and the connection is refused.
pub fn connect(
    mut sock: TcpStream,
    host: &str,
    pin: Option<&str>,
    notice: &dyn Fn(&str),
) -> io::Result<Session> {
    if let Some(p) = pin.filter(|p| !is_fingerprint(p)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--tls-fingerprint {p:?} is not 64 hexadecimal digits (a SHA-256)"),
        ));
    }
    let (known, recorded) = match pin {
        Some(_) => (None, None),
        None => {
            let file = known_hosts_path().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no known_hosts to check the daemon's certificate against (HOME, \
                     XDG_CONFIG_HOME and BLIT_KNOWN_HOSTS are all unset): pin it with \
                     --tls-fingerprint, or set BLIT_KNOWN_HOSTS",
                )
            })?;
            let recorded = known_fingerprint(&file, host)?;
            (Some(file), recorded)
        }
    };
    let want = pin.map(str::to_string).or(recorded.clone());
    let verifier = Arc::new(Pinned {
        want,
        seen: Mutex::new(None),
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from("blit-daemon").map_err(other)?;
    let mut conn =
        rustls::client::UnbufferedClientConnection::new(Arc::new(config), name).map_err(other)?;
    let early = handshake(&mut conn, &mut sock, |c, b| c.process_tls_records(b))?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(other)?;
    if let (None, Some(file)) = (&recorded, known) {
        let seen = verifier.seen.lock().unwrap().clone();
        if let Some(fp) = seen {
            notice(&format!(
                "trusting {host} on first use: certificate fingerprint {fp} (recorded in {})",
                crate::names::escape(&file)
            ));
            remember(&file, host, &fp)?;
        }
    }
    session(sock, secrets, Kernel::Client(kernel), &early)
}

/// What the handshake read past its end (the peer may send its first records right behind its
/// last handshake message): records rustls already opened, and sealed bytes not yet looked at.
struct Early {
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

/// Drives rustls through the handshake on a blocking socket.
fn handshake<D>(
    conn: &mut UnbufferedConnectionCommon<D>,
    sock: &mut (impl Read + Write),
    step: impl for<'c, 'i> Fn(
        &'c mut UnbufferedConnectionCommon<D>,
        &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, D>,
) -> io::Result<Early> {
    /// Handshake messages are a few KiB; a peer sending more than this is refused.
    const LIMIT: usize = 256 << 10;
    let mut incoming = vec![0u8; 16 << 10];
    let mut used = 0;
    let mut outgoing = vec![0u8; 16 << 10];
    let mut queued = 0;
    let mut plain = Vec::new();
    loop {
        let UnbufferedStatus { mut discard, state } = step(conn, &mut incoming[..used]);
        let mut traffic = false;
        let mut read = false;
        match state.map_err(other)? {
            ConnectionState::EncodeTlsData(mut e) => loop {
                match e.encode(&mut outgoing[queued..]) {
                    Ok(n) => {
                        queued += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        outgoing.resize(queued + required_size, 0)
                    }
                    Err(e) => return Err(other(e)),
                }
            },
            ConnectionState::TransmitTlsData(t) => {
                sock.write_all(&outgoing[..queued])?;
                queued = 0;
                t.done();
            }
            ConnectionState::BlockedHandshake => read = true,
            ConnectionState::WriteTraffic(_) => traffic = true,
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    let record = record.map_err(other)?;
                    discard += record.discard;
                    plain.extend_from_slice(record.payload);
                }
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(other(
                    "the peer closed the connection during the TLS handshake",
                ))
            }
            _ => return Err(other("unexpected data during the TLS handshake")),
        }
        incoming.copy_within(discard..used, 0);
        used -= discard;
        if traffic {
            // A daemon may send before it has the client's last message (TLS 1.3 allows it);
            // the keys are taken only once both directions are established.
            if !conn.is_handshaking() {
                let sealed = incoming[..used].to_vec();
                return Ok(Early { plain, sealed });
            }
            read = true;
        }
        if read {
            if used == incoming.len() {
                if used >= LIMIT {
                    return Err(other("the TLS handshake is too large"));
                }
                incoming.resize(used * 2, 0);
            }
            let n = sock.read(&mut incoming[used..])?;
            if n == 0 {
                return Err(other(
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            used += n;
        }
    }
}

/// Takes the keys from rustls and sets up the record layer.
fn session(
    sock: TcpStream,
    secrets: rustls::ExtractedSecrets,
    kernel: Kernel,
    early: &Early,
) -> io::Result<Session> {
    // Built without TLS 1.2 (rustls's `tls12` feature off), every suite is a TLS 1.3 one.
    let SupportedCipherSuite::Tls13(suite) = kernel.suite();
    // Well inside the limit (2^24 records for AES-GCM): a key update every 2^22 records
    // (64 GiB) at most.
    let rekey_after = (suite.common.confidentiality_limit / 4).min(1 << 22);
    let shared = Arc::new(Shared {
        kernel: Mutex::new(kernel),
        suite,
        update_asked: AtomicBool::new(false),
    });
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    Ok(Session {
        sock,
        seal: Sealer {
            shared: Arc::clone(&shared),
            key: record::SealKey::new(tx)?,
            seq: tx_seq,
            rekey_after,
            updates: 0,
        },
        open: Opener::new(
            Arc::clone(&shared),
            record::decrypter(suite, rx)?,
            rx_seq,
            &early.plain,
            &early.sealed,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::unbuffered::{EncodeTlsData, EncryptError};
    use rustls::ContentType;
    use std::net::TcpListener;
    use std::thread;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// The identity's file is made new, owner-only: a symlink planted under its name (to make
    /// the daemon write its key elsewhere) or a file already there is refused, and left as it
    /// was.
    #[cfg(unix)]
    #[test]
    fn a_private_key_is_written_only_to_a_new_file_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"the attacker's file").unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(write_private(&planted, b"KEY").is_err());
        assert!(write_private(&target, b"KEY").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"the attacker's file");
        let fresh = dir.path().join("fresh");
        write_private(&fresh, b"KEY").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let nested = dir.path().join("a/b");
        private_dir(&nested).unwrap();
        let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    /// A daemon identity and a listener; the client pins the fingerprint (no known_hosts).
    fn daemon() -> (tempfile::TempDir, Arc<Server>, TcpListener) {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(Server::self_signed(dir.path()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        (dir, server, listener)
    }

    fn pair() -> (tempfile::TempDir, Session, Session) {
        let (dir, server, listener) = daemon();
        let addr = listener.local_addr().unwrap();
        let s = Arc::clone(&server);
        let accepted = thread::spawn(move || s.accept(listener.accept().unwrap().0).unwrap());
        let client = connect(
            TcpStream::connect(addr).unwrap(),
            "test",
            Some(&server.fingerprint),
            &|_| {},
        )
        .unwrap();
        (dir, client, accepted.join().unwrap())
    }

    /// Writes `data` in uneven pieces, every other one given up to be sealed in place, then
    /// closes.
    fn send_all(mut w: Writer, data: &[u8]) {
        let mut at = 0;
        let mut step = 1;
        let mut owned = false;
        while at < data.len() {
            let n = step.min(data.len() - at);
            if owned {
                let mut frame = data[at..at + n].to_vec();
                w.write_owned(&mut frame).unwrap();
            } else {
                w.write_all(&data[at..at + n]).unwrap();
            }
            owned = !owned;
            at += n;
            step = (step * 3 + 1) & ((1 << 20) - 1);
        }
        w.close().unwrap();
    }

    #[test]
    fn bytes_cross_both_ways_intact_across_key_updates() {
        let (_dir, mut client, mut server) = pair();
        client.rekey_after(7);
        server.rekey_after(5);
        let (mut sr, sw) = server.split().unwrap();
        let (mut cr, cw) = client.split().unwrap();
        let up = pattern(3 << 20);
        let down = pattern(2 << 20 | 12345);
        let (u, d) = (up.clone(), down.clone());
        let c_send = thread::spawn(move || send_all(cw, &u));
        let s_send = thread::spawn(move || send_all(sw, &d));
        let mut got_up = Vec::new();
        sr.read_to_end(&mut got_up).unwrap();
        let mut got_down = Vec::new();
        cr.read_to_end(&mut got_down).unwrap();
        c_send.join().unwrap();
        s_send.join().unwrap();
        assert!(got_up == up, "client to daemon bytes differ");
        assert!(got_down == down, "daemon to client bytes differ");
        // Over 190 records each way: without key updates the counters would be that high.
        assert!(sr.open.seq < 10, "the daemon side followed no key update");
        assert!(cr.open.seq < 10, "the client side followed no key update");
    }

    /// Frames sealed where they lie (record boundaries inside, a last record of one byte,
    /// exactly two records, less than one) read back intact, between frames sealed as copies.
    #[test]
    fn frames_sealed_in_place_read_back_intact() {
        let (_dir, client, server) = pair();
        let (mut r, _sw) = server.split().unwrap();
        let (_cr, mut w) = client.split().unwrap();
        const RECORD: usize = 1 << 14;
        // Even places are sealed in place; each is long enough that its ciphertext cannot
        // equal its plaintext by chance.
        let sizes = [5 * RECORD + 1, 100, 2 * RECORD, 1, 1000, 7];
        let data = pattern(sizes.iter().sum());
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        let mut at = 0;
        for (i, n) in sizes.into_iter().enumerate() {
            let plain = &data[at..at + n];
            if i % 2 == 0 {
                let mut frame = plain.to_vec();
                w.write_owned(&mut frame).unwrap();
                assert_eq!(frame.len(), n);
                assert!(frame != plain, "frame {i} was not sealed in place");
            } else {
                w.write_all(plain).unwrap();
            }
            at += n;
        }
        w.close().unwrap();
        assert!(reader.join().unwrap() == data, "the bytes read back differ");
    }

    /// A frame given up while the peer's request for new keys is pending is sealed as a copy,
    /// after the key update, and left as it was.
    #[test]
    fn a_frame_given_up_during_a_requested_key_update_is_sealed_after_it() {
        let (_dir, client, server) = pair();
        let (mut r, _sw) = server.split().unwrap();
        let (_cr, mut w) = client.split().unwrap();
        let data = pattern(3 << 14);
        w.seal
            .shared
            .update_asked
            .store(true, std::sync::atomic::Ordering::Release);
        let mut frame = data.clone();
        w.write_owned(&mut frame).unwrap();
        assert!(
            frame == data,
            "the frame was sealed in place across a key update"
        );
        assert_eq!(w.seal.updates, 1, "the requested key update was not sent");
        w.close().unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == data, "the bytes read back differ");
        assert_eq!(r.open.seq, 4, "the reader did not follow the key update");
    }

    /// The records are real TLS 1.3: rustls's own buffered connection on the other end reads
    /// them (key updates included), and ours reads its records and key updates.
    #[test]
    fn interoperates_with_rustls_record_layer() {
        let (_dir, server, listener) = daemon();
        let addr = listener.local_addr().unwrap();
        let config = Arc::clone(&server.config);
        let up = pattern(3 << 20);
        let down = pattern(700_001);
        let d = down.clone();
        let theirs = thread::spawn(move || {
            let mut sock = listener.accept().unwrap().0;
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            let mut got = Vec::new();
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            tls.read_to_end(&mut got).unwrap();
            for piece in d.chunks(100_000) {
                tls.write_all(piece).unwrap();
                tls.flush().unwrap();
                tls.conn.refresh_traffic_keys().unwrap();
            }
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            got
        });
        let mut ours = connect(
            TcpStream::connect(addr).unwrap(),
            "test",
            Some(&server.fingerprint),
            &|_| {},
        )
        .unwrap();
        // Frames of up to 40 records are sealed in place; longer ones cross a key update.
        ours.rekey_after(40);
        let (mut r, w) = ours.split().unwrap();
        send_all(w, &up);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(theirs.join().unwrap() == up, "rustls read different bytes");
        assert!(got == down, "we read different bytes from rustls");
        assert!(r.open.seq < 10, "rustls's key updates were not followed");
    }

    /// A daemon slow to read gets the client's first message in the same read as its last
    /// handshake message; that message must reach the session, not be lost or refused.
    #[test]
    fn data_right_behind_the_handshake_is_kept() {
        struct Slow(TcpStream);
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                thread::sleep(std::time::Duration::from_millis(100));
                self.0.read(buf)
            }
        }
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
        }
        let (_dir, server, listener) = daemon();
        let addr = listener.local_addr().unwrap();
        let s = Arc::clone(&server);
        let accepted = thread::spawn(move || {
            let mut slow = Slow(listener.accept().unwrap().0);
            let mut conn =
                rustls::server::UnbufferedServerConnection::new(Arc::clone(&s.config)).unwrap();
            let early = handshake(&mut conn, &mut slow, |c, b| c.process_tls_records(b)).unwrap();
            assert!(
                !early.plain.is_empty() || !early.sealed.is_empty(),
                "the test did not make the daemon read past the handshake"
            );
            let (secrets, kernel) = conn.dangerous_into_kernel_connection().unwrap();
            session(slow.0, secrets, Kernel::Server(kernel), &early).unwrap()
        });
        let mut client = connect(
            TcpStream::connect(addr).unwrap(),
            "test",
            Some(&server.fingerprint),
            &|_| {},
        )
        .unwrap();
        client.send(b"first words").unwrap();
        let mut daemon = accepted.join().unwrap();
        let mut got = [0u8; 11];
        daemon.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first words");
    }

    /// A peer asking for a key update (rustls's `refresh_traffic_keys` does) gets one before
    /// the next record, and rustls reads what follows under the new key.
    #[test]
    fn a_requested_key_update_is_answered() {
        let (_dir, server, listener) = daemon();
        let addr = listener.local_addr().unwrap();
        let config = Arc::clone(&server.config);
        let theirs = thread::spawn(move || {
            let mut sock = listener.accept().unwrap().0;
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let mut hello = [0u8; 5];
            tls.read_exact(&mut hello).unwrap();
            tls.conn.refresh_traffic_keys().unwrap();
            tls.write_all(b"go").unwrap();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).unwrap();
            rest
        });
        let ours = connect(
            TcpStream::connect(addr).unwrap(),
            "test",
            Some(&server.fingerprint),
            &|_| {},
        )
        .unwrap();
        let (mut r, mut w) = ours.split().unwrap();
        w.write_all(b"hello").unwrap();
        let mut go = [0u8; 2];
        r.read_exact(&mut go).unwrap();
        assert_eq!(&go, b"go");
        assert_eq!(w.seal.updates, 0);
        let after = pattern(100_000);
        w.write_all(&after).unwrap();
        assert_eq!(w.seal.updates, 1, "the requested key update was not sent");
        w.close().unwrap();
        assert!(
            theirs.join().unwrap() == after,
            "rustls read different bytes"
        );
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let (_dir, mut client, server) = pair();
        let mut records = Vec::new();
        client.seal.seal(b"hello there", &mut records).unwrap();
        let last = records[0].len() - 1;
        records[0][last] ^= 1;
        client.sock.write_all(&records[0]).unwrap();
        let (mut r, _w) = server.split().unwrap();
        let e = r.read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn a_cut_without_close_is_an_error_and_a_close_is_the_end() {
        let (_dir, client, server) = pair();
        let (mut r, _w) = server.split().unwrap();
        let (_cr, mut cw) = client.split().unwrap();
        cw.write_all(b"abc").unwrap();
        cw.close().unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");

        let (_dir, client, server) = pair();
        let (mut r, _w) = server.split().unwrap();
        let (_cr, mut cw) = client.split().unwrap();
        cw.write_all(b"abc").unwrap();
        cw.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"abc");
    }

    /// Writes records made by `from`'s sealer to its socket, as they are (a misbehaving peer's).
    fn send_raw(from: &mut Session, records: &[Vec<u8>]) {
        for r in records {
            from.sock.write_all(r).unwrap();
        }
    }

    /// One application data record from `from`.
    fn data_record(from: &mut Session, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        from.seal.seal(data, &mut out).unwrap();
        assert_eq!(out.len(), 1, "more than one record was made");
        out.pop().unwrap()
    }

    /// A handshake record from `from` holding `payload`, after which its sealer moves to new
    /// keys `key_updates` times (as many times as `payload` says it does).
    fn handshake_record(from: &mut Session, payload: &[u8], key_updates: usize) -> Vec<u8> {
        let record = from.seal.record(ContentType::Handshake, payload).unwrap();
        for _ in 0..key_updates {
            from.seal.next_key().unwrap();
        }
        record
    }

    fn assert_invalid(e: &io::Error, names: &str) {
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(
            e.to_string().contains(names),
            "{e:?} does not name {names:?}"
        );
    }

    /// The client's side sends a handshake record of `payload` (after which its keys move on
    /// `key_updates` times), then application data: the server must refuse the first, naming
    /// `why`, and deliver nothing.
    fn assert_handshake_refused(payload: &[u8], key_updates: usize, why: &str) {
        let (_dir, mut client, mut server) = pair();
        let records = [
            handshake_record(&mut client, payload, key_updates),
            data_record(&mut client, b"after"),
        ];
        send_raw(&mut client, &records);
        let e = server.read(&mut [0u8; 64]).unwrap_err();
        assert_invalid(&e, why);
    }

    /// KeyUpdate, update not requested.
    const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];
    /// KeyUpdate, update requested.
    const KEY_UPDATE_ASKING: [u8; 5] = [24, 0, 0, 1, 1];
    /// A NewSessionTicket: lifetime 60 s, age_add 0, a 1-byte nonce, a 1-byte ticket, no
    /// extensions.
    const TICKET: [u8; 19] = [4, 0, 0, 15, 0, 0, 0, 60, 0, 0, 0, 0, 1, 0, 0, 1, 0xaa, 0, 0];

    /// Handshake messages must not span a change of keys (RFC 8446 §5.1): a KeyUpdate with more
    /// handshake bytes behind it in its record is refused, not followed.
    #[test]
    fn a_key_update_not_ending_its_record_is_refused() {
        let two = [KEY_UPDATE, KEY_UPDATE].concat();
        assert_handshake_refused(&two, 2, "key update not at the end of its record");
    }

    /// Handshake records are never empty (RFC 8446 §5.1).
    #[test]
    fn an_empty_handshake_record_is_refused() {
        assert_handshake_refused(&[], 0, "an empty handshake record");
    }

    /// 32 key updates in a row, each asking for ours, are followed and answered by one key
    /// update before our next record; after application data, 33 in a row are refused.
    #[test]
    fn a_flood_of_key_updates_is_refused_and_requests_are_answered_once() {
        let (_dir, mut client, server) = pair();
        let mut records = Vec::new();
        for _ in 0..32 {
            records.push(handshake_record(&mut client, &KEY_UPDATE_ASKING, 1));
        }
        records.push(data_record(&mut client, b"a"));
        for _ in 0..33 {
            records.push(handshake_record(&mut client, &KEY_UPDATE, 1));
        }
        records.push(data_record(&mut client, b"b"));
        send_raw(&mut client, &records);
        let (mut r, mut w) = server.split().unwrap();
        let mut a = [0u8; 1];
        r.read_exact(&mut a).unwrap();
        assert_eq!(&a, b"a");
        w.write_all(b"xy").unwrap();
        w.write_all(b"z").unwrap();
        assert_eq!(
            w.seal.updates, 1,
            "32 requests were not answered by one key update"
        );
        let (mut cr, _cw) = client.split().unwrap();
        let mut xyz = [0u8; 3];
        cr.read_exact(&mut xyz).unwrap();
        assert_eq!(&xyz, b"xyz");
        let e = r.read(&mut [0u8; 64]).unwrap_err();
        assert_invalid(&e, "key updates in a row");
    }

    /// An empty application data record moves no data, so it does not restart the count of key
    /// updates in a row (else a peer could flood them at no cost).
    #[test]
    fn empty_records_do_not_restart_the_key_update_count() {
        let (_dir, mut client, mut server) = pair();
        let mut records = Vec::new();
        for i in 0..33 {
            if i == 16 {
                let empty = client.seal.record(ContentType::ApplicationData, &[]);
                records.push(empty.unwrap());
            }
            records.push(handshake_record(&mut client, &KEY_UPDATE, 1));
        }
        records.push(data_record(&mut client, b"b"));
        send_raw(&mut client, &records);
        let e = server.read(&mut [0u8; 64]).unwrap_err();
        assert_invalid(&e, "key updates in a row");
    }

    /// Only a server may send a NewSessionTicket (RFC 8446 §4.6.1).
    #[test]
    fn a_session_ticket_from_a_client_is_refused() {
        assert_handshake_refused(&TICKET, 0, "session ticket");
    }

    /// The client leaves a ticket unused (see `Opener::session_ticket`).
    #[test]
    fn a_session_ticket_to_a_client_is_ignored() {
        let (_dir, mut client, mut server) = pair();
        let records = [
            handshake_record(&mut server, &TICKET, 0),
            data_record(&mut server, b"after"),
        ];
        send_raw(&mut server, &records);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"after");
    }

    /// Every alert but close_notify ends the connection with an error (RFC 8446 §6), at either
    /// level, user_canceled included; so do a malformed alert and a close_notify with a level
    /// TLS does not define. Nothing sent after it is read, however often the reader tries.
    #[test]
    fn any_alert_but_close_notify_is_fatal() {
        let alerts: [&[u8]; 11] = [
            &[1, 90],
            &[2, 90],
            &[1, 42],
            &[2, 40],
            &[2, 255],
            &[0, 0],
            &[255, 0],
            &[3, 0],
            &[1, 0, 0],
            &[1],
            &[],
        ];
        for alert in alerts {
            let (_dir, mut client, mut server) = pair();
            let records = [
                client.seal.record(ContentType::Alert, alert).unwrap(),
                data_record(&mut client, b"after"),
            ];
            send_raw(&mut client, &records);
            let e = server.read(&mut [0u8; 64]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "alert {alert:?}: {e}");
            let again = server.read(&mut [0u8; 64]);
            assert!(again.is_err(), "alert {alert:?}, then read {again:?}");
        }
    }

    /// close_notify (at either level) ends the stream; nothing behind it is delivered.
    #[test]
    fn nothing_after_close_notify_is_read() {
        for level in [1u8, 2] {
            let (_dir, mut client, mut server) = pair();
            let records = [
                data_record(&mut client, b"before"),
                client.seal.record(ContentType::Alert, &[level, 0]).unwrap(),
                data_record(&mut client, b"after"),
            ];
            send_raw(&mut client, &records);
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"before");
            assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0);
        }
    }

    /// A record that fails to open ends the connection: a forged record between two genuine
    /// ones is not skipped by a caller reading on after the error.
    #[test]
    fn nothing_is_read_after_a_record_fails() {
        let (_dir, mut client, mut server) = pair();
        let one = data_record(&mut client, b"one");
        let two = data_record(&mut client, b"two");
        let mut forged = one.clone();
        forged[5] ^= 1;
        send_raw(&mut client, &[one, forged, two]);
        let mut got = [0u8; 3];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one");
        let e = server.read(&mut [0u8; 64]).unwrap_err();
        assert_invalid(&e, "did not decrypt");
        let again = server.read(&mut [0u8; 64]);
        assert!(again.is_err(), "read on after a failed record: {again:?}");
    }

    /// Not a test: moves 2 GiB one way over loopback through plain TCP, Blit's record layer,
    /// rustls's buffered connection and rustls's unbuffered API, and prints the rates (the
    /// receiver reads and drops the bytes, so no disk or page cache is involved). Run with
    /// `cargo test --release -p blit-core --lib tls::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        const TOTAL: usize = 2 << 30;
        let chunk = vec![0x5au8; 1 << 20];
        let report = |what: &str, t: std::time::Instant| {
            let s = t.elapsed().as_secs_f64();
            println!(
                "{what}: {:.2} GB/s ({s:.3} s for 2 GiB)",
                TOTAL as f64 / s / 1e9
            );
        };
        let drain = |r: &mut dyn Read| {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            while n < TOTAL {
                let k = r.read(&mut buf).unwrap();
                assert!(k > 0);
                n += k;
            }
        };
        let send = |w: &mut dyn Write| {
            for _ in 0..TOTAL / chunk.len() {
                w.write_all(&chunk).unwrap();
            }
            w.flush().unwrap();
        };

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = thread::spawn(move || drain(&mut listener.accept().unwrap().0));
        let t = std::time::Instant::now();
        send(&mut TcpStream::connect(addr).unwrap());
        rx.join().unwrap();
        report("plain TCP", t);

        let (_dir, client, server) = pair();
        let (mut r, _w) = server.split().unwrap();
        let (_cr, mut cw) = client.split().unwrap();
        let t = std::time::Instant::now();
        let rx = thread::spawn(move || drain(&mut r));
        send(&mut cw);
        rx.join().unwrap();
        report("Blit's TLS record layer", t);

        // As the writer thread sends file data: each 1 MiB frame filled, then given up.
        let (_dir, client, server) = pair();
        let (mut r, _w) = server.split().unwrap();
        let (_cr, mut cw) = client.split().unwrap();
        let t = std::time::Instant::now();
        let rx = thread::spawn(move || drain(&mut r));
        let mut frame = Vec::with_capacity(chunk.len() + 1);
        for _ in 0..TOTAL / chunk.len() {
            frame.clear();
            frame.extend_from_slice(&chunk);
            cw.write_owned(&mut frame).unwrap();
        }
        rx.join().unwrap();
        report("Blit's TLS record layer, frames sealed in place", t);

        let (_dir, server, listener) = daemon();
        let addr = listener.local_addr().unwrap();
        let config = Arc::clone(&server.config);
        let rx = thread::spawn(move || {
            let mut sock = listener.accept().unwrap().0;
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            drain(&mut rustls::Stream::new(&mut conn, &mut sock));
        });
        let verifier = Arc::new(Pinned {
            want: Some(server.fingerprint.clone()),
            seen: Mutex::new(None),
            provider: provider(),
        });
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = ServerName::try_from("blit-daemon").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        let t = std::time::Instant::now();
        send(&mut rustls::Stream::new(&mut conn, &mut sock));
        rx.join().unwrap();
        report("rustls buffered connection", t);

        // As a record layer built on rustls's unbuffered API would move the data: the socket
        // and the buffers are the caller's, rustls seals into and opens from them.
        let (_dir, server, listener) = daemon();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(unbuffered_server_config(&server));
        let rx = thread::spawn(move || {
            let mut sock = listener.accept().unwrap().0;
            let mut conn = rustls::server::UnbufferedServerConnection::new(config).unwrap();
            let early = handshake(&mut conn, &mut sock, |c, b| c.process_tls_records(b)).unwrap();
            assert_eq!(
                unbuffered_receive(&mut conn, &mut sock, early, TOTAL),
                TOTAL
            );
        });
        let config = Arc::new(unbuffered_client_config(&server.fingerprint));
        let name = ServerName::try_from("blit-daemon").unwrap();
        let mut conn = rustls::client::UnbufferedClientConnection::new(config, name).unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        let early = handshake(&mut conn, &mut sock, |c, b| c.process_tls_records(b)).unwrap();
        let t = std::time::Instant::now();
        unbuffered_send(&mut conn, &mut sock, early, &chunk, TOTAL / chunk.len());
        rx.join().unwrap();
        report("rustls unbuffered API", t);
    }

    /// The largest TLS 1.3 record on the wire: header, 16 KiB of plaintext, and the most
    /// expansion RFC 8446 §5.2 allows.
    const MAX_RECORD: usize = 5 + (1 << 14) + 256;

    /// The daemon's configuration for the unbuffered measurement: its certificate and suites,
    /// but no secret extraction (rustls keeps the record layer there), and no session tickets
    /// (said again here because the measurement relies on it: the sending client then never
    /// has a post-handshake message to read).
    fn unbuffered_server_config(server: &Server) -> ServerConfig {
        let mut config = (*server.config).clone();
        config.enable_secret_extraction = false;
        config.send_tls13_tickets = 0;
        config
    }

    /// The client's configuration as `connect` builds it with a pin, less secret extraction.
    fn unbuffered_client_config(fingerprint: &str) -> ClientConfig {
        let verifier = Arc::new(Pinned {
            want: Some(fingerprint.to_string()),
            seen: Mutex::new(None),
            provider: provider(),
        });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        config
    }

    /// Sealed bytes read and not yet discarded by rustls: `buf[start..end]`. A discard moves
    /// `start` on; what is kept moves to the front only when a read needs the room, since
    /// moving it after every record (as the handshake's driver may) would copy most of the
    /// buffer once per 16 KiB received.
    struct Incoming {
        buf: Vec<u8>,
        start: usize,
        end: usize,
    }

    impl Incoming {
        /// A buffer of `size` (at least one whole record more than `early`), holding `early`:
        /// what the handshake read past its end.
        fn new(size: usize, early: &[u8]) -> Incoming {
            let mut buf = vec![0u8; size.max(early.len() + MAX_RECORD)];
            buf[..early.len()].copy_from_slice(early);
            Incoming {
                buf,
                start: 0,
                end: early.len(),
            }
        }

        fn pending(&mut self) -> &mut [u8] {
            &mut self.buf[self.start..self.end]
        }

        fn discard(&mut self, n: usize) {
            self.start += n;
            assert!(
                self.start <= self.end,
                "rustls discarded more than it was given"
            );
        }

        /// Reads more, first making room for a whole record behind the bytes kept (rustls asks
        /// for more only when no whole record is left, so those are less than one record).
        fn read_from(&mut self, sock: &mut impl Read) {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.end < MAX_RECORD {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = sock.read(&mut self.buf[self.end..]).unwrap();
            assert!(n > 0, "the peer closed the connection");
            self.end += n;
        }
    }

    /// Appends a record rustls has ready (after the handshake, a key update or an alert) to
    /// the `queued` bytes of `out`, growing `out` to the size rustls asks for.
    fn encode_pending<D>(e: &mut EncodeTlsData<'_, D>, out: &mut Vec<u8>, queued: &mut usize) {
        loop {
            match e.encode(&mut out[*queued..]) {
                Ok(n) => {
                    *queued += n;
                    return;
                }
                Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    out.resize(*queued + required_size, 0)
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The unbuffered measurement's sender: `chunks` times `chunk`, each sealed by rustls into
    /// one reusable buffer (grown once, to the size rustls asks for) and written with one
    /// `write_all`, as `send` writes each chunk.
    fn unbuffered_send(
        conn: &mut rustls::client::UnbufferedClientConnection,
        sock: &mut TcpStream,
        early: Early,
        chunk: &[u8],
        chunks: usize,
    ) {
        // The daemon sends nothing after the handshake, so this normally stays empty and the
        // socket is not read; what does come is handled as rustls asks.
        let mut incoming = Incoming::new(MAX_RECORD, &early.sealed);
        let mut outgoing = Vec::new();
        let mut queued = 0;
        let mut sent = 0;
        while sent < chunks {
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(incoming.pending());
            let mut read = false;
            match state.unwrap() {
                ConnectionState::WriteTraffic(mut w) => loop {
                    match w.encrypt(chunk, &mut outgoing[queued..]) {
                        Ok(n) => {
                            sock.write_all(&outgoing[..queued + n]).unwrap();
                            queued = 0;
                            sent += 1;
                            break;
                        }
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => outgoing.resize(queued + required_size, 0),
                        Err(e) => panic!("{e}"),
                    }
                },
                ConnectionState::EncodeTlsData(mut e) => {
                    encode_pending(&mut e, &mut outgoing, &mut queued)
                }
                ConnectionState::TransmitTlsData(t) => {
                    sock.write_all(&outgoing[..queued]).unwrap();
                    queued = 0;
                    t.done();
                }
                // Data from the daemon is not part of the measurement: taken and dropped.
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        discard += record.unwrap().discard;
                    }
                }
                ConnectionState::BlockedHandshake => read = true,
                s => panic!("unexpected {s:?} while sending"),
            }
            incoming.discard(discard);
            if read {
                incoming.read_from(sock);
            }
        }
    }

    /// The unbuffered measurement's receiver: reads into one reusable 1 MiB buffer, has rustls
    /// open the records there, and copies each record's plaintext to a 1 MiB buffer of its
    /// own, as a `Read` built on it would hand it out (the other receivers get theirs that
    /// way, by `read` into 1 MiB), until `total` bytes have come; returns how many did.
    fn unbuffered_receive(
        conn: &mut rustls::server::UnbufferedServerConnection,
        sock: &mut TcpStream,
        early: Early,
        total: usize,
    ) -> usize {
        let mut got = early.plain.len();
        let mut incoming = Incoming::new(1 << 20, &early.sealed);
        let mut user = vec![0u8; 1 << 20];
        let mut outgoing = Vec::new();
        let mut queued = 0;
        while got < total {
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(incoming.pending());
            let mut read = false;
            match state.unwrap() {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.unwrap();
                        discard += record.discard;
                        let n = record.payload.len();
                        user[..n].copy_from_slice(record.payload);
                        // Keeps the copy, as the caller of `read` would look at the bytes.
                        std::hint::black_box(&mut user);
                        got += n;
                    }
                }
                // No whole record is left: more bytes are needed.
                ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake => read = true,
                ConnectionState::EncodeTlsData(mut e) => {
                    encode_pending(&mut e, &mut outgoing, &mut queued)
                }
                ConnectionState::TransmitTlsData(t) => {
                    sock.write_all(&outgoing[..queued]).unwrap();
                    queued = 0;
                    t.done();
                }
                s => panic!("unexpected {s:?} while receiving"),
            }
            incoming.discard(discard);
            if read {
                incoming.read_from(sock);
            }
        }
        got
    }
}
