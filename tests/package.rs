//! The Debian package, built by scripts/package-deb.sh from the binary this
//! test suite built. As root it is installed with `dpkg -i`, the installed
//! unit's `ExecStart` runs as the unit's user (systemd need not be running)
//! until `/healthz` answers, and `dpkg -r` must leave the data behind. As
//! another user the package is unpacked with `dpkg-deb -x` and the same
//! command line runs from there on a temporary data directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = "lib/systemd/system/voicecare.service";
const CONFIG: &str = "etc/voicecare/voicecare.toml";
const DATA: &str = "/var/lib/voicecare";
/// Left in the data directory by this test: a later run may reuse the
/// directory (and delete it) only when it finds this.
const MARKER: &str = ".voicecare-package-test";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    o
}

fn build_package(out: &Path) -> PathBuf {
    let started = Instant::now();
    let o = run(Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/package-deb.sh"),
    )
    .arg("debug")
    .env("VOICECARE_BIN", env!("CARGO_BIN_EXE_voicecare"))
    .env("VOICECARE_DEB_DIR", out));
    let deb = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    eprintln!(
        "package: built {} ({} MB) in {:.1?}",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len() / 1_000_000,
        started.elapsed()
    );
    deb
}

/// What the test takes from the unit file.
#[derive(Debug)]
struct Unit {
    exec_start: Vec<String>,
    user: String,
    environment: Vec<(String, String)>,
    working_directory: Option<String>,
}

fn parse_unit(text: &str) -> Unit {
    let values = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().to_string())
            .collect()
    };
    let one = |key: &str| {
        let v = values(key);
        assert!(v.len() <= 1, "{key} set twice in the unit");
        v.into_iter().next()
    };
    let exec_start = one("ExecStart").expect("the unit has an ExecStart");
    // Run as systemd would only if systemd adds nothing of its own.
    assert!(
        !exec_start.contains(['%', '$', '"', '\''])
            && !exec_start.starts_with(['-', '@', '+', '!', ':']),
        "ExecStart uses systemd syntax this test does not expand: {exec_start}"
    );
    let environment = values("Environment")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("Environment=NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    for line in [
        "StateDirectory=voicecare",
        "ReadWritePaths=/var/lib/voicecare",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "the unit sets {line}"
        );
    }
    Unit {
        exec_start: exec_start.split_whitespace().map(String::from).collect(),
        user: one("User").expect("the unit names its user"),
        environment,
        working_directory: one("WorkingDirectory"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthz(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The service process, stopped with SIGTERM when dropped (a failing test
/// leaves nothing running).
struct Service {
    child: Child,
    /// The voicecare process: the child itself, or runuser's child.
    pid: Option<u32>,
    log: PathBuf,
}

impl Service {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self, port: u16) {
        let started = Instant::now();
        loop {
            if let Some(r) = healthz(port)
                && r.starts_with("HTTP/1.1 200")
            {
                eprintln!(
                    "package: /healthz answered 200 after {:.1?}",
                    started.elapsed()
                );
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the service exited ({status}) before /healthz answered:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "no 200 from /healthz within 180 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM to voicecare, as systemd stops the unit; it must exit 0.
    fn stop(&mut self) {
        let pid = self.pid.unwrap_or_else(|| voicecare_pid(self.child.id()));
        run(Command::new("kill").args(["-TERM", &pid.to_string()]));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "still running 60 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.log()
        );
        eprintln!("package: stopped by SIGTERM in {:.1?}", started.elapsed());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.pid.unwrap_or_else(|| voicecare_pid(self.child.id()));
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .output();
            let _ = self.child.wait();
        }
    }
}

/// runuser forks the command as a child; the signal goes to that child,
/// since runuser would SIGKILL it two seconds after passing SIGTERM on.
fn voicecare_pid(runuser: u32) -> u32 {
    for _ in 0..50 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let Some((_, after)) = stat.rsplit_once(") ") else {
                continue;
            };
            if after.split(' ').nth(1) == Some(&runuser.to_string()) {
                return entry.file_name().to_string_lossy().parse().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("runuser ({runuser}) started no child");
}

fn start(mut cmd: Command, log: PathBuf, direct: bool) -> Service {
    let file = std::fs::File::create(&log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = direct.then_some(child.id());
    Service { child, pid, log }
}

/// The environment systemd would give the unit: PATH, the unit's
/// Environment= lines, plus this test's listen address and log level.
fn unit_env(cmd: &mut Command, unit: &Unit, port: u16, map: impl Fn(&str) -> String) {
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("RUST_LOG", "info");
    for (k, v) in &unit.environment {
        cmd.env(k, map(v));
    }
    // The environment wins over the configuration file.
    cmd.env("VOICECARE_LISTEN", format!("127.0.0.1:{port}"));
}

fn config_value(config: &Path, key: &str) -> String {
    let table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    table
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{} sets {key}", config.display()))
        .to_string()
}

fn postgres_running_in(dir: &str) -> bool {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains("postgres") && l.contains(dir) && !l.contains("ps -eo"))
}

/// `flow check` passed every flow of the workspace's ivr-flows/.
fn assert_all_flows(check: &Output) {
    let flows = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ivr-flows"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    let ok = text(check).lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(
        ok,
        flows,
        "every flow is installed and valid:\n{}",
        text(check)
    );
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "voicecare"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[test]
fn the_package_installs_a_service_that_serves_and_keeps_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_package(tmp.path());
    let is_root = String::from_utf8_lossy(&run(Command::new("id").arg("-u")).stdout).trim() == "0";
    // Never touch a real installation or data this test did not create.
    let own_data = !Path::new(DATA).exists() || Path::new(DATA).join(MARKER).exists();
    if is_root && !package_installed() && own_data {
        installed(&deb, tmp.path());
    } else {
        eprintln!(
            "package: not root, or voicecare is installed here, or {DATA} holds other data: running the unpacked package"
        );
        unpacked(&deb, tmp.path());
    }
}

/// Removes the package (and its configuration) if a step fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("dpkg").args(["--purge", "voicecare"]).output();
        }
    }
}

fn installed(deb: &Path, tmp: &Path) {
    let started = Instant::now();
    let _guard = Installed;
    let o = run(Command::new("dpkg").arg("-i").arg(deb));
    eprintln!("package: dpkg -i in {:.1?}", started.elapsed());
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    std::fs::write(Path::new(DATA).join(MARKER), "").unwrap();

    let unit = parse_unit(&std::fs::read_to_string(Path::new("/").join(UNIT)).unwrap());
    let uid: u32 =
        String::from_utf8_lossy(&run(Command::new("id").args(["-u", &unit.user])).stdout)
            .trim()
            .parse()
            .unwrap();
    let data = std::fs::metadata(DATA).unwrap();
    assert_eq!(data.uid(), uid, "{DATA} belongs to {}", unit.user);
    assert_eq!(data.permissions().mode() & 0o777, 0o750);
    let config = Path::new("/").join(CONFIG);
    assert_eq!(config_value(&config, "data_dir"), DATA);
    let conf = std::fs::metadata(&config).unwrap();
    assert_eq!(
        conf.permissions().mode() & 0o777,
        0o640,
        "only root and the service's group read it"
    );

    // The flows the configuration names are there and valid.
    let flows = config_value(&config, "flows_dir");
    let check = run(Command::new("runuser")
        .args(["-u", &unit.user, "--"])
        .arg(&unit.exec_start[0])
        .args(["flow", "check", &flows]));
    assert_all_flows(&check);

    let port = free_port();
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &unit.user, "--"]).args(&unit.exec_start);
    unit_env(&mut cmd, &unit, port, |v| v.to_string());
    if let Some(dir) = &unit.working_directory {
        cmd.current_dir(dir);
    }
    let mut service = start(cmd, tmp.join("service.log"), false);
    service.wait_healthy(port);
    let log = service.log();
    assert!(
        log.contains(&format!("{DATA}/postgres")),
        "the configured data directory is used:\n{log}"
    );
    service.stop();
    assert!(
        !postgres_running_in(DATA),
        "the embedded cluster stopped with the service"
    );
    drop(service);

    let started = Instant::now();
    run(Command::new("dpkg").args(["-r", "voicecare"]));
    eprintln!("package: dpkg -r in {:.1?}", started.elapsed());
    assert!(!Path::new("/usr/bin/voicecare").exists());
    assert!(
        Path::new(DATA).join("postgres/pgdata/PG_VERSION").exists(),
        "removing the package keeps the database"
    );
    assert!(
        config.exists(),
        "remove (not purge) keeps the configuration"
    );
    // Purge drops the configuration, still not the data.
    run(Command::new("dpkg").args(["--purge", "voicecare"]));
    assert!(!config.exists());
    assert!(Path::new(DATA).join("postgres/pgdata/PG_VERSION").exists());
    std::fs::remove_dir_all(DATA).unwrap();
}

fn unpacked(deb: &Path, tmp: &Path) {
    let root = tmp.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    let data = tmp.join("data");
    std::fs::create_dir(&data).unwrap();
    // Packaged paths point into the unpacked tree, the data directory into
    // the temporary one.
    let map = |v: &str| -> String {
        if let Some(rest) = v.strip_prefix(DATA) {
            format!("{}{rest}", data.display())
        } else if v.starts_with('/') && root.join(&v[1..]).exists() {
            root.join(&v[1..]).display().to_string()
        } else {
            v.to_string()
        }
    };
    let unit = parse_unit(&std::fs::read_to_string(root.join(UNIT)).unwrap());
    let exec: Vec<String> = unit.exec_start.iter().map(|a| map(a)).collect();
    assert!(
        Path::new(&exec[0]).starts_with(&root),
        "ExecStart runs a file of the package: {}",
        unit.exec_start[0]
    );
    let config = root.join(CONFIG);
    assert!(
        exec.contains(&config.display().to_string()),
        "ExecStart reads {CONFIG}"
    );
    let flows = map(&config_value(&config, "flows_dir"));
    let check = run(Command::new(&exec[0]).args(["flow", "check", &flows]));
    assert_all_flows(&check);

    let port = free_port();
    let mut cmd = Command::new(&exec[0]);
    cmd.args(&exec[1..]);
    unit_env(&mut cmd, &unit, port, map);
    cmd.env("VOICECARE_DATA_DIR", &data)
        .env("VOICECARE_FLOWS_DIR", &flows)
        .current_dir(&data);
    let mut service = start(cmd, tmp.join("service.log"), true);
    service.wait_healthy(port);
    service.stop();
    assert!(data.join("postgres/pgdata/PG_VERSION").exists());
    assert!(!postgres_running_in(&data.display().to_string()));
}
