//! A loopback TCP proxy in front of Postgres that counts round trips, so a test can
//! assert how many a piece of work costs.
//!
//! It reads the frontend protocol the clients send: after the untyped startup messages
//! (an SSL or GSS request, then the startup packet), every message is a type byte and a
//! length. A round trip is a message after which the client waits for the server: a
//! `Sync` (the end of an extended-protocol exchange, which sqlx sends once per
//! statement, after Parse/Bind/Describe/Execute) or a simple `Query`. Point clients at
//! [`RoundTripCounter::database_url`]; it turns TLS off, as the proxy reads plain text.
//!
//! Round trips are of two kinds: statements, and pings. A ping is a `Sync` with no
//! statement before it; sqlx 0.8 sends one each time a connection goes back to its pool
//! (`PoolConnection::return_to_pool`, unconditionally, on a background task after the
//! caller has its answer), to check the connection before another caller gets it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The codes of the untyped requests a client may send before its startup packet.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_ENCRYPTION_REQUEST: u32 = 80_877_104;

/// A running proxy and its count.
pub struct RoundTripCounter {
    counts: Arc<Counts>,
    address: std::net::SocketAddr,
    upstream_url: String,
}

impl RoundTripCounter {
    /// Starts a proxy to the server of `database_url` (a `postgres://` URL).
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(database_url).context("parsing the database url")?;
        let upstream = format!(
            "{}:{}",
            parsed.host_str().context("the database url has a host")?,
            parsed.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = proxy(client, server, counter).await;
                    }
                });
            }
        });
        Ok(Self {
            counts,
            address,
            upstream_url: database_url.to_string(),
        })
    }

    /// `database_url` with the proxy as its server, TLS off.
    pub fn database_url(&self) -> String {
        let mut url = reqwest::Url::parse(&self.upstream_url).expect("parsed at start");
        url.set_host(Some("127.0.0.1")).expect("an ip is a host");
        url.set_port(Some(self.address.port()))
            .expect("a postgres url has a port");
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| name != "sslmode")
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair("sslmode", "disable");
        url.to_string()
    }

    /// Round trips counted so far, over every connection: statements and pings.
    pub fn round_trips(&self) -> u64 {
        self.statements() + self.pings()
    }

    /// Statements (extended-protocol exchanges and simple queries) so far.
    pub fn statements(&self) -> u64 {
        self.counts.statements.load(Ordering::SeqCst)
    }

    /// Pings (a `Sync` alone) so far.
    pub fn pings(&self) -> u64 {
        self.counts.pings.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Counts {
    statements: AtomicU64,
    pings: AtomicU64,
}

async fn proxy(client: TcpStream, server: TcpStream, counter: Arc<Counts>) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_client = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let result = forward_counting(&mut client_read, &mut server_write, &counter).await;
    let _ = server_write.shutdown().await;
    to_client.abort();
    result
}

/// Forwards the client's messages one by one, counting those that end a round trip.
async fn forward_counting(
    from_client: &mut (impl AsyncReadExt + Unpin),
    to_server: &mut (impl AsyncWriteExt + Unpin),
    counter: &Counts,
) -> anyhow::Result<()> {
    // Untyped messages until the startup packet itself.
    loop {
        let length = from_client.read_u32().await?;
        let mut body = vec![0; (length as usize).saturating_sub(4)];
        from_client.read_exact(&mut body).await?;
        to_server.write_u32(length).await?;
        to_server.write_all(&body).await?;
        to_server.flush().await?;
        let code = body
            .get(..4)
            .map(|code| u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        if !matches!(code, Some(SSL_REQUEST | GSS_ENCRYPTION_REQUEST)) {
            break;
        }
    }
    // Whether an extended-protocol message came since the last `Sync`.
    let mut in_statement = false;
    loop {
        let kind = match from_client.read_u8().await {
            Ok(kind) => kind,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let length = from_client.read_u32().await?;
        let mut body = vec![0; (length as usize).saturating_sub(4)];
        from_client.read_exact(&mut body).await?;
        match kind {
            b'Q' => {
                counter.statements.fetch_add(1, Ordering::SeqCst);
            }
            b'S' if in_statement => {
                counter.statements.fetch_add(1, Ordering::SeqCst);
                in_statement = false;
            }
            b'S' => {
                counter.pings.fetch_add(1, Ordering::SeqCst);
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => in_statement = true,
            _ => {}
        }
        to_server.write_u8(kind).await?;
        to_server.write_u32(length).await?;
        to_server.write_all(&body).await?;
        if kind == b'S' || kind == b'Q' || kind == b'X' || kind == b'p' {
            to_server.flush().await?;
        }
    }
}
