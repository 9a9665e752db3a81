//! Checking a flow costs time in proportion to its size: the same code runs
//! for `voicecare flow check`, at engine start and on every reload. The
//! scaling figure itself is measured by `voicecare bench flow`; this test only
//! guards against a return to quadratic time (minutes for 100,000 steps).

// Reading the clock is this test's job; the library never does.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write;
use std::time::{Duration, Instant};

use voicecare_core::flow::synthetic::chain;
use voicecare_core::flow::{StepKind, parse_flow};

/// A chain of `set` steps only: nothing waits, so the instant-loop search
/// follows all of it in one walk.
fn instant_chain(n: usize) -> String {
    let mut s = String::from("[flow]\nid = \"sets\"\nlanguages = [\"en\"]\nstart = \"s0\"\n\n");
    for i in 0..n - 1 {
        let _ = writeln!(
            s,
            "[[step]]\nid = \"s{i}\"\ntype = \"set\"\nvars = {{ v = \"{i}\" }}\nnext = \"s{}\"\n",
            i + 1
        );
    }
    let _ = writeln!(s, "[[step]]\nid = \"s{}\"\ntype = \"hangup\"", n - 1);
    s
}

fn check(name: &str, src: &str, steps: usize) -> Duration {
    let t = Instant::now();
    let flow = parse_flow(name, src).unwrap_or_else(|e| panic!("{name}: {e}"));
    let took = t.elapsed();
    assert_eq!(flow.steps.len(), steps, "{name}");
    assert!(matches!(
        flow.steps.last().map(|s| &s.kind),
        Some(StepKind::Hangup { .. })
    ));
    took
}

#[test]
fn chains_of_20000_and_40000_steps_parse_and_check() {
    for n in [20_000, 40_000] {
        // One extra step: the flow-wide help target.
        check("chain.toml", &chain(n), n + 1);
    }
}

#[test]
fn a_chain_of_100000_steps_checks_in_seconds_not_minutes() {
    let src = chain(100_000);
    let took = check("big.toml", &src, 100_001);
    // A guard, not a speed target: about 5 s in a debug build on an idle
    // 2-core machine, more beside other builds. Quadratic checking took
    // minutes in a release build and over an hour in a debug one.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn a_long_chain_of_steps_that_do_not_wait_does_not_exhaust_the_stack() {
    // Test threads have small stacks; a recursive walk would overflow here.
    check("sets.toml", &instant_chain(100_000), 100_000);
}

#[test]
fn errors_deep_in_a_long_flow_keep_their_line_numbers() {
    let mut src = chain(30_000);
    // Break the last step's target: the error points at that line.
    let at = src.rfind("next = \"s29999\"").unwrap();
    src.replace_range(at..at + "next = \"s29999\"".len(), "next = \"nowhere\"");
    let line = src[..at].matches('\n').count() + 1;
    let e = parse_flow("chain.toml", &src).unwrap_err();
    assert!(
        e.0.iter().any(|d| d.pos.line == line
            && d.pos.col == 8
            && d.message.contains("unknown step \"nowhere\"")),
        "{e}"
    );
}
