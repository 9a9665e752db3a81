//! A floor of operators' consoles and a check-in call on one node, through
//! `voicecare bench consoles` run as a user would: every console logs in,
//! hears of every escalation on its event stream, and the floor resolves
//! each one exactly once while the call completes. Latency figures are the
//! benchmark's business (docs/benchmarks.md); this checks that nothing is
//! lost or refused along the way.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use voicecare_store::testing::TestDb;

const CONSOLES: u64 = 30;

#[test]
fn a_floor_of_consoles_loses_nothing_while_a_call_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voicecare"))
        .args(["bench", "consoles", "--json", "--calls", "1"])
        .args(["--consoles", &CONSOLES.to_string()])
        .args(["--secs", "10", "--peer-secs", "5"])
        .args(["--escalations-per-min", "120"])
        .arg("--flows-dir")
        .arg(root.join("ivr-flows"))
        .arg("--fixtures")
        .arg(root.join("audio-fixtures"))
        .env("DATABASE_URL", &db.url)
        .env("VOICECARE_DATA_DIR", data.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run voicecare bench consoles");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench consoles failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = &stdout[stdout.find('{').expect("a JSON report")..];
    let r: Value = serde_json::from_str(json).expect("the report is JSON");

    assert_eq!(r["passed"], true, "{r:#}");
    let raised = r["escalations_raised"].as_u64().unwrap();
    assert!(raised >= 2, "too few escalations to judge: {r:#}");
    assert_eq!(r["escalations_resolved_once"].as_u64(), Some(raised));
    assert_eq!(r["escalations_resolved_more_than_once"], 0);
    assert_eq!(r["escalations_left_open"], 0);
    assert_eq!(r["server_errors"], 0, "{:#}", r["errors"]);
    // Every console logged in, and each heard of every escalation raised
    // while it was open.
    let login = r["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "login")
        .unwrap();
    assert_eq!(login["load_n"].as_u64(), Some(CONSOLES));
    assert_eq!(r["stream_events_missed"], 0, "{r:#}");
    assert!(r["events"]["load_n"].as_u64().unwrap() >= CONSOLES);
    // The check-in call went through the same node and completed.
    let placed = r["calls_placed"].as_u64().unwrap();
    assert!(placed >= 1, "no call was placed: {r:#}");
    assert_eq!(r["calls_completed"].as_u64(), Some(placed), "{r:#}");
}
