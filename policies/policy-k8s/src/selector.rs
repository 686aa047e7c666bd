//! Kubernetes label selectors (`matchLabels` AND `matchExpressions`), checked
//! as the API server checks them and matched as the API machinery does: an
//! empty selector selects everything; `NotIn` and `DoesNotExist` match when
//! the key is absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of a pod or a namespace.
pub type Labels = BTreeMap<String, String>;

/// A label selector as written in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Selector {
    /// The API server's checks: known operators, values present for `In` /
    /// `NotIn` and absent for `Exists` / `DoesNotExist`, non-empty keys.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        for k in self.match_labels.keys() {
            check_key(&format!("{field}.matchLabels"), k)?;
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            check_key(&format!("{f}.key"), &r.key)?;
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    return Err(format!("{f}.values: must be non-empty when operator is {}", r.operator));
                }
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    return Err(format!("{f}.values: must be empty when operator is {}", r.operator));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "{f}.operator: {other:?} is not a valid selector operator (In, NotIn, Exists, DoesNotExist)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => got.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => got.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => got.is_some(),
                    "DoesNotExist" => got.is_none(),
                    _ => false,
                }
            })
    }
}

fn check_key(field: &str, k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 317 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{field}: {k:?} is not a valid label key"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(json: &str) -> Selector {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn empty_selects_everything() {
        assert!(Selector::default().matches(&labels(&[])));
        assert!(Selector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let s = sel(r#"{"matchLabels":{"app":"web"},"matchExpressions":[
                {"key":"tier","operator":"In","values":["a","b"]},
                {"key":"env","operator":"NotIn","values":["prod"]},
                {"key":"team","operator":"Exists"},
                {"key":"legacy","operator":"DoesNotExist"}]}"#);
        s.validate("s").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b"), ("team", "x"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("team", "x")])), "In");
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x"), ("env", "prod")])), "NotIn");
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])), "Exists");
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x"), ("legacy", "")])), "DoesNotExist");
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "a"), ("team", "x")])), "matchLabels");
    }

    #[test]
    fn bad_selectors_are_refused() {
        let e = sel(r#"{"matchExpressions":[{"key":"a","operator":"In"}]}"#).validate("spec.podSelector").unwrap_err();
        assert!(e.contains("spec.podSelector.matchExpressions[0].values: must be non-empty"), "{e}");
        let e =
            sel(r#"{"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]}"#).validate("s").unwrap_err();
        assert!(e.contains("must be empty"), "{e}");
        let e = sel(r#"{"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]}"#).validate("s").unwrap_err();
        assert!(e.contains("not a valid selector operator"), "{e}");
        assert!(serde_json::from_str::<Selector>(r#"{"matchLabel":{}}"#).is_err(), "unknown field");
    }
}
