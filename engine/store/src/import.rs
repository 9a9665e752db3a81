//! Enrolling elders from a CSV file.
//!
//! Every row is validated and every problem reported with its line and
//! column. By default a file with any bad row imports nothing (a half-imported
//! file is hard to fix); with `skip_invalid` the good rows go in and the bad
//! ones are listed.
//!
//! Messages say what is wrong with a value, never the value: the report is
//! printed, logged and pasted into tickets, and names, phone numbers and
//! birth dates are read as [`Personal`] so they cannot be quoted by accident.

use std::collections::HashMap;
use std::io::Read;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use voicecare_core::redact::Personal;

use crate::elders::{self, Contact, NewElder, Phone, Schedule, TimeZoneName};
use crate::error::{Result, StoreError};

/// The columns a file may have. `full_name`, `language`, `time_zone`,
/// `community` and one of `phone`/`device_id` are required.
pub const COLUMNS: &[&str] = &[
    "external_ref",
    "full_name",
    "birth_date",
    "address",
    "phone",
    "device_id",
    "language",
    "time_zone",
    "community",
    "notes",
    "window_start",
    "window_end",
    "days",
    "max_attempts",
    "retry_minutes",
    "contact1_name",
    "contact1_relation",
    "contact1_phone",
    "contact1_device",
    "contact2_name",
    "contact2_relation",
    "contact2_phone",
    "contact2_device",
    "contact3_name",
    "contact3_relation",
    "contact3_phone",
    "contact3_device",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    pub column: String,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub rows: usize,
    pub imported: usize,
    pub errors: Vec<RowError>,
    /// True when nothing was written because of errors (all-or-nothing mode).
    pub rolled_back: bool,
}

/// A row that passed the checks that need no database.
struct ParsedRow {
    line: u64,
    community_path: String,
    elder: NewElder,
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Whether a value may be quoted in a message: a column name, a language or
/// day code, a time, a small number or a time zone name, never a name, phone
/// number, birth date or free text. A file whose header is missing or wrong
/// puts those under any column, so every message quotes through this.
pub fn quotable(v: &str) -> bool {
    let word = v.len() <= 32
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let time = v.len() <= 8 && v.chars().all(|c| c.is_ascii_digit() || c == ':');
    let number = v.len() <= 6
        && v.chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == '+');
    let zone = v.len() <= 40
        && v.contains('/')
        && v.starts_with(|c: char| c.is_ascii_uppercase())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
    !v.is_empty() && (word || time || number || zone)
}

/// `v` in quotes when [`quotable`], else "the value".
fn quoted(v: &str) -> String {
    if quotable(v) {
        format!("{v:?}")
    } else {
        "the value".into()
    }
}

/// `v` in quotes with a space before it when [`quotable`], else nothing.
fn quote(v: &str) -> String {
    if quotable(v) {
        format!(" {v:?}")
    } else {
        String::new()
    }
}

fn parse_days(s: &str) -> std::result::Result<i16, String> {
    // "daily", "weekdays", or a list such as "mon,wed,fri".
    let raw = s.trim();
    let s = raw.to_ascii_lowercase();
    match s.as_str() {
        "" | "daily" => return Ok(127),
        "weekdays" => return Ok(0b0011111),
        "weekends" => return Ok(0b1100000),
        _ => {}
    }
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut mask = 0i16;
    for part in s.split([',', ' ', ';']).filter(|p| !p.is_empty()) {
        let i = names
            .iter()
            .position(|n| part.starts_with(n))
            .ok_or_else(|| {
                // Quoted only as written: folding a name's case makes it look like a code.
                let shown = if raw.contains(part) {
                    quote(part)
                } else {
                    String::new()
                };
                format!("unknown day{shown} (use mon..sun, daily, weekdays or weekends)")
            })?;
        mask |= 1 << i;
    }
    Ok(mask)
}

fn parse_rows(
    data: &[u8],
    errors: &mut Vec<RowError>,
) -> std::result::Result<(Vec<ParsedRow>, usize), RowError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(data);
    let headers = rdr
        .headers()
        .map_err(|e| RowError {
            line: 1,
            column: "-".into(),
            message: format!("cannot read the header row: {e}"),
        })?
        .clone();
    for (i, h) in headers.iter().enumerate() {
        if !COLUMNS.contains(&h) {
            // A file without its header row has a person's data here.
            let column = if quotable(h) {
                h.to_string()
            } else {
                format!("#{}", i + 1)
            };
            return Err(RowError {
                line: 1,
                column,
                message: format!(
                    "unknown column (the first row names the columns); expected some of: {}",
                    COLUMNS.join(", ")
                ),
            });
        }
    }
    for required in ["full_name", "language", "time_zone", "community"] {
        if !headers.iter().any(|h| h == required) {
            return Err(RowError {
                line: 1,
                column: required.into(),
                message: "required column is missing".into(),
            });
        }
    }
    let idx: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let mut rows = Vec::new();
    let mut count = 0;
    let (mut unlisted, mut last_line) = (0usize, 1u64);
    for record in rdr.records() {
        count += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                last_line = last_line.max(line);
                let error = RowError {
                    line,
                    column: "-".into(),
                    message: format!("malformed CSV: {e}"),
                };
                list(errors, &mut unlisted, error);
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        last_line = last_line.max(line);
        let get = |c: &str| idx.get(c).and_then(|&i| record.get(i)).unwrap_or("");
        let mut row_errs = Vec::new();
        let mut err = |column: &str, message: String| {
            row_errs.push(RowError {
                line,
                column: column.into(),
                message,
            })
        };

        let full_name = Personal::new(get("full_name").to_string());
        let name_len = full_name.expose().chars().count();
        if name_len == 0 {
            err("full_name", "is required".into());
        } else if name_len > 200 {
            err(
                "full_name",
                format!("is {name_len} characters; the limit is 200"),
            );
        }
        let mut text_limit = |col: &str, max: usize| -> Option<String> {
            let v = opt(get(col));
            if let Some(v) = &v
                && v.chars().count() > max
            {
                err(
                    col,
                    format!("is {} characters; the limit is {max}", v.chars().count()),
                );
            }
            v
        };
        let address = text_limit("address", 500);
        let notes = text_limit("notes", 2000);
        let external_ref = text_limit("external_ref", 64);
        let birth_date =
            opt(get("birth_date")).map(Personal::new).and_then(
                |s| match NaiveDate::parse_from_str(s.expose(), "%Y-%m-%d") {
                    Ok(d) if d.year_ce().1 > 1900 => Some(d),
                    Ok(_) => {
                        err("birth_date", "must be after 1900".into());
                        None
                    }
                    Err(_) => {
                        err("birth_date", "not a date (expected YYYY-MM-DD)".into());
                        None
                    }
                },
            );
        let phone =
            opt(get("phone"))
                .map(Personal::new)
                .and_then(|s| match Phone::parse(s.expose()) {
                    Ok(p) => Some(p),
                    Err(m) => {
                        err("phone", m);
                        None
                    }
                });
        let bad_device = |d: &str| {
            !(3..=64).contains(&d.len())
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        const DEVICE_RULE: &str = "must be 3–64 characters of A-Z, a-z, 0-9, dot, dash, underscore";
        let device_id = opt(get("device_id"));
        if device_id.as_deref().is_some_and(bad_device) {
            err("device_id", DEVICE_RULE.into());
        }
        if phone.is_none() && device_id.is_none() && opt(get("phone")).is_none() {
            err(
                "phone",
                "an elder needs a phone number or a device_id".into(),
            );
        }
        let language = get("language").to_ascii_lowercase();
        if !["zh", "en"].contains(&language.as_str()) {
            err(
                "language",
                format!("{} is not supported (zh or en)", quoted(get("language"))),
            );
        }
        let time_zone = match TimeZoneName::parse(get("time_zone")) {
            Ok(tz) => Some(tz),
            Err(_) => {
                err(
                    "time_zone",
                    format!(
                        "unknown time zone{} (expected an IANA name such as Asia/Shanghai)",
                        quote(get("time_zone"))
                    ),
                );
                None
            }
        };
        let community_path = get("community").to_string();
        if community_path.is_empty() {
            err(
                "community",
                "is required (City/County/Street/Community)".into(),
            );
        }
        let time =
            |col: &str, default: &str, err: &mut dyn FnMut(&str, String)| -> Option<NaiveTime> {
                let s = opt(get(col)).unwrap_or_else(|| default.to_string());
                NaiveTime::parse_from_str(&s, "%H:%M")
                    .map_err(|_| err(col, format!("{} is not a time in HH:MM form", quoted(&s))))
                    .ok()
            };
        let window_start = time("window_start", "09:00", &mut err);
        let window_end = time("window_end", "11:00", &mut err);
        if window_start.is_some() && window_start == window_end {
            err("window_end", "the call window cannot be empty".into());
        }
        let days = parse_days(get("days")).map_err(|m| err("days", m)).ok();
        let small = |col: &str,
                     default: i16,
                     range: std::ops::RangeInclusive<i16>,
                     err: &mut dyn FnMut(&str, String)|
         -> Option<i16> {
            match opt(get(col)) {
                None => Some(default),
                Some(s) => match s.parse::<i16>() {
                    Ok(v) if range.contains(&v) => Some(v),
                    _ => {
                        err(
                            col,
                            format!(
                                "{} is not a number in {}..={}",
                                quoted(&s),
                                range.start(),
                                range.end()
                            ),
                        );
                        None
                    }
                },
            }
        };
        let max_attempts = small("max_attempts", 3, 1..=10, &mut err);
        let retry_minutes = small("retry_minutes", 10, 1..=240, &mut err);
        let mut contacts = Vec::new();
        for n in 1..=3 {
            let name = opt(get(&format!("contact{n}_name"))).map(Personal::new);
            let phone_raw = opt(get(&format!("contact{n}_phone"))).map(Personal::new);
            match (name, phone_raw) {
                (None, None) => {}
                (Some(name), Some(p)) => match Phone::parse(p.expose()) {
                    Ok(phone) => {
                        // The contact's care app, rung by the no-answer ladder.
                        let device_id = opt(get(&format!("contact{n}_device")));
                        if device_id.as_deref().is_some_and(bad_device) {
                            err(&format!("contact{n}_device"), DEVICE_RULE.into());
                        }
                        contacts.push(Contact {
                            name: name.into_inner(),
                            relation: opt(get(&format!("contact{n}_relation"))),
                            phone,
                            device_id,
                        })
                    }
                    Err(m) => err(&format!("contact{n}_phone"), m),
                },
                (None, Some(_)) => err(
                    &format!("contact{n}_name"),
                    "a contact with a phone needs a name".into(),
                ),
                (Some(_), None) => err(
                    &format!("contact{n}_phone"),
                    "a contact needs a phone number".into(),
                ),
            }
        }
        if !row_errs.is_empty() {
            for e in row_errs {
                list(errors, &mut unlisted, e);
            }
            continue;
        }
        let (
            Some(time_zone),
            Some(window_start),
            Some(window_end),
            Some(days),
            Some(max_attempts),
            Some(retry_minutes),
        ) = (
            time_zone,
            window_start,
            window_end,
            days,
            max_attempts,
            retry_minutes,
        )
        else {
            continue;
        };
        rows.push(ParsedRow {
            line,
            community_path,
            elder: NewElder {
                external_ref,
                full_name: full_name.into_inner(),
                birth_date,
                address,
                phone,
                device_id,
                language,
                time_zone,
                community_id: 0,
                notes,
                contacts,
                schedule: Some(Schedule {
                    window_start,
                    window_end,
                    days_of_week: days,
                    max_attempts,
                    retry_minutes,
                }),
            },
        });
    }
    if unlisted > 0 {
        errors.push(RowError {
            line: last_line,
            column: "-".into(),
            message: format!(
                "{unlisted} more problems not listed (the first {MAX_LISTED_ERRORS} are)"
            ),
        });
    }
    Ok((rows, count))
}

/// Problems listed for one file; past this they are counted, not kept, so a
/// file of garbage cannot make the report grow with it.
pub const MAX_LISTED_ERRORS: usize = 1000;

fn list(errors: &mut Vec<RowError>, unlisted: &mut usize, e: RowError) {
    if errors.len() < MAX_LISTED_ERRORS {
        errors.push(e);
    } else {
        *unlisted += 1;
    }
}

use chrono::Datelike;

/// Duplicates inside the file: the second and later rows are the bad ones,
/// named by the line they repeat, not by the value.
fn drop_duplicates(rows: &mut Vec<ParsedRow>, errors: &mut Vec<RowError>) {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut dup_lines = std::collections::HashSet::new();
    for r in rows.iter() {
        for (col, key) in [
            (
                "phone",
                r.elder.phone.as_ref().map(|p| p.as_str().to_string()),
            ),
            ("device_id", r.elder.device_id.clone()),
            ("external_ref", r.elder.external_ref.clone()),
        ] {
            if let Some(k) = key
                && let Some(first) = seen.insert(format!("{col}:{k}"), r.line)
            {
                errors.push(RowError {
                    line: r.line,
                    column: col.into(),
                    message: format!("duplicates line {first}"),
                });
                dup_lines.insert(r.line);
            }
        }
    }
    rows.retain(|r| !dup_lines.contains(&r.line));
}

/// Check CSV data without a database: every problem [`import_csv`] would
/// report except those only the database can tell (a community that does not
/// exist, a phone number or device already enrolled). Nothing is imported.
pub fn check_csv(data: &[u8]) -> ImportReport {
    let mut errors = Vec::new();
    match parse_rows(data, &mut errors) {
        Ok((mut rows, count)) => {
            drop_duplicates(&mut rows, &mut errors);
            errors.sort_by(|a, b| (a.line, &a.column).cmp(&(b.line, &b.column)));
            ImportReport {
                rows: count,
                imported: 0,
                errors,
                rolled_back: false,
            }
        }
        Err(header) => ImportReport {
            rows: 0,
            imported: 0,
            errors: vec![header],
            rolled_back: true,
        },
    }
}

/// Import elders from CSV data. `source` names the file in messages.
pub async fn import_csv(
    pool: &PgPool,
    mut input: impl Read,
    skip_invalid: bool,
    create_units: bool,
    now: DateTime<Utc>,
) -> Result<ImportReport> {
    let mut data = Vec::new();
    input
        .read_to_end(&mut data)
        .map_err(|e| StoreError::invalid("file", format!("cannot read: {e}")))?;
    let mut errors = Vec::new();
    let (mut rows, count) = match parse_rows(&data, &mut errors) {
        Ok(r) => r,
        Err(header) => {
            return Ok(ImportReport {
                rows: 0,
                imported: 0,
                errors: vec![header],
                rolled_back: true,
            });
        }
    };

    drop_duplicates(&mut rows, &mut errors);

    let mut tx = pool.begin().await?;
    let mut imported = 0;
    for r in rows.iter_mut() {
        let parts: Vec<&str> = r.community_path.split('/').map(str::trim).collect();
        let unit = if create_units && parts.len() == 4 && parts.iter().all(|p| !p.is_empty()) {
            Some(crate::org::ensure_path(&mut tx, &parts).await?)
        } else {
            crate::org::find_by_path(&mut *tx, &r.community_path)
                .await
                .ok()
                .flatten()
        };
        match unit {
            Some(u) if u.level == "community" => r.elder.community_id = u.id,
            Some(_) => {
                errors.push(RowError {
                    line: r.line,
                    column: "community".into(),
                    message: "names a unit above community level".into(),
                });
                continue;
            }
            None => {
                errors.push(RowError {
                    line: r.line,
                    column: "community".into(),
                    message: "no such community (expected City/County/Street/Community of an existing unit)".into(),
                });
                continue;
            }
        }
        // A savepoint per row: a row the database rejects (e.g. a phone number
        // already enrolled) must not poison the rows around it.
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        match elders::insert(&mut sp, &r.elder, now).await {
            Ok(_) => {
                sp.commit().await?;
                imported += 1;
            }
            Err(StoreError::Conflict(m)) => {
                sp.rollback().await?;
                let (col, msg) = m.split_once(": ").unwrap_or(("-", &m));
                errors.push(RowError {
                    line: r.line,
                    column: col.into(),
                    message: msg.into(),
                });
            }
            Err(other) => {
                sp.rollback().await?;
                errors.push(RowError {
                    line: r.line,
                    column: "-".into(),
                    message: other.to_string(),
                });
            }
        }
    }
    errors.sort_by(|a, b| (a.line, &a.column).cmp(&(b.line, &b.column)));
    if !errors.is_empty() && !skip_invalid {
        tx.rollback().await?;
        return Ok(ImportReport {
            rows: count,
            imported: 0,
            errors,
            rolled_back: true,
        });
    }
    tx.commit().await?;
    Ok(ImportReport {
        rows: count,
        imported,
        errors,
        rolled_back: false,
    })
}
