//! Label selectors: which agents a rollout targets.
//!
//! Labels come from the agent's `AgentDescription` attributes (identifying and non-identifying,
//! flattened to strings by the server). A selector is a conjunction of requirements; the empty
//! selector matches every agent.
//!
//! Text form (what operators type): requirements separated by commas, each either
//! `key=value` or `key in (a, b, c)`. Whitespace around tokens is ignored.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::RolloutError;

/// An agent's labels: attribute name to value.
pub type Labels = crate::StringMap;

/// One condition on one label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LabelRequirement {
    /// The label exists and equals `value`.
    Equals {
        /// Label name.
        key: String,
        /// Required value.
        value: String,
    },
    /// The label exists and equals one of `values`.
    In {
        /// Label name.
        key: String,
        /// Accepted values (never empty).
        values: BTreeSet<String>,
    },
}

impl LabelRequirement {
    /// Whether `labels` satisfy this requirement.
    #[must_use]
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            LabelRequirement::Equals { key, value } => labels.get(key) == Some(value.as_str()),
            LabelRequirement::In { key, values } => labels
                .get(key)
                .is_some_and(|actual| values.contains(actual)),
        }
    }

    fn key(&self) -> &str {
        match self {
            LabelRequirement::Equals { key, .. } | LabelRequirement::In { key, .. } => key,
        }
    }
}

/// A conjunction of [`LabelRequirement`]s, kept sorted so that equal selectors compare equal
/// whatever order they were written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// The selector that matches every agent.
    #[must_use]
    pub fn all() -> Self {
        LabelSelector::default()
    }

    /// Adds `key=value`.
    #[must_use]
    pub fn with_equals(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.with(LabelRequirement::Equals {
            key: key.into(),
            value: value.into(),
        })
    }

    /// Adds `key in (values...)`.
    #[must_use]
    pub fn with_in<I, S>(self, key: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values = values.into_iter().map(Into::into).collect();
        self.with(LabelRequirement::In {
            key: key.into(),
            values,
        })
    }

    fn with(mut self, requirement: LabelRequirement) -> Self {
        self.requirements.push(requirement);
        self.requirements.sort();
        self.requirements.dedup();
        self
    }

    /// The requirements, in canonical order.
    #[must_use]
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// Whether an agent with `labels` is selected.
    #[must_use]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match requirement {
                LabelRequirement::Equals { key, value } => write!(f, "{key}={value}")?,
                LabelRequirement::In { key, values } => {
                    let list: Vec<&str> = values.iter().map(String::as_str).collect();
                    write!(f, "{key} in ({})", list.join(","))?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = RolloutError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| RolloutError::InvalidSelector {
            selector: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut selector = LabelSelector::all();
        for clause in split_top_level(text).map_err(invalid)? {
            let clause = clause.trim();
            if clause.is_empty() {
                continue;
            }
            let requirement = if let Some((key, value)) = clause.split_once('=') {
                LabelRequirement::Equals {
                    key: valid_token(key).ok_or_else(|| invalid("empty or malformed key"))?,
                    value: valid_token(value).ok_or_else(|| invalid("empty or malformed value"))?,
                }
            } else if let Some((key, rest)) = clause.split_once(" in ") {
                let list = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| invalid("`in` needs a parenthesised list"))?;
                let values = list
                    .split(',')
                    .map(|v| valid_token(v).ok_or_else(|| invalid("empty value in list")))
                    .collect::<Result<BTreeSet<_>, _>>()?;
                LabelRequirement::In {
                    key: valid_token(key).ok_or_else(|| invalid("empty or malformed key"))?,
                    values,
                }
            } else {
                return Err(invalid("expected `key=value` or `key in (a,b)`"));
            };
            if selector
                .requirements
                .iter()
                .any(|r| r.key() == requirement.key())
            {
                return Err(invalid("a key may appear only once"));
            }
            selector = selector.with(requirement);
        }
        Ok(selector)
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, &'static str> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced `)`")?,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced `(`");
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn valid_token(token: &str) -> Option<String> {
    let token = token.trim();
    let ok = !token.is_empty() && !token.contains(['=', '(', ')', ',', ' ']);
    ok.then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_equality_and_set_membership() {
        let selector: LabelSelector = "env=prod, region in (eu, us)".parse().unwrap();
        assert!(selector.matches(&labels(&[("env", "prod"), ("region", "eu")])));
        assert!(!selector.matches(&labels(&[("env", "prod"), ("region", "ap")])));
        assert!(!selector.matches(&labels(&[("region", "eu")])));
        assert_eq!(selector.to_string(), "env=prod,region in (eu,us)");
    }

    #[test]
    fn order_of_clauses_does_not_change_equality() {
        let a: LabelSelector = "a=1,b=2".parse().unwrap();
        let b: LabelSelector = "b=2, a=1".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            LabelSelector::all()
                .with_equals("b", "2")
                .with_equals("a", "1")
        );
    }

    #[test]
    fn empty_selector_matches_everything() {
        let selector: LabelSelector = "".parse().unwrap();
        assert!(selector.matches(&Labels::new()));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "env",
            "=prod",
            "env=",
            "r in eu",
            "r in (eu,)",
            "a=1,a=2",
            "r in (eu",
        ] {
            assert!(
                bad.parse::<LabelSelector>().is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
