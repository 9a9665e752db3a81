//! Personal data that must not reach a log line or an error message.
//!
//! Wrap a name, phone number or birth date in [`Personal`] and `{:?}` or `{}`
//! print `«redacted»`; the value itself is only reachable through
//! [`Personal::expose`], which makes every use visible at the call site.
//! Messages should say what is wrong with a value ("not a date (expected
//! YYYY-MM-DD)"), never quote it.

use std::fmt;

/// What [`Personal`] prints instead of its value.
pub const REDACTED: &str = "«redacted»";

/// A value that is someone's personal data. `Debug` and `Display` print
/// [`REDACTED`].
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Personal<T>(T);

impl<T> Personal<T> {
    pub const fn new(value: T) -> Self {
        Personal(value)
    }

    /// The value, for the code that needs it (storing it, calling the number):
    /// never for a message.
    pub const fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Personal<U> {
        Personal(f(self.0))
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Personal(value)
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A stand-in for a personal field in a hand-written `Debug`: `Some(«redacted»)`
/// or `None`, so a reader still sees whether the field is set.
pub fn redacted_opt<T>(value: &Option<T>) -> Option<Personal<()>> {
    value.as_ref().map(|_| Personal(()))
}

/// A stand-in for words (a transcript, a prompt with a name in it) in a
/// hand-written `Debug`: `«redacted» (12 chars)`, so a reader still sees
/// whether anything was said and how much.
pub fn redacted_words(text: &str) -> impl fmt::Debug + use<> {
    Words(text.chars().count())
}

/// The values of a map of variables (an elder's name, an answer) redacted,
/// the names kept.
pub fn redacted_values<K: fmt::Debug, V>(
    map: &std::collections::BTreeMap<K, V>,
) -> impl fmt::Debug + '_ {
    Values(map)
}

struct Words(usize);

impl fmt::Debug for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REDACTED} ({} chars)", self.0)
    }
}

struct Values<'a, K, V>(&'a std::collections::BTreeMap<K, V>);

impl<K: fmt::Debug, V> fmt::Debug for Values<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, Personal(()))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let p = Personal::new(String::from("Wang Xiulan +8613800000001"));
        for shown in [
            format!("{p}"),
            format!("{p:?}"),
            format!("{p:#?}"),
            format!("{:?}", Some(&p)),
            format!("{:?}", vec![p.clone()]),
        ] {
            assert!(!shown.contains("Wang") && !shown.contains("138"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
        assert_eq!(p.expose(), "Wang Xiulan +8613800000001");
        assert_eq!(p.map(|s| s.len()).into_inner(), 26);
        assert_eq!(
            format!("{:?}", redacted_opt(&Some(3))),
            format!("Some({REDACTED})")
        );
        assert_eq!(format!("{:?}", redacted_opt::<u8>(&None)), "None");
        assert_eq!(
            format!("{:?}", redacted_words("我摔倒了")),
            format!("{REDACTED} (4 chars)")
        );
        let vars = std::collections::BTreeMap::from([("elder_name", "Wang Xiulan")]);
        assert_eq!(
            format!("{:?}", redacted_values(&vars)),
            format!("{{\"elder_name\": {REDACTED}}}")
        );
    }
}
