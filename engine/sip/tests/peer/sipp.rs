//! SIPp standing in for a trunk in the gateway's tests (`trunk.rs`,
//! `failover.rs`, `limits.rs`): started on free loopback ports with the
//! scenarios in `tests/scenarios/`, every message it sends and receives
//! logged, and its exit awaited with a limit so that a stuck peer fails the
//! test instead of hanging it. Each test file includes this with `#[path]`
//! beside `tests/support/ports.rs`, and adds what only it needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::ports::free_ports;

/// Most a SIPp run or a call may take before the test fails instead of hanging.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a test file looks for SIPp's ports, each `(from, to)`: files that
/// run at the same time keep to their own ranges.
pub struct Ports {
    pub signalling: (u16, u16),
    /// SIPp takes the media port and the two after it.
    pub media: (u16, u16),
}

pub struct Sipp {
    child: Child,
    pub addr: SocketAddr,
    logs: tempfile::TempDir,
}

pub fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

impl Sipp {
    /// Run `scenario` with `args` (e.g. `-m 1` for one call, `-aa` to answer
    /// pings) and wait until it holds its signalling port.
    pub async fn spawn(scenario: &str, ports: Ports, args: &[&str]) -> Self {
        let found = std::process::Command::new("sipp")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "sipp is not installed: run scripts/prepare.sh (it installs the sip-tester package)"
        );
        let logs = tempfile::tempdir().unwrap();
        let port = free_ports(ports.signalling.0, ports.signalling.1, 1);
        let media = free_ports(ports.media.0, ports.media.1, 4);
        let child = Command::new("sipp")
            .current_dir(scenarios())
            .args(["-sf", scenario, "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(["-nostdin", "-timeout", "50s", "-timeout_error"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(logs.path().join("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(logs.path().join("errors.log"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start sipp");
        let sipp = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(sipp.addr).is_ok()
            && std::net::TcpListener::bind(sipp.addr).is_ok()
        {
            assert!(Instant::now() < deadline, "sipp did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sipp
    }

    /// The SIP messages SIPp sent and received.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("messages.log")).unwrap_or_default()
    }

    /// SIPp's exit code once its calls are over (0: every call ran its
    /// scenario to the end).
    pub async fn finish(&mut self) -> i32 {
        match tokio::time::timeout(PEER_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => panic!("sipp still running; messages:\n{}", self.messages()),
        }
    }
}
