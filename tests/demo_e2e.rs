//! `voicecare demo` end to end: the real binary enrols a small simulated
//! cohort, the real engine calls it (WebRTC over loopback, whisper, the
//! classifier, the queue), and the report it writes is checked: report.json
//! and report.html agree, every call finished, every emergency in the cohort
//! reached the queue and no fine reply did.
//!
//! Needs the whisper model (`scripts/install-model.sh`) and, unless
//! `DATABASE_URL` is set, the embedded PostgreSQL.

mod support;

use std::process::Command;

use support::repo;

/// The text of the element with this id in the report's HTML.
fn cell<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("report.html has no element {id}"))
        + id.len()
        + 6;
    let end = start + html[start..].find('<').unwrap();
    &html[start..end]
}

/// Run as the README runs it: from a fresh working directory laid out like
/// a clone (flows and fixtures beside it), with no `--data-dir` and relative
/// paths only. The directory is private (mode 0700, like `mktemp -d` or a
/// home directory), which the embedded cluster must cope with as root too.
#[test]
fn demo_of_four_elders_reports_what_it_found() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::env::temp_dir().join(format!("voicecare-demo-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in ["ivr-flows", "audio-fixtures"] {
        std::os::unix::fs::symlink(repo().join(d), tmp.join(d)).unwrap();
    }
    let report = tmp.join(".voicecare/demo-report");
    let out = Command::new(env!("CARGO_BIN_EXE_voicecare"))
        .current_dir(&tmp)
        .env_remove("VOICECARE_DATA_DIR")
        .env_remove("DATABASE_URL")
        .args(["demo", "--elders", "4", "--spread-secs", "10"])
        .args(["--timeout-secs", "400"])
        .args(["--report", ".voicecare/demo-report"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run voicecare demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Log in as"), "{stdout}");
    assert!(stdout.contains("calls by outcome"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "charts are inline SVG");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"),
        "the report loads nothing from the network"
    );

    // The cohort of four: an emergency, a fine reply, an urgent reply, a non-answerer.
    assert_eq!(json["elders"], 4);
    assert_eq!(cell(&html, "elders"), "4");
    let expected: Vec<&str> = json["per_elder"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["expected"].as_str().unwrap())
        .collect();
    assert_eq!(expected, ["emergency", "ok", "urgent", "no_answer"]);

    // Every check-in finished: three answered, one unreachable after its ladder.
    let outcomes = json["outcomes"].as_object().unwrap();
    let total: i64 = outcomes.values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(json["calls"].as_i64().unwrap(), total);
    assert_eq!(cell(&html, "calls"), total.to_string());
    assert_eq!(
        outcomes.get("unreachable").and_then(|v| v.as_i64()),
        Some(1),
        "{outcomes:?}"
    );
    for (k, v) in outcomes {
        assert_eq!(
            cell(&html, &format!("outcome-{k}")),
            v.as_i64().unwrap().to_string()
        );
        assert!(
            [
                "ok",
                "escalated",
                "unreachable",
                "answered_silent",
                "not_understood",
                "hung_up"
            ]
            .contains(&k.as_str()),
            "unfinished or interrupted call: {k}"
        );
    }

    // Rings by what they came to, for the cohort's one community: the three
    // who answered were reached, the fourth never picked up.
    let by_unit = json["attempts_by_outcome"].as_object().unwrap();
    assert_eq!(by_unit.len(), 1, "{by_unit:?}");
    let rings = by_unit.values().next().unwrap();
    assert!(rings["answered"].as_i64().unwrap() >= 3, "{rings}");
    assert!(rings["no_answer"].as_i64().unwrap() >= 1, "{rings}");
    for (k, v) in rings.as_object().unwrap() {
        assert_eq!(
            cell(&html, &format!("attempts-{k}")),
            v.as_i64().unwrap().to_string()
        );
    }

    // Every emergency reached the queue; the fine reply did not.
    assert_eq!(json["emergencies_expected"], 1);
    assert_eq!(json["emergencies_in_queue"], 1, "{}", json["per_elder"]);
    assert_eq!(cell(&html, "emergencies-in-queue"), "1");
    assert_eq!(json["fine_replies_flagged"], 0, "{}", json["per_elder"]);
    assert_eq!(cell(&html, "fine-replies-flagged"), "0");
    assert_eq!(cell(&html, "recall-emergency"), "100%");
    // The emergency was timed from the end of the phone's reply to the
    // console's event stream: no earlier than the reply began (the cry for
    // help is about 4 s long; negative when read before the elder finished),
    // and sooner than the whole call.
    let timed = json["emergency_to_console_ms"].as_array().unwrap();
    assert_eq!(timed.len(), 1, "{timed:?}");
    let ms = timed[0].as_f64().unwrap();
    assert!(ms > -4_500.0 && ms < 60_000.0, "{ms} ms");
    assert_eq!(cell(&html, "emergencies-timed"), "1");
    assert_eq!(
        cell(&html, "emergency-console-before-end"),
        if ms < 0.0 { "1" } else { "0" }
    );
    assert_eq!(cell(&html, "emergency-console-max"), format!("{ms:.0}"));
    for l in json["levels"].as_array().unwrap() {
        let level = l["level"].as_str().unwrap();
        assert_eq!(
            cell(&html, &format!("expected-{level}")),
            l["expected"].to_string()
        );
        assert_eq!(
            cell(&html, &format!("found-{level}")),
            l["found"].to_string()
        );
        assert_eq!(
            cell(&html, &format!("false-alarms-{level}")),
            l["false_alarms"].to_string()
        );
    }
    let queued_emergencies = json["queue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["level"] == "emergency")
        .unwrap()["escalations"]
        .as_i64()
        .unwrap();
    assert!(queued_emergencies >= 1);
    assert_eq!(
        cell(&html, "queue-emergency"),
        queued_emergencies.to_string()
    );
    // The whisper timings and resource samples made it into the report.
    assert!(!json["asr_decode_ms"].as_array().unwrap().is_empty());
    assert!(!json["resources"].as_array().unwrap().is_empty());
    assert!(
        tmp.join(".voicecare/demo/postgres").is_dir(),
        "the demo's database is under the default data directory"
    );
    if let Ok(home) = std::fs::read_to_string(tmp.join(".voicecare/demo/postgres/cluster-location"))
    {
        let _ = std::fs::remove_dir_all(home.trim());
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
