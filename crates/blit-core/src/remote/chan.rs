//! The opening exchange of a session (preamble, optional TLS handshake, hello and its answer),
//! one message at a time, before the connection is handed to a [`super::peer::Peer`].
//!
//! Reads here are exact (no read-ahead buffer): whatever follows the answer belongs to the
//! peer's reader. Under TLS, bytes already decrypted stay inside the session object, which the
//! peer takes over.

use std::io::{self, Write};
use std::net::TcpStream;

use super::peer::Connection;
use super::wire::{self, Frame, Msg};

pub enum Chan {
    Plain(TcpStream),
    #[cfg(target_os = "linux")]
    Tls(TcpStream, Box<Connection>),
}

impl Chan {
    pub fn send(&mut self, msg: &Msg) -> io::Result<()> {
        let bytes = wire::encode_msg(msg)?;
        match self {
            Chan::Plain(s) => {
                s.write_all(&bytes)?;
                s.flush()
            }
            #[cfg(target_os = "linux")]
            Chan::Tls(s, c) => {
                c.writer().write_all(&bytes)?;
                while c.wants_write() {
                    c.write_tls(s)?;
                }
                s.flush()
            }
        }
    }

    /// The next message; an error if the stream ends or a data frame comes instead.
    pub fn recv(&mut self) -> io::Result<Msg> {
        let frame = match self {
            Chan::Plain(s) => wire::read_frame(s)?,
            #[cfg(target_os = "linux")]
            Chan::Tls(s, c) => wire::read_frame(&mut TlsIo { conn: c, sock: s })?,
        };
        match frame {
            Some(Frame::Msg(m)) => Ok(*m),
            Some(Frame::Data { .. }) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected data frame",
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed",
            )),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        match self {
            Chan::Plain(s) => s,
            #[cfg(target_os = "linux")]
            Chan::Tls(s, _) => s,
        }
    }

    pub fn into_parts(self) -> (TcpStream, Option<Connection>) {
        match self {
            Chan::Plain(s) => (s, None),
            #[cfg(target_os = "linux")]
            Chan::Tls(s, c) => (s, Some(*c)),
        }
    }
}

/// Plaintext reads during the opening: decrypts from the socket as needed.
#[cfg(target_os = "linux")]
struct TlsIo<'a> {
    conn: &'a mut Connection,
    sock: &'a mut TcpStream,
}

#[cfg(target_os = "linux")]
impl io::Read for TlsIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(self.sock)? == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            while self.conn.wants_write() {
                self.conn.write_tls(self.sock)?;
            }
        }
    }
}
