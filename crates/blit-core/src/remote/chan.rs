//! The opening exchange of a session (preamble, optional TLS handshake, hello and its answer),
//! one message at a time, before the connection is handed to a [`super::peer::Peer`].
//!
//! Reads here are exact (no read-ahead buffer): whatever follows the answer belongs to the
//! peer's reader. Under TLS, records already read stay inside the session object, which the
//! peer takes over.

use std::io::{self, Write};
use std::net::TcpStream;

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
use super::tls::Session;
use super::wire::{self, Frame, Msg};

pub enum Chan {
    Plain(TcpStream),
    #[cfg(any(target_os = "linux", target_os = "macos", windows))]
    Tls(Box<Session>),
}

impl Chan {
    pub fn send(&mut self, msg: &Msg) -> io::Result<()> {
        let bytes = wire::encode_msg(msg)?;
        match self {
            Chan::Plain(s) => {
                s.write_all(&bytes)?;
                s.flush()
            }
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Chan::Tls(s) => s.send(&bytes),
        }
    }

    /// The next message; an error if the stream ends or a data frame comes instead.
    pub fn recv(&mut self) -> io::Result<Msg> {
        let frame = match self {
            Chan::Plain(s) => wire::read_frame(s)?,
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Chan::Tls(s) => wire::read_frame(&mut **s)?,
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
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Chan::Tls(s) => &s.sock,
        }
    }
}
