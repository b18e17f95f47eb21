//! Named failure points for tests: with `GLASSBOX_AGENT_WORKER__FAILPOINT=after_tool_calls`
//! (any step) or `after_step_commit@1` (only at step 1) the worker stops at that point,
//! still heartbeating, until the job is cancelled; so a test can SIGKILL it between a tool
//! call and its commit, or just after a commit, deterministically. Unset in production,
//! where `hit` costs one comparison.

use tokio_util::sync::CancellationToken;

/// A tool call is in the ledger as `started`; its body has not run.
pub const BEFORE_TOOL_EFFECT: &str = "before_tool_effect";
/// A tool's body has run (its effect happened); its outcome is not in the ledger yet.
pub const AFTER_TOOL_EFFECT: &str = "after_tool_effect";
/// Tools of the step have run (their effects are in the ledger); the step is not committed.
pub const AFTER_TOOL_CALLS: &str = "after_tool_calls";
/// The step is committed; the next one has not started.
pub const AFTER_STEP_COMMIT: &str = "after_step_commit";

fn matches(configured: &str, point: &str, step: i32) -> bool {
    match configured.split_once('@') {
        Some((name, at)) => name == point && at.parse::<i32>().ok() == Some(step),
        None => configured == point,
    }
}

pub async fn hit(configured: Option<&str>, point: &str, step: i32, cancel: &CancellationToken) {
    if configured.is_some_and(|configured| matches(configured, point, step)) {
        tracing::warn!(
            point,
            step,
            "failpoint reached: waiting here until killed or cancelled"
        );
        cancel.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_match_by_name_and_optional_step() {
        assert!(matches("after_tool_calls", AFTER_TOOL_CALLS, 3));
        assert!(matches("after_step_commit@1", AFTER_STEP_COMMIT, 1));
        assert!(!matches("after_step_commit@1", AFTER_STEP_COMMIT, 0));
        assert!(!matches("after_step_commit", AFTER_TOOL_CALLS, 0));
    }
}
