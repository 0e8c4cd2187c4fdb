//! `metav1.Condition` lists, merged the way controllers should: a condition whose status did
//! not change keeps its `lastTransitionTime`, conditions owned by others are left alone, and
//! nothing is written when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// A condition stamped now. `status` is `True`/`False`.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now(),
    }
}

/// The current time at second precision, as the API server stores it.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// `current` with every condition of `desired` upserted by type. An upserted condition whose
/// status is unchanged keeps its old `lastTransitionTime`; other types keep their place.
pub fn merge(current: &[Condition], desired: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = current.to_vec();
    for mut want in desired {
        match out.iter_mut().find(|c| c.type_ == want.type_) {
            Some(have) => {
                if have.status == want.status {
                    want.last_transition_time = have.last_transition_time.clone();
                }
                *have = want;
            }
            None => out.push(want),
        }
    }
    out
}

/// Equal, ignoring `lastTransitionTime` (which `merge` keeps stable anyway).
pub fn equivalent(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// The conditions at `status.conditions`, skipping entries that are not valid conditions.
pub fn read(status: Option<&Value>) -> Vec<Condition> {
    status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn is_true(conditions: &[Condition], type_: &str) -> bool {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    }

    fn at(second: i64, c: Condition) -> Condition {
        Condition {
            last_transition_time: Time(Timestamp::from_second(second).unwrap()),
            ..c
        }
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let old = vec![at(100, new("Ready", true, "Bound", "a", Some(1)))];
        let merged = merge(&old, vec![new("Ready", true, "Bound", "b", Some(2))]);
        assert_eq!(merged[0].last_transition_time, old[0].last_transition_time);
        assert_eq!(merged[0].message, "b");
        assert_eq!(merged[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_gets_a_new_transition_time() {
        let old = vec![at(100, new("Ready", false, "Pending", "", None))];
        let merged = merge(&old, vec![new("Ready", true, "Ready", "", None)]);
        assert_ne!(merged[0].last_transition_time, old[0].last_transition_time);
    }

    #[test]
    fn other_types_are_kept_in_place() {
        let old = vec![
            new("Other", true, "Mine", "", None),
            new("Ready", false, "No", "", None),
        ];
        let merged = merge(&old, vec![new("Ready", true, "Yes", "", None)]);
        assert_eq!(
            merged.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Other", "Ready"]
        );
        assert!(is_true(&merged, "Other") && is_true(&merged, "Ready"));
    }

    #[test]
    fn equivalence_ignores_time_only() {
        let a = vec![at(1, new("Ready", true, "R", "m", Some(1)))];
        let b = vec![at(2, new("Ready", true, "R", "m", Some(1)))];
        let c = vec![at(1, new("Ready", true, "R", "m", Some(2)))];
        assert!(equivalent(&a, &b));
        assert!(!equivalent(&a, &c));
    }

    #[test]
    fn reads_conditions_leniently() {
        let status = serde_json::json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "R", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            {"bogus": true}
        ]});
        let read = read(Some(&status));
        assert_eq!(read.len(), 1);
        assert!(is_true(&read, "Ready"));
        assert!(super::read(None).is_empty());
    }
}
