//! The boundaries docs/ARCHITECTURE.md promises, checked on the source tree
//! so a change that crosses one fails here with the file and line.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: text` for every line of the crate's sources containing one of `needles`.
fn lines_with(krate: &str, needles: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root().join("engine").join(krate).join("src"), &mut files);
    files.sort();
    let mut hits = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|n| code.contains(n)) {
                let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
                hits.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn only_the_store_speaks_sql() {
    // LISTEN is SQL too: its connection, reconnects and payloads belong to the
    // store (`voicecare_store::notify`), which hands out typed events.
    let needles = [
        "sqlx::query",
        "sqlx::raw_sql",
        "sqlx::migrate!",
        "PgListener",
    ];
    for krate in ["core", "media", "speech", "telephony", "server"] {
        let hits = lines_with(krate, &needles);
        assert!(
            hits.is_empty(),
            "SQL or LISTEN outside engine/store (move it into the store):\n{}",
            hits.join("\n")
        );
    }
}

#[test]
fn the_core_does_no_io() {
    let manifest =
        fs::read_to_string(root().join("engine/core/Cargo.toml")).expect("core manifest");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap_or("");
    for banned in [
        "tokio", "sqlx", "webrtc", "whisper", "axum", "reqwest", "cpal",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "engine/core depends on {banned}; the core takes events and returns actions"
        );
    }
    let hits = lines_with(
        "core",
        &[
            "std::fs::",
            "std::net::",
            "tokio::",
            "std::process::",
            "std::thread::spawn",
        ],
    );
    assert!(hits.is_empty(), "I/O in engine/core:\n{}", hits.join("\n"));
}
