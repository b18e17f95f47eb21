//! What a run may spend, and on which model. The API clamps the caller's limits to the
//! server's ceiling and refuses models outside the allowlist or without a price; the
//! worker resolves the limits again (defaults for unset ones, the ceiling over all) and
//! refuses the same models, so a row written by anything else cannot spend more.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{AgentWorkerSettings, BudgetCeiling, ModelPrice};
use crate::error::JobError;

/// The limits a caller may ask for; unset ones take the worker's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_secs: Option<u64>,
}

impl RequestedBudget {
    /// Every limit set must be positive (and the cost finite).
    pub fn validate(&self) -> Result<(), String> {
        let zero = self.max_steps == Some(0)
            || self.max_tokens == Some(0)
            || self.max_wall_secs == Some(0)
            || self
                .max_cost_usd
                .is_some_and(|cost| !cost.is_finite() || cost <= 0.0);
        if zero {
            return Err("every budget limit must be positive".into());
        }
        Ok(())
    }

    /// Each limit set, lowered to the ceiling.
    pub fn clamped(self, ceiling: &BudgetCeiling) -> Self {
        Self {
            max_steps: self.max_steps.map(|steps| steps.min(ceiling.max_steps)),
            max_tokens: self.max_tokens.map(|tokens| tokens.min(ceiling.max_tokens)),
            max_cost_usd: self.max_cost_usd.map(|cost| cost.min(ceiling.max_cost_usd)),
            max_wall_secs: self
                .max_wall_secs
                .map(|secs| secs.min(ceiling.max_wall_secs)),
        }
    }
}

/// The limits of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub max_steps: u32,
    pub max_tokens: u64,
    pub max_cost_usd: f64,
    pub max_wall: Duration,
}

/// What a run has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Committed steps.
    pub steps: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub active_ms: i64,
}

impl Spent {
    pub fn tokens(&self) -> u64 {
        (self.tokens_in + self.tokens_out).max(0) as u64
    }
}

impl Budget {
    /// The row's limits where set (readable ones), the worker's defaults elsewhere, each
    /// lowered to the ceiling.
    pub fn resolve(requested: &Value, settings: &AgentWorkerSettings) -> Self {
        let ceiling = &settings.budget_ceiling;
        let steps = requested["max_steps"]
            .as_u64()
            .map(|steps| steps.min(u64::from(u32::MAX)) as u32)
            .unwrap_or(settings.default_max_steps);
        let tokens = requested["max_tokens"]
            .as_u64()
            .unwrap_or(settings.default_max_tokens);
        let cost = requested["max_cost_usd"]
            .as_f64()
            .filter(|cost| cost.is_finite())
            .unwrap_or(settings.default_max_cost_usd);
        let wall_secs = requested["max_wall_secs"]
            .as_u64()
            .unwrap_or(settings.default_max_wall_secs);
        Self {
            max_steps: steps.min(ceiling.max_steps),
            max_tokens: tokens.min(ceiling.max_tokens),
            max_cost_usd: cost.min(ceiling.max_cost_usd),
            max_wall: Duration::from_secs(wall_secs.min(ceiling.max_wall_secs)),
        }
    }

    /// The first limit `spent` reached, as the run's permanent error.
    pub fn exceeded(&self, spent: &Spent) -> Option<JobError> {
        if spent.steps.max(0) as u64 >= u64::from(self.max_steps) {
            return Some(JobError::permanent(
                "budget_steps_exceeded",
                format!("the run used its {} steps", self.max_steps),
            ));
        }
        if spent.tokens() >= self.max_tokens {
            return Some(JobError::permanent(
                "budget_tokens_exceeded",
                format!(
                    "{} tokens used of a budget of {}",
                    spent.tokens(),
                    self.max_tokens
                ),
            ));
        }
        if spent.cost_usd >= self.max_cost_usd {
            return Some(JobError::permanent(
                "budget_cost_exceeded",
                format!(
                    "${:.6} spent of a budget of ${:.6}",
                    spent.cost_usd, self.max_cost_usd
                ),
            ));
        }
        if Duration::from_millis(spent.active_ms.max(0) as u64) >= self.max_wall {
            return Some(self.wall_time_exceeded());
        }
        None
    }

    pub fn wall_time_exceeded(&self) -> JobError {
        JobError::permanent(
            "budget_wall_time_exceeded",
            format!("the run took longer than {}s", self.max_wall.as_secs()),
        )
    }

    /// Time left on the wall-time budget.
    pub fn wall_left(&self, spent: &Spent) -> Duration {
        self.max_wall
            .saturating_sub(Duration::from_millis(spent.active_ms.max(0) as u64))
    }

    /// The `max_tokens` of the next model call: the per-call cap, or what is left of the
    /// token budget when that is less (at least 1).
    pub fn max_output_tokens(&self, spent: &Spent, per_call: u32) -> u32 {
        let left = self.max_tokens.saturating_sub(spent.tokens());
        (left.min(u64::from(per_call)) as u32).max(1)
    }
}

/// Why a model may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelRefusal {
    #[error("model {0:?} is not allowed here; allowed: {1}")]
    NotAllowed(String, String),
    #[error("model {0:?} has no price, so its spend could not be counted against a budget")]
    Unpriced(String),
}

impl ModelRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAllowed(..) => "model_not_allowed",
            Self::Unpriced(_) => "model_unpriced",
        }
    }
}

impl From<ModelRefusal> for JobError {
    fn from(refusal: ModelRefusal) -> Self {
        JobError::permanent(refusal.code(), refusal.to_string())
    }
}

/// The price of `model` if the allowlist has it and it is priced.
pub fn check_model(
    model: &str,
    settings: &AgentWorkerSettings,
) -> Result<ModelPrice, ModelRefusal> {
    if !settings
        .allowed_models
        .iter()
        .any(|allowed| allowed == model)
    {
        return Err(ModelRefusal::NotAllowed(
            model.to_string(),
            settings.allowed_models.join(", "),
        ));
    }
    settings
        .prices
        .get(model)
        .copied()
        .ok_or_else(|| ModelRefusal::Unpriced(model.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_take_defaults_and_never_pass_the_ceiling() {
        let settings = AgentWorkerSettings::default();
        let budget = Budget::resolve(&json!({ "max_steps": 2 }), &settings);
        assert_eq!(budget.max_steps, 2);
        assert_eq!(budget.max_tokens, settings.default_max_tokens);
        let greedy = Budget::resolve(
            &json!({ "max_steps": 4_000_000_000u64, "max_tokens": u64::MAX, "max_cost_usd": 1e9, "max_wall_secs": u64::MAX }),
            &settings,
        );
        let ceiling = &settings.budget_ceiling;
        assert_eq!(greedy.max_steps, ceiling.max_steps);
        assert_eq!(greedy.max_tokens, ceiling.max_tokens);
        assert_eq!(greedy.max_cost_usd, ceiling.max_cost_usd);
        assert_eq!(greedy.max_wall, Duration::from_secs(ceiling.max_wall_secs));
        let requested = RequestedBudget {
            max_steps: Some(u32::MAX),
            max_cost_usd: Some(0.5),
            ..RequestedBudget::default()
        };
        assert_eq!(
            requested.clamped(ceiling),
            RequestedBudget {
                max_steps: Some(ceiling.max_steps),
                max_cost_usd: Some(0.5),
                ..RequestedBudget::default()
            }
        );
        assert!(
            RequestedBudget {
                max_cost_usd: Some(f64::NAN),
                ..RequestedBudget::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_first_limit_reached_is_reported() {
        let settings = AgentWorkerSettings::default();
        let budget = Budget::resolve(&json!({ "max_steps": 2, "max_tokens": 100 }), &settings);
        let mut spent = Spent {
            steps: 1,
            ..Spent::default()
        };
        assert!(budget.exceeded(&spent).is_none());
        spent.steps = 2;
        assert_eq!(
            budget.exceeded(&spent).unwrap().code(),
            "budget_steps_exceeded"
        );
        spent = Spent {
            tokens_in: 80,
            tokens_out: 20,
            ..Spent::default()
        };
        assert_eq!(
            budget.exceeded(&spent).unwrap().code(),
            "budget_tokens_exceeded"
        );
        spent.tokens_in = 70;
        assert_eq!(budget.max_output_tokens(&spent, 4096), 10);
        assert_eq!(budget.max_output_tokens(&Spent::default(), 64), 64);
    }

    #[test]
    fn models_need_the_allowlist_and_a_price() {
        let mut settings = AgentWorkerSettings::default();
        assert!(check_model("gpt-4o-mini", &settings).is_ok());
        assert_eq!(
            check_model("gpt-5-turbo-max", &settings)
                .unwrap_err()
                .code(),
            "model_not_allowed"
        );
        settings.allowed_models.push("free-lunch".into());
        assert_eq!(
            check_model("free-lunch", &settings).unwrap_err().code(),
            "model_unpriced"
        );
    }
}
