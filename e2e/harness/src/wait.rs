//! Bounded waiting for a condition observed through the API.

use std::fmt::Display;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Why a condition does not hold yet. Any error converts into it (a failed API call while
/// waiting is "not yet", and is reported if the wait times out).
#[derive(Debug)]
pub struct Pending(pub String);

impl Pending {
    /// A reason, shown in the timeout error if the condition never holds.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl<E: Display> From<E> for Pending {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// Calls `check` until it returns `Ok`, for at most `timeout`, and returns its value. Checks
/// are spaced 50 ms at first, backing off to 500 ms. On timeout the error names `what` and
/// the last [`Pending`] reason, so a failing test says what it was waiting for and what it
/// saw instead.
pub async fn wait_for<T>(
    what: impl Display,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> std::result::Result<T, Pending>,
) -> Result<T> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        // A check that hangs (an API call that never returns) must not outlive the timeout.
        let remaining = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(100));
        let last = match tokio::time::timeout(remaining, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(pending)) => pending.0,
            Err(_) => format!("the check itself did not finish within {remaining:?}"),
        };
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(delay.min(timeout - elapsed)).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_passes() {
        let mut calls = 0;
        let value = wait_for("three calls", Duration::from_secs(5), async || {
            calls += 1;
            if calls < 3 {
                Err(Pending::new(format!("call {calls}")))
            } else {
                Ok(calls)
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn timeout_names_what_and_the_last_observation() {
        let err = wait_for(
            "the answer",
            Duration::from_millis(200),
            async || -> Result<(), Pending> { Err("still 41".to_string().into()) },
        )
        .await
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("waiting for the answer"), "{message}");
        assert!(message.contains("last observed: still 41"), "{message}");
    }

    #[tokio::test]
    async fn a_hanging_check_is_cut_off() {
        let err = wait_for(
            "a hang",
            Duration::from_millis(200),
            async || -> Result<(), Pending> {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
