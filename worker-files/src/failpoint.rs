//! Named failure points for tests: with `GLASSBOX_FILES_WORKER__FAILPOINT=before_store`
//! the worker stops at that point (still heartbeating) until the job is cancelled, so a
//! test can SIGKILL it mid-file, or SIGTERM it and watch the release, deterministically.
//! Unset in production, where `hit` costs one comparison.

use tokio_util::sync::CancellationToken;

pub const AFTER_DOWNLOAD: &str = "after_download";
pub const BEFORE_STORE: &str = "before_store";

pub async fn hit(configured: Option<&str>, point: &str, cancel: &CancellationToken) {
    if configured == Some(point) {
        tracing::warn!(
            point,
            "failpoint reached: waiting here until killed or cancelled"
        );
        cancel.cancelled().await;
    }
}
