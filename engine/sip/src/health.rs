//! Whether a trunk is fit to carry calls: a small state machine fed the
//! results of OPTIONS pings and of calls, with the time as an argument, so
//! its rules are tested without a clock or a network.
//!
//! - A trunk starts up.
//! - `down_after` failed pings in a row (no answer, or a 5xx/6xx) mark it
//!   down; one answered ping marks it up again.
//! - A call the trunk itself failed (a 5xx, a 403, no response at all)
//!   marks it down at once. With pings it stays down until a ping is
//!   answered; without pings it is tried again after `retry_after`.
//! - A call that got through the trunk (answered, or refused by the far
//!   end: busy, no answer, a wrong number) marks it up: it works.

use std::time::{Duration, Instant};

/// How trunks are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Ping every trunk with an out-of-dialog OPTIONS this often; `None`:
    /// no pings (a trunk is then judged by its calls only).
    pub ping_interval: Option<Duration>,
    /// A ping not answered within this has failed.
    pub ping_timeout: Duration,
    /// Failed pings in a row that mark a trunk down.
    pub down_after: u32,
    /// Without pings, how long a trunk that failed a call is passed over.
    pub retry_after: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(5),
            down_after: 3,
            retry_after: Duration::from_secs(30),
        }
    }
}

/// A change of a trunk's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The trunk is down, for this reason.
    WentDown(String),
    CameUp,
}

/// One trunk's health.
#[derive(Debug, Clone)]
pub struct Health {
    policy: HealthPolicy,
    /// Why the trunk is down, and since when; `None` while it is up.
    down: Option<(String, Instant)>,
    /// Pings failed in a row.
    missed: u32,
}

impl Health {
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            down: None,
            missed: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }

    /// Why the trunk is down.
    pub fn reason(&self) -> Option<&str> {
        self.down.as_ref().map(|(r, _)| r.as_str())
    }

    /// Pings failed in a row so far.
    pub fn missed_pings(&self) -> u32 {
        self.missed
    }

    /// A ping's result: `Ok` when the trunk answered it, else why not.
    pub fn ping(&mut self, now: Instant, result: Result<(), String>) -> Option<Transition> {
        match result {
            Ok(()) => {
                self.missed = 0;
                self.up()
            }
            Err(why) => {
                self.missed = self.missed.saturating_add(1);
                if self.missed >= self.policy.down_after.max(1) {
                    let reason = format!("{} OPTIONS pings failed: {why}", self.missed);
                    self.go_down(now, reason)
                } else {
                    None
                }
            }
        }
    }

    /// The trunk itself failed a call (a 5xx, a 403, no response).
    pub fn call_failed(&mut self, now: Instant, why: &str) -> Option<Transition> {
        self.go_down(now, format!("a call failed: {why}"))
    }

    /// A call got through the trunk to the far end, whatever the far end did.
    pub fn call_got_through(&mut self) -> Option<Transition> {
        self.missed = 0;
        self.up()
    }

    /// The passing of time: without pings, a trunk down for `retry_after`
    /// is tried again. With pings only a ping brings it back.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        match &self.down {
            Some((_, since))
                if self.policy.ping_interval.is_none()
                    && now.saturating_duration_since(*since) >= self.policy.retry_after =>
            {
                self.up()
            }
            _ => None,
        }
    }

    fn up(&mut self) -> Option<Transition> {
        self.down.take().map(|_| Transition::CameUp)
    }

    fn go_down(&mut self, now: Instant, reason: String) -> Option<Transition> {
        let was_up = self.down.is_none();
        // A trunk already down keeps the time it went down, with the news.
        let since = self.down.as_ref().map_or(now, |(_, s)| *s);
        self.down = Some((reason.clone(), since));
        was_up.then_some(Transition::WentDown(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn pinged() -> HealthPolicy {
        HealthPolicy::default()
    }

    fn unpinged() -> HealthPolicy {
        HealthPolicy {
            ping_interval: None,
            ..HealthPolicy::default()
        }
    }

    #[test]
    fn three_missed_pings_in_a_row_mark_the_trunk_down_and_one_answer_brings_it_back() {
        let t0 = Instant::now();
        let mut h = Health::new(pinged());
        assert!(h.is_up(), "a trunk starts up");
        assert_eq!(h.ping(t0, Err("no answer".into())), None);
        assert_eq!(h.ping(t0 + secs(30), Err("no answer".into())), None);
        assert!(h.is_up(), "two misses are not enough");
        assert_eq!(
            h.ping(t0 + secs(60), Err("no answer".into())),
            Some(Transition::WentDown(
                "3 OPTIONS pings failed: no answer".into()
            ))
        );
        assert!(!h.is_up());
        assert_eq!(h.missed_pings(), 3);
        // More misses change nothing more.
        assert_eq!(h.ping(t0 + secs(90), Err("no answer".into())), None);
        assert_eq!(h.reason(), Some("4 OPTIONS pings failed: no answer"));
        // Time alone does not bring a pinged trunk back.
        assert_eq!(h.tick(t0 + secs(3600)), None);
        assert!(!h.is_up());
        assert_eq!(h.ping(t0 + secs(120), Ok(())), Some(Transition::CameUp));
        assert!(h.is_up());
        assert_eq!(h.reason(), None);
        assert_eq!(h.missed_pings(), 0);
    }

    #[test]
    fn an_answered_ping_resets_the_count_of_misses() {
        let t0 = Instant::now();
        let mut h = Health::new(pinged());
        for round in 0..5 {
            let at = t0 + secs(90 * round);
            assert_eq!(h.ping(at, Err("503 Service Unavailable".into())), None);
            assert_eq!(h.ping(at + secs(30), Err("no answer".into())), None);
            assert_eq!(h.ping(at + secs(60), Ok(())), None);
        }
        assert!(h.is_up(), "never three misses in a row");
    }

    #[test]
    fn a_call_the_trunk_failed_marks_it_down_until_a_ping_is_answered() {
        let t0 = Instant::now();
        let mut h = Health::new(pinged());
        assert_eq!(
            h.call_failed(t0, "503 Service Unavailable"),
            Some(Transition::WentDown(
                "a call failed: 503 Service Unavailable".into()
            ))
        );
        assert_eq!(h.call_failed(t0 + secs(1), "503 Service Unavailable"), None);
        assert_eq!(h.tick(t0 + secs(600)), None);
        assert!(!h.is_up());
        assert_eq!(h.ping(t0 + secs(30), Ok(())), Some(Transition::CameUp));
    }

    #[test]
    fn without_pings_a_trunk_that_failed_a_call_is_tried_again_after_a_pause() {
        let t0 = Instant::now();
        let mut h = Health::new(unpinged());
        assert!(h.call_failed(t0, "no response").is_some());
        assert_eq!(h.tick(t0 + secs(29)), None);
        assert!(!h.is_up());
        // A second failure while down keeps the first time.
        assert_eq!(h.call_failed(t0 + secs(10), "no response"), None);
        assert_eq!(h.tick(t0 + secs(30)), Some(Transition::CameUp));
        assert!(h.is_up());
        assert_eq!(h.tick(t0 + secs(31)), None);
    }

    #[test]
    fn a_call_that_got_through_shows_the_trunk_works() {
        let t0 = Instant::now();
        let mut h = Health::new(pinged());
        for i in 0..3 {
            h.ping(t0 + secs(30 * i), Err("no answer".into()));
        }
        assert!(!h.is_up());
        assert_eq!(h.call_got_through(), Some(Transition::CameUp));
        assert_eq!(h.missed_pings(), 0);
        assert_eq!(h.call_got_through(), None);
    }

    #[test]
    fn one_miss_is_enough_when_the_policy_says_so() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthPolicy {
            down_after: 0,
            ..pinged()
        });
        assert!(matches!(
            h.ping(t0, Err("no answer".into())),
            Some(Transition::WentDown(_))
        ));
    }
}
