//! The containers' health probe, so the runtime images need no shell and no curl.
//!
//! `glassbox-healthcheck api` asks `GET /health` on the address in `GLASSBOX_API__LISTEN`,
//! `glassbox-healthcheck worker` on `GLASSBOX_METRICS__LISTEN` (the defaults are the
//! fleet's own: `0.0.0.0:8080` and `0.0.0.0:9100`). A wildcard listen address is probed on
//! loopback. Exit status 0 means the answer was `200`, 1 that it was not or nothing
//! answered in time, 2 a usage or configuration error; Docker reads only that.
//!
//! # Layout
//! Everything is here: [`Role`] picks the variable, [`probe_address`] turns a listen
//! address into the one to connect to, [`probe`] speaks just enough HTTP/1.0.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Which server of the container to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// api-lite's HTTP listener.
    Api,
    /// A worker's metrics listener, which also answers `/health`.
    Worker,
}

impl Role {
    /// Reads the role from the command line word.
    pub fn from_argument(argument: &str) -> Option<Role> {
        match argument {
            "api" => Some(Role::Api),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }

    /// The environment variable holding the listen address, and its default (the same
    /// as `shared::config`'s).
    pub fn listen_variable(self) -> (&'static str, &'static str) {
        match self {
            Role::Api => ("GLASSBOX_API__LISTEN", "0.0.0.0:8080"),
            Role::Worker => ("GLASSBOX_METRICS__LISTEN", "0.0.0.0:9100"),
        }
    }
}

/// Why the probe did not see a healthy answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The listen address could not be read (a configuration error, exit status 2).
    #[error("cannot read a listen address from {listen:?}")]
    BadListenAddress {
        /// The address as configured.
        listen: String,
    },
    /// Nothing accepted the connection, or it broke.
    #[error("cannot talk to {address}: {source}")]
    Io {
        /// The address probed.
        address: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The server answered, but not with 200.
    #[error("{address} answered {status_line:?}")]
    Unhealthy {
        /// The address probed.
        address: SocketAddr,
        /// The answer's first line.
        status_line: String,
    },
}

impl ProbeError {
    /// The exit status Docker sees: 2 for configuration errors, 1 for an unhealthy server.
    pub fn exit_status(&self) -> u8 {
        match self {
            ProbeError::BadListenAddress { .. } => 2,
            ProbeError::Io { .. } | ProbeError::Unhealthy { .. } => 1,
        }
    }
}

/// The address to connect to for a listen address: a wildcard host becomes loopback of
/// the same family, a name is resolved.
pub fn probe_address(listen: &str) -> Result<SocketAddr, ProbeError> {
    let bad_address = || ProbeError::BadListenAddress {
        listen: listen.to_owned(),
    };
    let resolved = listen
        .to_socket_addrs()
        .map_err(|_| bad_address())?
        .next()
        .ok_or_else(bad_address)?;
    let loopback = match resolved.ip() {
        IpAddr::V4(address) if address.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(address) if address.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    Ok(SocketAddr::new(loopback, resolved.port()))
}

/// `GET /health` on `address`; healthy when the status line says 200. Every step is
/// bounded by `timeout`, so the probe gives up before Docker's own timeout.
pub fn probe(address: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let io_error = |source| ProbeError::Io { address, source };
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(io_error)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(io_error)?;
    // The status line is all we read; 256 bytes hold it with room to spare.
    let mut head = [0_u8; 256];
    let mut filled = 0;
    while filled < head.len() && !head[..filled].contains(&b'\n') {
        let read = stream.read(&mut head[filled..]).map_err(io_error)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let text = String::from_utf8_lossy(&head[..filled]);
    let status_line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    let mut words = status_line.split_whitespace();
    let is_http = words.next().is_some_and(|word| word.starts_with("HTTP/"));
    if is_http && words.next() == Some("200") {
        return Ok(());
    }
    Err(ProbeError::Unhealthy {
        address,
        status_line,
    })
}
