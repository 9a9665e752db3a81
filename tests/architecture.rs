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

/// The runner's files (`engine/server/src/runner/*.rs`, the module root
/// aside) and the `super::` modules each one imports.
fn runner_imports() -> Vec<(String, Vec<String>)> {
    let dir = root().join("engine/server/src/runner");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).expect("runner dir") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "mod" || path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable");
        let mut deps = Vec::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let Some(rest) = code.split("super::").nth(1) else {
                continue;
            };
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group.split('}').next().unwrap_or("").split(',').collect()
            } else {
                vec![rest]
            };
            for n in names {
                let m: String = n
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !m.is_empty()
                    && m.chars().next().is_some_and(|c| c.is_lowercase())
                    && m != "self"
                    && m != name
                {
                    deps.push(m);
                }
            }
        }
        deps.sort();
        deps.dedup();
        out.push((name, deps));
    }
    out.sort();
    out
}

#[test]
fn runner_files_import_each_other_without_a_cycle() {
    let graph = runner_imports();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        n: &str,
        graph: &[(String, Vec<String>)],
        stack: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.iter().any(|d| d == n) {
            return None;
        }
        stack.push(n.to_string());
        let deps = graph
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        for d in deps {
            if let Some(c) = visit(&d, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.push(n.to_string());
        None
    }
    let (mut stack, mut done) = (Vec::new(), Vec::new());
    for (n, _) in &graph {
        if let Some(cycle) = visit(n, &graph, &mut stack, &mut done) {
            panic!(
                "runner files import each other in a circle: {}",
                cycle.join(" → ")
            );
        }
    }
    assert!(
        graph
            .iter()
            .any(|(n, d)| n == "call" && d.iter().any(|x| x == "driver")),
        "the import scan found nothing: {graph:?}"
    );
}

#[test]
fn runner_functions_stay_short() {
    let mut files = Vec::new();
    rust_files(&root().join("engine/server/src/runner"), &mut files);
    let mut long = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).expect("readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(super) fn ",
                "pub(super) async fn ",
                "pub(crate) fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn || t.ends_with(';') {
                continue;
            }
            let indent = line.len() - t.len();
            let close = format!("{}}}", " ".repeat(indent));
            let len = lines[i..]
                .iter()
                .position(|l| *l == close)
                .map_or(0, |n| n + 1);
            if len > 80 {
                long.push(format!(
                    "{}:{}: {len} lines",
                    f.strip_prefix(root()).unwrap_or(&f).display(),
                    i + 1
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "runner functions longer than 80 lines (split them; decisions belong in voicecare-core):\n{}",
        long.join("\n")
    );
}
