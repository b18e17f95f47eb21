//! SIGTERM (what ECS sends) and Ctrl-C, as one cancellation token.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// A token cancelled at the first SIGTERM or Ctrl-C.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can listen for SIGTERM");
        tokio::select! {
            _ = terminate.recv() => info!("sigterm received"),
            _ = tokio::signal::ctrl_c() => info!("ctrl-c received"),
        }
        trigger.cancel();
    });
    token
}
