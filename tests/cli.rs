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

/// A directory only its owner can enter, like `mktemp -d` or a home
/// directory: as root, the embedded cluster's `postgres` user cannot reach
/// into it.
fn private_temp_dir(tag: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = temp_dir(tag);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `voicecare` run from `cwd` with nothing but defaults: no data directory
/// in the environment, so `.voicecare` relative to `cwd` is used.
fn voicecare_in(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voicecare"));
    c.current_dir(cwd)
        .args(args)
        .env_remove("VOICECARE_DATA_DIR")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info");
    c
}

/// Where the cluster of a data directory keeps its files.
fn cluster_home(data_dir: &Path) -> std::path::PathBuf {
    let dir = data_dir.join("postgres");
    match std::fs::read_to_string(dir.join("cluster-location")) {
        Ok(p) => p.trim().into(),
        Err(_) => dir,
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The README's way: a fresh working directory, every path relative and
/// default, in a private directory. `serve` starts its embedded database
/// under `.voicecare`, answers `/healthz`, and an admin command run beside
/// it uses the same live cluster without stopping it.
#[test]
fn serve_on_the_default_data_directory_answers_and_shares_its_database() {
    use std::io::BufRead;
    let cwd = private_temp_dir("serve-default");
    std::os::unix::fs::symlink(support_repo().join("ivr-flows"), cwd.join("ivr-flows")).unwrap();
    let mut serve = voicecare_in(&cwd, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start voicecare serve");
    let stdout = std::io::BufReader::new(serve.stdout.take().unwrap());
    let mut addr = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("voicecare listening on http://") {
            addr = Some(rest.trim().to_string());
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        panic!(
            "serve never listened:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let health = http_get(&addr, "/healthz").unwrap_or_default();
    assert!(
        health.starts_with("HTTP/1.1 200") || health.starts_with("HTTP/1.0 200"),
        "{health}"
    );
    assert!(cwd.join(".voicecare/postgres").is_dir());
    assert!(
        cluster_home(&cwd.join(".voicecare"))
            .join("pgdata/PG_VERSION")
            .exists()
    );

    // An admin command on the same (default) data directory while serve runs.
    let list = voicecare_in(&cwd, &["queue", "list"]).output().unwrap();
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        text(&list).contains("already running"),
        "the second command says it uses the running cluster: {}",
        text(&list)
    );
    let health = http_get(&addr, "/healthz").unwrap_or_default();
    assert!(
        health.contains(" 200 "),
        "serve's database survives the admin command: {health}"
    );

    // A clean stop shuts the cluster down with it.
    unsafe_kill(serve.id(), 15);
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    let pgdata = cluster_home(&cwd.join(".voicecare")).join("pgdata");
    assert!(
        !pgdata.join("postmaster.pid").exists(),
        "the cluster stopped with serve"
    );

    // A run killed with its watchdog leaves a postmaster.pid naming a dead
    // process: the next start says so and carries on.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(
        pgdata.join("postmaster.pid"),
        format!("{dead}\n{}\n0\n5432\n\n", pgdata.display()),
    )
    .unwrap();
    let again = voicecare_in(&cwd, &["queue", "list"]).output().unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("not shut down cleanly"),
        "{}",
        text(&again)
    );
    let _ = std::fs::remove_dir_all(cluster_home(&cwd.join(".voicecare")));
    let _ = std::fs::remove_dir_all(&cwd);
}

fn support_repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn unsafe_kill(pid: u32, signal: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Data directories as users give them: relative with a space, through a
/// symlink, a file instead of a directory; a cluster whose server cannot
/// start is reported at once with its log.
#[test]
fn data_directories_as_users_give_them() {
    let cwd = private_temp_dir("data-dirs");
    let run = |args: &[&str]| voicecare_in(&cwd, args).output().unwrap();

    let out = run(&["--data-dir", "my data/vc", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        cluster_home(&cwd.join("my data/vc"))
            .join("pgdata/PG_VERSION")
            .exists()
    );

    // The same cluster through a symlink is reused, not re-initialised.
    let id = |o: &Output| {
        text(o)
            .split("(id ")
            .nth(1)
            .map(|r| r.split(')').next().unwrap().to_string())
    };
    let first = run(&["--data-dir", "my data/vc", "units", "add", "X/Y"]);
    assert!(first.status.success(), "{}", text(&first));
    std::os::unix::fs::symlink(cwd.join("my data"), cwd.join("link")).unwrap();
    let other = run(&["--data-dir", "link/vc", "units", "add", "P/Q"]);
    assert!(other.status.success(), "{}", text(&other));
    let again = run(&["--data-dir", "link/vc", "units", "add", "X/Y"]);
    assert!(id(&first).is_some());
    assert_eq!(id(&first), id(&again), "{}\n{}", text(&first), text(&again));

    // A file where a directory should be.
    std::fs::write(cwd.join("plain-file"), "x").unwrap();
    let out = run(&["--data-dir", "plain-file", "migrate"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is a file, not a directory") && text(&out).contains("plain-file"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("plain-file")).unwrap(),
        "x"
    );

    // A server that cannot start is reported with the end of its log, not
    // after a silent wait; the cluster's files stay.
    let home = cluster_home(&cwd.join("my data/vc"));
    let conf = home.join("pgdata/postgresql.conf");
    let original = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{original}\nno_such_setting_here = 1\n")).unwrap();
    let out = run(&["--data-dir", "my data/vc", "migrate"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("exited while starting"), "{t}");
    assert!(
        t.contains("no_such_setting_here"),
        "the log's last lines are in the error: {t}"
    );
    assert!(t.contains("postgres.log"), "the log's path is named: {t}");
    assert!(
        home.join("pgdata/PG_VERSION").exists(),
        "nothing is deleted"
    );
    std::fs::write(&conf, original).unwrap();
    let out = run(&["--data-dir", "my data/vc", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));

    let _ = std::fs::remove_dir_all(cluster_home(&cwd.join("my data/vc")));
    let _ = std::fs::remove_dir_all(&cwd);
}

/// A PCM WAV file whose data chunk declares `declared` bytes whatever it holds.
fn lying_wav(rate: u32, bits: u16, declared: u32, data: &[u8]) -> Vec<u8> {
    let align = bits / 8;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * align as u32).to_le_bytes());
    b.extend_from_slice(&align.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&declared.to_le_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn transcribe_reports_lying_audio_headers_and_exits_non_zero() {
    let dir = temp_dir("transcribe");
    let big = dir.join("prompt.wav");
    std::fs::write(&big, lying_wav(8000, 16, 0xFFFF_FF00, &[0u8; 2048])).unwrap();
    // Two million samples at 1 Hz would be 32 billion at 16 kHz.
    let slow = dir.join("slow.wav");
    let data = vec![128u8; 2_000_000];
    std::fs::write(&slow, lying_wav(1, 8, data.len() as u32, &data)).unwrap();
    let out = voicecare(
        &dir,
        None,
        &[
            "transcribe",
            "--model",
            "tiny.en",
            "--lang",
            "en",
            big.to_str().unwrap(),
            slow.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error exit, not a crash: {t}"
    );
    assert!(
        t.contains(
            "prompt.wav: WAV header declares 4294967040 bytes of samples but the file has 2048"
        ),
        "{t}"
    );
    assert!(
        t.contains("slow.wav") && t.contains("sample rate 1 Hz"),
        "{t}"
    );
    assert!(t.contains("2 of 2 files could not be transcribed"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/prepare.sh)")
}

/// `serve --tls-cert --tls-key` speaks HTTPS itself: a real client (curl)
/// trusting the certificate gets the API, the session cookie is `Secure`,
/// plain HTTP on the port gets no answer, a client that never completes its
/// handshake holds nobody up, and a missing certificate names the flag.
#[test]
fn serve_terminates_tls_and_marks_its_session_cookie_secure() {
    use std::io::BufRead;
    let cwd = private_temp_dir("serve-tls");
    std::os::unix::fs::symlink(support_repo().join("ivr-flows"), cwd.join("ivr-flows")).unwrap();
    let made = Command::new("openssl")
        .current_dir(&cwd)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", text(&made));

    let missing = voicecare_in(&cwd, &["serve", "--no-calls", "--listen", "127.0.0.1:0"])
        .args(["--tls-cert", "nowhere.pem", "--tls-key", "key.pem"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("--tls-cert nowhere.pem"),
        "{}",
        text(&missing)
    );

    let add = voicecare_in(&cwd, &["units", "add", "City"])
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", text(&add));
    let add = voicecare_in(
        &cwd,
        &["operator", "add", "--username", "ann", "--unit", "City"],
    )
    .env("VOICECARE_OPERATOR_PASSWORD", "correct horse battery")
    .output()
    .unwrap();
    assert!(add.status.success(), "{}", text(&add));

    let mut serve = voicecare_in(&cwd, &["serve", "--no-calls", "--listen", "127.0.0.1:0"])
        .args(["--tls-cert", "cert.pem", "--tls-key", "key.pem"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start voicecare serve");
    let stdout = std::io::BufReader::new(serve.stdout.take().unwrap());
    let addr = stdout.lines().map_while(Result::ok).find_map(|l| {
        l.strip_prefix("voicecare listening on https://")
            .map(|a| a.trim().to_string())
    });
    let Some(addr) = addr else {
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        panic!(
            "serve never listened:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cert = cwd.join("cert.pem");
    let cacert = cert.to_str().unwrap();

    // A client that opens a connection and never speaks holds nobody up.
    let _silent = std::net::TcpStream::connect(&addr).unwrap();
    let health = curl(&["--cacert", cacert, &format!("https://{addr}/healthz")]);
    assert!(health.status.success(), "{}", text(&health));
    assert!(
        text(&health).contains("ok") || !health.stdout.is_empty(),
        "{}",
        text(&health)
    );

    let login = curl(&[
        "--cacert",
        cacert,
        "-i",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"username":"ann","password":"correct horse battery"}"#,
        &format!("https://{addr}/api/v1/login"),
    ]);
    let shown = String::from_utf8_lossy(&login.stdout).to_string();
    assert!(shown.starts_with("HTTP/1.1 200"), "{shown}");
    let cookie = shown
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {shown}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");

    // Without trusting the certificate, curl refuses; plain HTTP gets no answer.
    let untrusted = curl(&[&format!("https://{addr}/healthz")]);
    assert!(!untrusted.status.success());
    let plain = http_get(&addr, "/healthz").unwrap_or_default();
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");

    unsafe_kill(serve.id(), 15);
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
}
