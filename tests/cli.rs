//! The `voicecare` binary's administration commands, run as a user would:
//! the embedded PostgreSQL lifecycle, migrations, CSV import with bad rows.

use std::path::Path;
use std::process::{Command, Output};

use voicecare_store::testing::TestDb;

fn voicecare(data_dir: &Path, database_url: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voicecare"));
    c.args(args)
        .env("VOICECARE_DATA_DIR", data_dir)
        .env("RUST_LOG", "info");
    match database_url {
        Some(u) => c.env("DATABASE_URL", u),
        None => c.env_remove("DATABASE_URL"),
    };
    c.output().expect("run voicecare")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn postgres_running_in(dir: &Path) -> bool {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.contains("postgres") && l.contains(&*dir.to_string_lossy()) && !l.contains("ps -eo")
    })
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "voicecare-cli-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

#[test]
fn embedded_cluster_starts_migrates_and_stops_cleanly() {
    let dir = temp_dir("embedded");
    let first = voicecare(&dir, None, &["migrate"]);
    assert!(first.status.success(), "{}", text(&first));
    let log = text(&first);
    assert!(
        log.contains("embedded PostgreSQL"),
        "the log says which database is used: {log}"
    );
    assert!(log.contains("migrations applied"), "{log}");
    assert!(dir.join("postgres/pgdata/PG_VERSION").exists());
    assert!(
        !postgres_running_in(&dir),
        "the cluster is stopped when the command exits"
    );
    // A second start reuses the cluster and its data.
    let units = voicecare(
        &dir,
        None,
        &["units", "add", "Riverside/North/Elm Street/Elm Court"],
    );
    assert!(units.status.success(), "{}", text(&units));
    let again = voicecare(&dir, None, &["queue", "list"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("0 item(s)"));
    assert!(!postgres_running_in(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_from_database_url_is_used_when_given() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = temp_dir("url");
    let out = voicecare(&dir, Some(&db.url), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("using PostgreSQL from DATABASE_URL"),
        "{}",
        text(&out)
    );
    assert!(
        !dir.join("postgres").exists(),
        "no embedded cluster when DATABASE_URL is set"
    );
    drop(db);
    let bad = voicecare(
        &dir,
        Some("postgres://nobody@127.0.0.1:1/none"),
        &["migrate"],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).to_lowercase().contains("error"),
        "{}",
        text(&bad)
    );
}

const HEADER: &str = "external_ref,full_name,birth_date,phone,device_id,language,time_zone,community,window_start,window_end,days,contact1_name,contact1_phone\n";

#[test]
fn csv_import_reports_every_bad_value_and_imports_nothing_unless_asked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = temp_dir("csv");
    let units = voicecare(
        &dir,
        Some(&db.url),
        &["units", "add", "Riverside/North/Elm Street/Elm Court"],
    );
    assert!(units.status.success(), "{}", text(&units));
    let csv = dir.join("elders.csv");
    let community = "Riverside/North/Elm Street/Elm Court";
    std::fs::write(
        &csv,
        format!(
            "{HEADER}\
             A1,Wang Xiulan,1938-04-12,+8613800000001,,zh,Asia/Shanghai,{community},08:30,10:30,daily,Wang Lei,+8613900000001\n\
             A2,Li Ming,1940-13-01,+8613800000002,,zh,Asia/Shanghi,{community},08:30,10:30,daily,,\n\
             A3,Ann Lee,1944-02-28,+8613800000001,,en,Europe/London,{community},10:00,12:00,weekdays,,\n\
             A4,Bo Chen,,12345,,fr,Asia/Shanghai,Nowhere/At/All/Here,25:00,10:00,someday,Bo Jr,\n\
             A5,Mei Zhou,1939-09-09,,tablet-5,zh,Asia/Shanghai,{community},09:00,10:00,\"mon,wed\",,\n"
        ),
    )
    .unwrap();
    let out = voicecare(
        &dir,
        Some(&db.url),
        &["elders", "import", csv.to_str().unwrap()],
    );
    let report = text(&out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    let file = csv.display().to_string();
    for expected in [
        format!("{file}:3: column birth_date"),
        format!("{file}:3: column time_zone: unknown time zone \"Asia/Shanghi\""),
        format!("{file}:4: column phone: duplicates line 2"),
        format!("{file}:5: column phone"),
        format!("{file}:5: column language"),
        format!("{file}:5: column window_start"),
        format!("{file}:5: column days"),
        format!("{file}:5: column contact1_phone"),
        "nothing imported".to_string(),
    ] {
        assert!(
            report.contains(&expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let count = |db: &TestDb| -> i64 {
        rt.block_on(sqlx::query_scalar("SELECT count(*) FROM elders").fetch_one(&db.pool))
            .unwrap()
    };
    assert_eq!(
        count(&db),
        0,
        "a file with bad rows imports nothing by default"
    );

    let out = voicecare(
        &dir,
        Some(&db.url),
        &[
            "elders",
            "import",
            "--skip-invalid",
            "--json",
            csv.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(v["imported"], 2, "{v}");
    assert_eq!(v["rows"], 5);
    assert_eq!(count(&db), 2);
    // The same file again: the good rows are now duplicates of enrolled elders, reported per row.
    let out = voicecare(
        &dir,
        Some(&db.url),
        &[
            "elders",
            "import",
            "--skip-invalid",
            "--json",
            csv.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(v["imported"], 0, "{v}");
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["line"] == 2
                && e["column"] == "external_ref"
                && e["message"] == "already enrolled"),
        "{v}"
    );
    assert_eq!(count(&db), 2);

    // A malformed file (unknown column, ragged rows) is refused with its position.
    std::fs::write(&csv, "full_name,langauge\nX,zh\n").unwrap();
    let out = voicecare(
        &dir,
        Some(&db.url),
        &["elders", "import", csv.to_str().unwrap()],
    );
    assert!(
        text(&out).contains(":1: column langauge: unknown column"),
        "{}",
        text(&out)
    );
    std::fs::write(&csv, format!("{HEADER}A1,Only,Three\n")).unwrap();
    let out = voicecare(
        &dir,
        Some(&db.url),
        &["elders", "import", csv.to_str().unwrap()],
    );
    assert!(
        text(&out).contains(":2: column -: malformed CSV"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
