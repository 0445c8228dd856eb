//! Limit sets: how much a role's users, a user, an API key or an agent
//! session may spend. A request must pass every set that applies to it;
//! this module only says what a set is and how two compare, the counting
//! is in the shared state.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// What to do when a limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// Answer 429 at once.
    #[default]
    Reject,
    /// Wait (up to the configured time) for capacity, then 429.
    Queue,
}

/// Any of the five limits; an absent one does not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u64>,
    #[serde(default, skip_serializing_if = "is_reject")]
    pub on_limit: OnLimit,
}

fn is_reject(v: &OnLimit) -> bool {
    *v == OnLimit::Reject
}

/// Larger limits are refused: the counters are kept in microseconds of a
/// minute (GCRA) and in 53-bit Lua numbers (Redis).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

impl LimitSet {
    /// The limits by name, in a fixed order.
    pub fn fields(&self) -> [(&'static str, Option<u64>); 5] {
        [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("tokens_per_day", self.tokens_per_day),
            ("max_concurrent", self.max_concurrent),
            ("max_agents", self.max_agents),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    /// Every present limit is at least 1 (a caller who may do nothing is
    /// disabled, not limited) and at most [`MAX_LIMIT`]; `field` prefixes
    /// the name in the error (`limits.rpm`).
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        for (name, value) in self.fields() {
            if let Some(v) = value {
                if v == 0 || v > MAX_LIMIT {
                    return Err(ValidationError::new(
                        format!("{field}.{name}"),
                        format!("must be between 1 and {MAX_LIMIT}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The first limit `self` sets looser than `bound` sets it, if any,
    /// with `bound`'s value. A limit `self` leaves out is not looser: every
    /// set that applies to a request is checked, so `bound`'s still holds.
    pub fn exceeds(&self, bound: &LimitSet) -> Option<(&'static str, u64)> {
        self.fields().into_iter().zip(bound.fields()).find_map(
            |((name, mine), (_, theirs))| match (mine, theirs) {
                (Some(m), Some(t)) if m > t => Some((name, t)),
                _ => None,
            },
        )
    }

    /// The tighter of each limit of two sets.
    pub fn tightest(&self, other: &LimitSet) -> LimitSet {
        fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        LimitSet {
            rpm: min(self.rpm, other.rpm),
            tpm: min(self.tpm, other.tpm),
            tokens_per_day: min(self.tokens_per_day, other.tokens_per_day),
            max_concurrent: min(self.max_concurrent, other.max_concurrent),
            max_agents: min(self.max_agents, other.max_agents),
            on_limit: self.on_limit,
        }
    }
}

/// What an agent session is given: a token allocation carved out of its
/// parent's budget, and rates of its own (at most the parent's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

impl AgentBudget {
    /// The rates as a limit set (the allocation is metered on its own).
    pub fn limits(&self) -> LimitSet {
        LimitSet {
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrent: self.max_concurrent,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.tokens.is_some_and(|t| t == 0 || t > MAX_LIMIT) {
            return Err(ValidationError::new(
                "budget.tokens",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        self.limits().validate("budget")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeds_names_the_first_looser_limit() {
        let owner = LimitSet {
            rpm: Some(10),
            tokens_per_day: Some(1000),
            ..Default::default()
        };
        let key = LimitSet {
            rpm: Some(5),
            ..Default::default()
        };
        assert_eq!(key.exceeds(&owner), None, "left out is inherited");
        let key = LimitSet {
            rpm: Some(11),
            tokens_per_day: Some(10),
            ..Default::default()
        };
        assert_eq!(key.exceeds(&owner), Some(("rpm", 10)));
        let key = LimitSet {
            rpm: Some(10),
            tokens_per_day: Some(1000),
            max_agents: Some(3),
            ..Default::default()
        };
        assert_eq!(key.exceeds(&owner), None);
    }

    #[test]
    fn zero_and_huge_limits_are_refused_by_name() {
        let set = LimitSet {
            tpm: Some(0),
            ..Default::default()
        };
        assert_eq!(set.validate("limits").unwrap_err().field, "limits.tpm");
        let set = LimitSet {
            max_agents: Some(MAX_LIMIT + 1),
            ..Default::default()
        };
        assert_eq!(
            set.validate("limits").unwrap_err().field,
            "limits.max_agents"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<LimitSet>(r#"{"rpn": 5}"#).is_err());
        let set: LimitSet = serde_json::from_str(r#"{"rpm": 5, "on_limit": "queue"}"#).unwrap();
        assert_eq!(set.on_limit, OnLimit::Queue);
    }
}
