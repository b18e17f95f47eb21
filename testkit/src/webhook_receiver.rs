//! A webhook receiver on loopback for the tests: it records every request (headers and
//! body) and answers with a script of statuses (then 200 once the script runs out). It
//! can be stopped (connections are refused) and started again on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// The status the receiver answered with.
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    script: Mutex<Vec<u16>>,
    received: Mutex<Vec<Received>>,
}

pub struct WebhookReceiver {
    pub address: SocketAddr,
    inner: Arc<Inner>,
    server: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers with `script` in order, then 200.
    pub async fn start(script: Vec<u16>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Self {
            address: listener.local_addr()?,
            inner: Arc::new(Inner {
                script: Mutex::new(script),
                received: Mutex::default(),
            }),
            server: Mutex::new(None),
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    /// A port nothing listens on yet (the receiver is "down" until [`Self::restart`]).
    pub async fn start_down() -> anyhow::Result<Self> {
        let receiver = Self::start(Vec::new()).await?;
        receiver.stop().await;
        Ok(receiver)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(self.inner.clone());
        *self.server.lock().expect("not poisoned") =
            Some(crate::serve_until_stopped(listener, router));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Stops listening: connections are refused until [`Self::restart`].
    pub async fn stop(&self) {
        let server = self.server.lock().expect("not poisoned").take();
        if let Some((stop, task)) = server {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.address).await?;
        self.serve(listener);
        Ok(())
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("not poisoned").clone()
    }

    /// Waits until at least `count` requests arrived; returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= count {
                return Ok(received);
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "the receiver got {} of {count} requests within {timeout:?}",
                    received.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let answered = {
        let mut script = inner.script.lock().expect("not poisoned");
        if script.is_empty() {
            200
        } else {
            script.remove(0)
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    inner.received.lock().expect("not poisoned").push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
