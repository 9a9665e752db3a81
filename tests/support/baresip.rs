//! baresip as a telephone in tests: a real SIP user agent, independent of
//! ours, that answers calls to its number at once (G.711), speaks a WAV file
//! as its microphone, and records what it hears. Shared by the gateway's
//! tests (`engine/sip/tests/trunk.rs`) and the engine's (`tests/sip_e2e.rs`);
//! its parent module also declares `ports` (`ports.rs` beside this file).
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::ports::free_ports;

pub struct Baresip {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// A phone with the number `number` (the Request-URI user it answers),
    /// speaking `microphone` (a 16-bit mono WAV) once the call is up.
    pub async fn start(microphone: &Path, number: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_ports(40_000, 43_000, 1);
        let rtp = free_ports(43_000, 45_000, 8);
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             dns_server 127.0.0.1:53\naudio_source aufile,{}\naudio_player aubridge,nil\n\
             audio_alert aubridge,nil\nausrc_format s16\nauplay_format s16\n\
             rtp_ports {rtp}-{}\nrtcp_mux no\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n\
             module_tmp account.so\nmodule_app menu.so\nsnd_path {}\n",
            microphone.display(),
            rtp + 7,
            dir.path().display()
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        // The phone answers calls to its number by itself, G.711 only.
        let account = format!(
            "<sip:{number}@127.0.0.1:{port}>;regint=0;answermode=auto;audio_codecs=PCMA,PCMU;ptime=20\n"
        );
        std::fs::write(dir.path().join("accounts"), account).unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-t", "120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("baresip is not installed: run scripts/prepare.sh (package baresip-core)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(addr).is_ok() {
            assert!(Instant::now() < deadline, "baresip did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, addr, dir }
    }

    /// The RMS of the loudest second of what the phone heard from us,
    /// once it has written its recording of the call.
    pub async fn loudest_second_heard(&mut self) -> f64 {
        let _ = self.child.kill().await;
        let dump = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .expect("baresip recorded the call");
        let samples: Vec<i16> = hound::WavReader::open(dump)
            .unwrap()
            .into_samples::<i16>()
            .map(Result::unwrap)
            .collect();
        samples
            .chunks(8000)
            .map(|s| (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt())
            .fold(0.0, f64::max)
    }
}
