//! Fuzz target: the CSV of `voicecare elders import`, checked as the import
//! checks it before touching the database (`import::check_csv`). See
//! docs/fuzzing.md.
//!
//! Asserts: no panic; every error names a line of the file (or 0 when the
//! CSV reader cannot tell) and a column; no error quotes a value of the
//! file that could be personal data: only what `import::quotable` allows
//! (column names, codes, times, small numbers, time zone names), as the file
//! wrote it, is ever quoted; checking holds at most `BYTES_PER_INPUT_BYTE` × the file's length + `SLACK` at once.

#[path = "../../../tests/fuzz/mod.rs"]
mod fuzz;

use std::collections::HashSet;

use voicecare_store::import::{COLUMNS, check_csv, quotable};

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

/// The listed errors (at most `import::MAX_LISTED_ERRORS`) and the reader's buffers.
const SLACK: usize = 512 << 10;
const BYTES_PER_INPUT_BYTE: usize = 48;

const TOKENS: &[&[u8]] = &[
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"full_name",
    b"birth_date",
    b"phone",
    b"device_id",
    b"language",
    b"time_zone",
    b"community",
    b"window_start",
    b"days",
    b"max_attempts",
    b"contact1_name",
    b"contact1_phone",
    b"contact2_device",
    b"Wang Xiulan",
    b"+8613800000001",
    b"1938-04-12",
    b"zh",
    b"Asia/Shanghai",
    b"A/B/C/D",
    b"25:61",
    b"mon,wed",
];

/// Every cell of the file, header included, as a lenient reader sees it.
fn cells(input: &[u8]) -> Vec<String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut out = Vec::new();
    for record in rdr.byte_records().take(1000) {
        let Ok(record) = record else { continue };
        for cell in record.iter() {
            out.push(String::from_utf8_lossy(cell).into_owned());
        }
    }
    out
}

fn check(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let (report, peak) = fuzz::measure(|| check_csv(input));
    if peak > BYTES_PER_INPUT_BYTE * input.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to check {} bytes",
            input.len()
        )));
    }
    let lines = input.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    for e in &report.errors {
        if e.line > lines {
            return Err(fuzz::fail(format!("{e}: the file has {lines} lines")));
        }
        if e.column.is_empty() || e.message.is_empty() {
            return Err(fuzz::fail(format!(
                "an error without a column or message: {e:?}"
            )));
        }
        if !(e.column == "-"
            || e.column.starts_with('#')
            || COLUMNS.contains(&e.column.as_str())
            || quotable(&e.column))
        {
            return Err(fuzz::fail(format!("{e}: not a column")));
        }
    }
    // Values are quoted "like this": each must be one that may be quoted,
    // and not a personal value of the file with its case folded.
    let cells = cells(input);
    let quotable_here: HashSet<String> = cells
        .iter()
        .filter(|c| quotable(c))
        .map(|c| c.to_lowercase())
        .collect();
    let personal: HashSet<String> = cells
        .iter()
        .filter(|c| !quotable(c))
        .map(|c| c.to_lowercase())
        .filter(|c| !quotable_here.contains(c))
        .collect();
    for e in &report.errors {
        for q in e.message.split('"').skip(1).step_by(2) {
            if !quotable(q) || personal.contains(&q.to_lowercase()) {
                return Err(fuzz::fail(format!("{e}: quotes {q:?}")));
            }
        }
    }
    Ok(())
}

#[test]
fn csv_files_never_panic_nor_quote_personal_data() {
    fuzz::run("csv", TOKENS, check);
}
