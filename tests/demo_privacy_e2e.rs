//! Personal data stays out of the log: `voicecare demo` runs a small cohort
//! with `RUST_LOG=debug`, and none of the cohort's names, phone numbers,
//! birth dates, addresses or the words of their replies (read back from the
//! `cohort.json` the demo writes beside its report) may appear in what it
//! printed.
//!
//! Needs the whisper model (`scripts/install-model.sh`) and, unless
//! `DATABASE_URL` is set, the embedded PostgreSQL.

mod support;

use std::fs::File;
use std::process::{Command, Stdio};

use support::repo;

/// Letters and digits of `s`, lower case, words separated by one space.
fn words(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` without ANSI colour sequences (ESC `[` … letter).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// What of one reply would give it away: every run of three words, or of
/// four Chinese characters.
fn reply_needles(said: &str) -> Vec<String> {
    let han: Vec<char> = said.chars().filter(|c| is_han(*c)).collect();
    let mut out: Vec<String> = han.windows(4).map(|w| w.iter().collect()).collect();
    let latin = words(&said.chars().filter(|c| !is_han(*c)).collect::<String>());
    let ws: Vec<&str> = latin.split(' ').filter(|w| !w.is_empty()).collect();
    out.extend(ws.windows(3).map(|w| w.join(" ")));
    out
}

/// (what it is, the text to look for) for every personal value of the cohort.
fn needles(cohort: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in cohort["elders"]
        .as_array()
        .expect("cohort.json lists elders")
    {
        let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        let name = field("name");
        out.push(("name".into(), name.clone()));
        for part in name.split_whitespace().filter(|p| p.len() >= 5) {
            out.push(("part of a name".into(), part.to_string()));
        }
        let phone = field("phone");
        let digits = phone.trim_start_matches('+').to_string();
        // The number without its country code, as a person would write it.
        let national = digits.get(2..).unwrap_or_default().to_string();
        out.push(("phone number".into(), phone));
        out.push(("phone number".into(), digits));
        out.push(("phone number".into(), national));
        let born = field("birth_date");
        out.push(("birth date".into(), born.clone()));
        out.push(("birth date".into(), born.replace('-', "/")));
        out.push(("birth date".into(), born.replace('-', "")));
        out.push(("address".into(), field("address")));
        assert!(
            out.iter().all(|(_, n)| n.len() >= 4),
            "the demo's elders have a name, phone number, birth date and address: {e}"
        );
        for said in e["says"].as_array().into_iter().flatten() {
            for n in reply_needles(said.as_str().unwrap_or_default()) {
                out.push(("words of a reply".into(), n));
            }
        }
    }
    out
}

#[test]
fn a_demo_logged_at_debug_level_holds_no_personal_data() {
    demo_holds_no_personal_data("webrtc");
}

/// Over SIP the elders' phone numbers are dialled, and the SIP messages
/// carry them: none may reach the log either.
#[test]
fn a_demo_over_sip_logged_at_debug_level_holds_no_personal_data() {
    demo_holds_no_personal_data("sip");
}

/// One demo at a time: each runs a whole engine with whisper.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn demo_holds_no_personal_data(via: &str) {
    use std::os::unix::fs::PermissionsExt;
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = std::env::temp_dir().join(format!(
        "voicecare-demo-privacy-{via}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _cleanup = Cleanup(tmp.clone());
    for d in ["ivr-flows", "audio-fixtures"] {
        std::os::unix::fs::symlink(repo().join(d), tmp.join(d)).unwrap();
    }
    let (log_path, out_path) = (tmp.join("demo.log"), tmp.join("demo.out"));
    let status = Command::new(env!("CARGO_BIN_EXE_voicecare"))
        .current_dir(&tmp)
        .env_remove("VOICECARE_DATA_DIR")
        .env_remove("DATABASE_URL")
        .env_remove("VOICECARE_LOG_FORMAT")
        .env("RUST_LOG", "debug")
        .args(["demo", "--elders", "4", "--spread-secs", "10", "--via", via])
        .args(["--timeout-secs", "400"])
        .args(["--report", "report"])
        .stdout(Stdio::from(File::create(&out_path).unwrap()))
        .stderr(Stdio::from(File::create(&log_path).unwrap()))
        .status()
        .expect("run voicecare demo");
    let log = plain(&String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()));
    let out = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned();
    let tail = |s: &str| s[s.len().saturating_sub(4000)..].to_string();
    assert!(
        status.success(),
        "demo failed: {status}\n{}\n{}",
        tail(&out),
        tail(&log)
    );

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.join("report/report.json")).expect("report/report.json"),
    )
    .unwrap();
    assert_eq!(report["transport"], via, "the report names the transport");
    assert!(
        report["per_elder"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["transport"] == via),
        "every elder was reached over {via}"
    );
    let cohort: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.join("report/cohort.json")).expect("report/cohort.json"),
    )
    .unwrap();
    // The check means something only if debug lines were written and the
    // cohort's replies went through the code that logs transcripts.
    assert!(log.contains(" DEBUG "), "no debug lines in the log");
    assert!(
        log.contains("utterance transcript"),
        "no reply reached the transcript's debug line"
    );
    let speakers = cohort["elders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["says"].as_array().is_some_and(|s| !s.is_empty()))
        .count();
    assert!(speakers >= 2, "{cohort}");

    let printed = format!("{log}\n{out}");
    let (raw, flat) = (printed.as_str(), format!(" {} ", words(&printed)));
    let mut found = Vec::new();
    for (what, needle) in needles(&cohort) {
        let hit = raw.contains(&needle) || {
            let w = words(&needle);
            !w.is_empty() && flat.contains(&format!(" {w} "))
        };
        if hit {
            let line = printed
                .lines()
                .find(|l| l.contains(&needle) || words(l).contains(&words(&needle)))
                .unwrap_or("");
            let line: String = line.chars().take(300).collect();
            found.push(format!("{what} {needle:?} in: {line}"));
        }
    }
    assert!(
        found.is_empty(),
        "personal data in the demo's output ({} lines of log):\n{}",
        log.lines().count(),
        found.join("\n")
    );
}

/// Removes the demo's directory and its cluster, whether the test passed or not.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let pointer = self.0.join(".voicecare/demo/postgres/cluster-location");
        if let Ok(home) = std::fs::read_to_string(pointer) {
            let _ = std::fs::remove_dir_all(home.trim());
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
