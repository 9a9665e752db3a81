//! Caller numbers as the phone network signals them, read as E.164.
//!
//! Trunks deliver the caller's number in whatever form the carrier uses:
//! international (`+8613800138000`, `008613800138000`), national with the
//! trunk prefix (`013800138000`, `01065529988`), or national without it
//! (`13800138000`). Enrolled numbers are stored as E.164, so a call into the
//! service is matched on the E.164 form, using the deployment's country code
//! for national forms.

/// The E.164 form (`+` and 7–15 digits) of a caller number, or `None` when
/// it cannot be one (withheld, a SIP user name, too short or long).
/// `country` is the country calling code for national numbers (`"86"`);
/// without it only international forms are read.
pub fn caller_e164(raw: &str, country: Option<&str>) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest.to_string()
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        rest.to_string()
    } else {
        let cc = country?;
        let national = cleaned.strip_prefix('0').unwrap_or(&cleaned);
        format!("{cc}{national}")
    };
    let valid = (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_a_chinese_trunk_uses_reads_the_same() {
        for raw in [
            "+8613800138000",
            "008613800138000",
            "013800138000",
            "13800138000",
            "+86 138-0013-8000",
        ] {
            assert_eq!(
                caller_e164(raw, Some("86")).as_deref(),
                Some("+8613800138000"),
                "{raw}"
            );
        }
        assert_eq!(
            caller_e164("01065529988", Some("86")).as_deref(),
            Some("+861065529988")
        );
    }

    #[test]
    fn national_forms_need_a_country_and_junk_is_refused() {
        assert_eq!(caller_e164("13800138000", None), None);
        assert_eq!(
            caller_e164("+447700900123", None).as_deref(),
            Some("+447700900123")
        );
        for junk in [
            "",
            "anonymous",
            "+",
            "+0123456789",
            "12",
            "+1234567890123456",
            "1380013800x",
        ] {
            assert_eq!(caller_e164(junk, Some("86")), None, "{junk}");
        }
    }
}
