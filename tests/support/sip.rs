//! The SIP end-to-end tests' shared pieces: free loopback ports, SIPp as the
//! elder's phone behind the trunk, and an elder enrolled with a number only.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

pub use super::ports::free_ports;
use super::{community, repo};

/// The elder's number, enrolled; it must never show in the engine's log.
pub const NUMBER: &str = "+8613912345678";

/// `sipp`, or a failure that says how to install it.
pub fn sipp_binary() -> &'static str {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "sipp is not installed: run scripts/prepare.sh (it installs the sip-tester package)"
    );
    "sipp"
}

/// A fresh directory under the system's temporary directory.
pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "voicecare-sip-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An elder with a phone number ([`NUMBER`]) and no device, speaking Mandarin.
pub async fn enrol_phone_only(pool: &PgPool) -> i64 {
    enrol_number(pool, NUMBER).await
}

/// An elder with the phone number `number` and no device, speaking Mandarin.
pub async fn enrol_number(pool: &PgPool, number: &str) -> i64 {
    let c = community(pool).await;
    sqlx::query_scalar(
        "INSERT INTO elders (full_name, phone, language, time_zone, community_id)
         VALUES ('王秀英', $1, 'zh', 'Asia/Shanghai', $2) RETURNING id",
    )
    .bind(number)
    .bind(c)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// SIPp as the elder's phone behind the trunk, serving one call.
pub struct Sipp {
    child: tokio::process::Child,
    pub port: u16,
    logs: tempfile::TempDir,
}

impl Sipp {
    /// Reserve the ports; the scenario starts with [`Sipp::run`].
    pub fn ports() -> (u16, u16) {
        // SIPp takes the media port and the two after it.
        (free_ports(40_000, 43_000, 1), free_ports(43_000, 45_000, 4))
    }

    pub async fn run(scenario: &str, ports: (u16, u16)) -> Sipp {
        Sipp::run_with(scenario, ports, &[]).await
    }

    /// With more SIPp arguments (`-rtp_echo`, `-key`s, the address to call).
    pub async fn run_with(scenario: &str, ports: (u16, u16), extra: &[&str]) -> Sipp {
        Sipp::run_calls(scenario, ports, extra, 1).await
    }

    /// Serving `calls` calls (0: any number, until it is dropped).
    pub async fn run_calls(
        scenario: &str,
        (port, media): (u16, u16),
        extra: &[&str],
        calls: u32,
    ) -> Sipp {
        let calls = calls.to_string();
        let limit: &[&str] = if calls == "0" { &[] } else { &["-m", &calls] };
        let logs = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new(sipp_binary())
            .current_dir(repo().join("engine/sip/tests/scenarios"))
            .args(["-sf", scenario, "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(extra)
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(limit)
            .args(["-nostdin", "-timeout", "180s", "-timeout_error"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(logs.path().join("messages.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start sipp");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "sipp did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Sipp { child, port, logs }
    }

    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("messages.log")).unwrap_or_default()
    }

    /// SIPp's exit code once its call is over (0: the scenario ran to the end).
    pub async fn finish(&mut self) -> i32 {
        match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => panic!("sipp still running; messages:\n{}", self.messages()),
        }
    }
}
