//! Rate limits that hold over any minute, not per clock minute: a token bucket per caller
//! (a customer's key, a node's address) that refills evenly. A fixed per-minute window lets
//! twice the limit through across a minute's turn, and makes a limit's test depend on when in
//! the minute it runs.

use std::collections::HashMap;
use std::hash::Hash;

/// What one caller may still do: [`PerMinute::take`]'s token bucket.
#[derive(Clone, Copy, Debug)]
struct Allowance {
    /// Requests left when last counted.
    left: f64,
    at_unix_ms: u64,
}

impl Allowance {
    /// Requests left at `now`: refilled at `per_minute` a minute, up to `per_minute`.
    fn at(&self, now_unix_ms: u64, per_minute: u32) -> f64 {
        let elapsed = now_unix_ms.saturating_sub(self.at_unix_ms) as f64;
        let refilled = elapsed * f64::from(per_minute) / 60_000.0;
        (self.left + refilled).min(f64::from(per_minute))
    }
}

/// Per-caller allowances of so many requests a minute.
#[derive(Debug)]
pub struct PerMinute<K> {
    allowances: HashMap<K, Allowance>,
}

impl<K> Default for PerMinute<K> {
    fn default() -> Self {
        Self {
            allowances: HashMap::new(),
        }
    }
}

/// Callers remembered before full allowances are forgotten.
const REMEMBERED: usize = 100_000;

impl<K: Eq + Hash> PerMinute<K> {
    /// Count one request of `caller`, allowed `per_minute` a minute: `Err(seconds)` to wait
    /// before the next one is allowed when it has none left.
    pub fn take(&mut self, caller: K, per_minute: u32, now_unix_ms: u64) -> Result<(), u64> {
        if self.allowances.len() > REMEMBERED {
            // A full allowance says nothing a fresh one would not. (Limits differ by caller;
            // the largest plausible one keeps this a bound, not an exact test.)
            self.allowances
                .retain(|_, a| now_unix_ms.saturating_sub(a.at_unix_ms) < 60_000);
        }
        let allowance = self.allowances.entry(caller).or_insert(Allowance {
            left: f64::from(per_minute),
            at_unix_ms: now_unix_ms,
        });
        allowance.left = allowance.at(now_unix_ms, per_minute);
        allowance.at_unix_ms = now_unix_ms;
        if allowance.left < 1.0 {
            let ms_each = 60_000.0 / f64::from(per_minute.max(1));
            let wait_s = ((1.0 - allowance.left) * ms_each / 1000.0).ceil() as u64;
            return Err(wait_s.max(1));
        }
        allowance.left -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three a minute: three at once pass, the fourth waits 20 s (one refills every 20 s),
    /// and a burst across a clock minute's turn is still one burst.
    #[test]
    fn the_limit_holds_over_any_sixty_seconds() {
        let mut limits = PerMinute::default();
        let start = 59_500; // half a second before a clock minute turns
        for i in 0..3 {
            assert_eq!(limits.take("a", 3, start + i), Ok(()));
        }
        assert_eq!(limits.take("a", 3, 60_100), Err(20));
        assert_eq!(limits.take("b", 3, 60_100), Ok(()), "callers are apart");
        assert_eq!(limits.take("a", 3, start + 20_000), Ok(()));
        assert!(limits.take("a", 3, start + 20_001).is_err());
        assert_eq!(limits.take("a", 3, start + 80_000), Ok(()));
        assert_eq!(limits.take("a", 3, start + 80_001), Ok(()));
    }
}
