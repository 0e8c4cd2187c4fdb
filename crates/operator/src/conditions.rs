//! kstatus conditions, computed purely: a condition's `lastTransitionTime` only moves when its
//! status changes, so writing the same status twice changes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A desired condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// e.g. `Ready`.
    pub type_: &'static str,
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges desired conditions over the current ones. Conditions not in `desired` are dropped.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let previous = current.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: bounded(&d.message),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Longest condition message kept. The API caps a condition message at 32 KiB; a message that
/// lists hundreds of namespaces is unreadable long before that, and the details are in
/// `status.namespaces` anyway.
pub const MAX_MESSAGE: usize = 4096;

/// `message` cut at [`MAX_MESSAGE`] bytes (on a character boundary), saying how much was cut.
pub fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes; see status.namespaces)",
        &message[..end],
        message.len() - end
    )
}

/// Sets one condition in place, keeping the others.
pub fn set(conditions: &mut Vec<Condition>, d: Desired, generation: Option<i64>, now: &Time) {
    let merged = merge(conditions, std::slice::from_ref(&d), generation, now);
    conditions.retain(|c| c.type_ != d.type_);
    conditions.extend(merged);
}

/// Whether a condition of `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let short = "fine".to_string();
        assert_eq!(bounded(&short), short);
        let long = "é".repeat(MAX_MESSAGE); // two bytes each
        let cut = bounded(&long);
        assert!(cut.len() < MAX_MESSAGE + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!(
            "({} more bytes; see status.namespaces)",
            MAX_MESSAGE
        )));
        let merged = merge(
            &[],
            &[Desired::new("Ready", false, "Failed", long)],
            None,
            &t(1),
        );
        assert_eq!(merged[0].message, cut);
    }

    #[test]
    fn transition_time_is_kept_when_status_is_unchanged() {
        let first = merge(
            &[],
            &[Desired::new("Ready", false, "Progressing", "step 3")],
            Some(1),
            &t(100),
        );
        assert_eq!(first[0].last_transition_time, t(100));
        let second = merge(
            &first,
            &[Desired::new("Ready", false, "Progressing", "step 4")],
            Some(1),
            &t(200),
        );
        assert_eq!(second[0].last_transition_time, t(100));
        assert_eq!(second[0].message, "step 4");
        let third = merge(
            &second,
            &[Desired::new("Ready", true, "Completed", "done")],
            Some(2),
            &t(300),
        );
        assert_eq!(third[0].last_transition_time, t(300));
        assert_eq!(third[0].observed_generation, Some(2));
        assert!(is_true(&third, "Ready"));
    }
}
