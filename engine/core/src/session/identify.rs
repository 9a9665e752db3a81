//! A caller whose number is not enrolled keys the elder's care number on the
//! keypad: a small state machine fed keys, prompt ends and the time.
//!
//! Keys end with `#` (or a pause after the last key); `*` starts over. A
//! number that is not found is asked for again, up to [`MAX_TRIES`] times.

use crate::flow::Millis;

/// Times a caller may key a number before the call ends.
pub const MAX_TRIES: u32 = 3;
/// Longest care number accepted; more keys are ignored.
const MAX_DIGITS: usize = 16;
/// Silence after the prompt before the question is asked again.
const FIRST_KEY_MS: u64 = 10_000;
/// Silence after a key that ends the number.
const NEXT_KEY_MS: u64 = 4_000;

/// What the caller is asked to do, or what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Play the request for the care number (`again`: the last one failed).
    Ask { again: bool },
    /// Wait for keys until this time, then call [`KeyedId::timeout`].
    Wait { until: Millis },
    /// Look this care number up, then call [`KeyedId::found`] or
    /// [`KeyedId::not_found`].
    Lookup(String),
    /// Give up: say goodbye and hang up.
    GiveUp,
}

#[derive(Debug, Clone, Default)]
pub struct KeyedId {
    digits: String,
    tries: u32,
}

impl KeyedId {
    /// Start: ask for the number.
    pub fn start() -> (Self, Step) {
        (Self::default(), Step::Ask { again: false })
    }

    /// The request finished playing: keys are waited for (less long when
    /// the caller already started keying over it).
    pub fn prompt_finished(&mut self, now: Millis) -> Step {
        let wait = if self.digits.is_empty() {
            FIRST_KEY_MS
        } else {
            NEXT_KEY_MS
        };
        Step::Wait {
            until: Millis(now.0 + wait),
        }
    }

    /// A key was pressed (also while the request plays).
    pub fn key(&mut self, key: char, now: Millis) -> Step {
        match key {
            '#' if !self.digits.is_empty() => Step::Lookup(std::mem::take(&mut self.digits)),
            '*' => {
                self.digits.clear();
                Step::Ask { again: false }
            }
            d if d.is_ascii_digit() && self.digits.len() < MAX_DIGITS => {
                self.digits.push(d);
                Step::Wait {
                    until: Millis(now.0 + NEXT_KEY_MS),
                }
            }
            _ => Step::Wait {
                until: Millis(now.0 + NEXT_KEY_MS),
            },
        }
    }

    /// No key came in time: what was keyed is the number; nothing is a try.
    pub fn timeout(&mut self) -> Step {
        if self.digits.is_empty() {
            self.failed()
        } else {
            Step::Lookup(std::mem::take(&mut self.digits))
        }
    }

    /// The number keyed is no elder's.
    pub fn not_found(&mut self) -> Step {
        self.failed()
    }

    fn failed(&mut self) -> Step {
        self.tries += 1;
        if self.tries >= MAX_TRIES {
            Step::GiveUp
        } else {
            Step::Ask { again: true }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_then_hash_is_looked_up() {
        let (mut id, first) = KeyedId::start();
        assert_eq!(first, Step::Ask { again: false });
        assert_eq!(
            id.prompt_finished(Millis(1000)),
            Step::Wait {
                until: Millis(11_000)
            }
        );
        for k in "1042".chars() {
            assert!(matches!(id.key(k, Millis(2000)), Step::Wait { .. }));
        }
        assert_eq!(id.key('#', Millis(2500)), Step::Lookup("1042".into()));
    }

    #[test]
    fn a_pause_ends_the_number_and_star_starts_over() {
        let (mut id, _) = KeyedId::start();
        id.key('9', Millis(0));
        assert_eq!(id.key('*', Millis(100)), Step::Ask { again: false });
        id.key('7', Millis(200));
        assert_eq!(id.timeout(), Step::Lookup("7".into()));
    }

    #[test]
    fn keys_over_the_prompt_are_not_waited_on_long() {
        let (mut id, _) = KeyedId::start();
        id.key('5', Millis(3000));
        assert_eq!(
            id.prompt_finished(Millis(5000)),
            Step::Wait {
                until: Millis(9000)
            }
        );
    }

    #[test]
    fn three_failures_give_up() {
        let (mut id, _) = KeyedId::start();
        assert_eq!(id.timeout(), Step::Ask { again: true });
        assert_eq!(
            id.key('#', Millis(0)),
            Step::Wait {
                until: Millis(4000)
            }
        );
        id.key('5', Millis(0));
        assert_eq!(id.key('#', Millis(0)), Step::Lookup("5".into()));
        assert_eq!(id.not_found(), Step::Ask { again: true });
        assert_eq!(id.not_found(), Step::GiveUp);
    }
}
