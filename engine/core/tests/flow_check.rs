//! The flow checker: every kind of mistake is reported with file, line and
//! column, and broken edits never replace a working flow.

use voicecare_core::flow::{FlowSet, Update, parse_flow};

const HEADER: &str = r#"[flow]
id = "t"
languages = ["zh", "en"]
start = "hello"
"#;

/// Parses `HEADER + steps` and returns the rendered errors.
fn errors(steps: &str) -> Vec<String> {
    let src = format!("{HEADER}{steps}");
    match parse_flow("ivr-flows/t.toml", &src) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
    }
}

fn one_error(steps: &str) -> String {
    let e = errors(steps);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap_or_default()
}

const GOODBYE: &str = r#"
[[step]]
id = "bye"
type = "hangup"
prompt = { en = "Bye", zh = "再见" }
"#;

#[test]
fn a_minimal_flow_is_accepted() {
    let e = errors(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi", zh = "你好" }}
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.is_empty(), "{e:#?}");
}

#[test]
fn unknown_target_names_file_line_and_column() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi", zh = "你好" }}
next = "byee"
{GOODBYE}"#
    ));
    // Line 10 of the file, the quoted value starts in column 8.
    assert_eq!(
        e,
        "ivr-flows/t.toml:10:8: step \"hello\" goes to unknown step \"byee\" (`next`)"
    );
}

#[test]
fn unknown_step_type() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "speak"
prompt = {{ en = "Hi", zh = "你好" }}
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.starts_with("ivr-flows/t.toml:8:8: "), "{e}");
    assert!(e.contains("unknown type \"speak\""), "{e}");
    assert!(e.contains("say, ask, confirm"), "{e}");
}

#[test]
fn prompt_missing_a_language() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi" }}
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.starts_with("ivr-flows/t.toml:9:10: "), "{e}");
    assert!(e.contains("no text or audio in zh"), "{e}");
}

#[test]
fn recorded_audio_counts_for_its_language() {
    let e = errors(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi", audio = {{ zh = "audio/zh/hello.wav" }} }}
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.is_empty(), "{e:#?}");
}

#[test]
fn unreachable_step() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi", zh = "你好" }}
next = "bye"

[[step]]
id = "orphan"
type = "say"
prompt = {{ en = "?", zh = "？" }}
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.starts_with("ivr-flows/t.toml:12:1: "), "{e}");
    assert!(e.contains("\"orphan\" is unreachable"), "{e}");
}

#[test]
fn loop_without_exit() {
    let e = errors(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = { en = "Hi", zh = "你好" }
next = "again"

[[step]]
id = "again"
type = "say"
prompt = { en = "Hi again", zh = "又见面了" }
next = "hello"
"#,
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].contains("\"hello\" is in a loop without exit"),
        "{e:#?}"
    );
    assert!(
        e[1].contains("\"again\" is in a loop without exit"),
        "{e:#?}"
    );
}

#[test]
fn loop_that_never_waits() {
    let e = errors(&format!(
        r#"
[[step]]
id = "hello"
type = "set"
vars = {{ n = "1" }}
next = "test"

[[step]]
id = "test"
type = "branch"
when = [{{ var = "n", equals = "2", next = "bye" }}]
next = "hello"
{GOODBYE}"#
    ));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].contains("loop without ever waiting"), "{e:#?}");
    assert!(
        e[0].contains("\"hello\" -> \"test\" -> \"hello\""),
        "{e:#?}"
    );
}

#[test]
fn unknown_variable_in_prompt() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi {{elder_nmae}}", zh = "你好" }}
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.contains("unknown variable \"elder_nmae\""), "{e}");
    // Points at the text itself (line 9, after `prompt = { en = `).
    assert!(e.starts_with("ivr-flows/t.toml:9:17: "), "{e}");
}

#[test]
fn field_not_used_by_the_step_type() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi", zh = "你好" }}
next = "bye"
yes = "bye"
{GOODBYE}"#
    ));
    assert!(e.starts_with("ivr-flows/t.toml:11:7: "), "{e}");
    assert!(e.contains("`yes` is not used by a `say` step"), "{e}");
}

#[test]
fn unknown_field_and_bad_toml_have_positions() {
    let e = one_error(
        r#"
[[step]]
id = "hello"
type = "hangup"
promt = { en = "Hi", zh = "你好" }
"#,
    );
    assert!(e.starts_with("ivr-flows/t.toml:9:1: "), "{e}");
    assert!(e.contains("promt"), "{e}");

    let e = one_error("\n[[step]]\nid = \"hello\"\ntype = \"hangup\n");
    assert!(e.starts_with("ivr-flows/t.toml:8:"), "{e}");
}

#[test]
fn duplicate_ids_and_missing_fields_are_all_reported() {
    let e = errors(
        r#"
[[step]]
id = "hello"
type = "ask"
prompt = { en = "How are you?", zh = "你好吗？" }

[[step]]
id = "hello"
type = "hangup"

[[step]]
id = "esc"
type = "escalate"
level = "critical"
reason = "x"
next = "hello"
"#,
    );
    let all = e.join("\n");
    assert!(all.contains("step \"hello\" is defined twice"), "{all}");
    assert!(
        all.contains("needs `next` (any answer) or `no_match_next`"),
        "{all}"
    );
    assert!(all.contains("`level` \"critical\""), "{all}");
    assert!(e.len() >= 3, "{all}");
}

#[test]
fn keep_on_line_needs_reassurance_and_no_next() {
    let e = one_error(
        r#"
[[step]]
id = "hello"
type = "escalate"
level = "emergency"
reason = "help"
keep_on_line = true
"#,
    );
    assert!(e.contains("needs a reassurance `prompt`"), "{e}");
}

#[test]
fn bad_keys_intents_and_templates() {
    let all = errors(&format!(
        r#"
[[step]]
id = "hello"
type = "ask"
prompt = {{ en = "Press {{", zh = "按" }}
on = [{{ key = "12", next = "bye" }}, {{ intent = "maybe", next = "bye" }}]
next = "bye"
{GOODBYE}"#
    ))
    .join("\n");
    assert!(all.contains("unclosed `{`"), "{all}");
    assert!(all.contains("key \"12\" must be one keypad key"), "{all}");
    assert!(all.contains("unknown intent \"maybe\""), "{all}");
}

#[test]
fn shared_prompts_by_name() {
    let ok = errors(&format!(
        r#"
[prompts.hi]
en = "Hi"
zh = "你好"

[[step]]
id = "hello"
type = "say"
prompt.use = "hi"
next = "bye"
{GOODBYE}"#
    ));
    assert!(ok.is_empty(), "{ok:#?}");
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "say"
prompt.use = "hey"
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.contains("unknown prompt \"hey\""), "{e}");
}

#[test]
fn never_panics_on_odd_input() {
    for src in [
        "",
        "[flow]",
        "\u{feff}[flow]\nid = 1",
        "[[step]]\nid = \"a\"\ntype = \"say\"",
        "[flow]\nid=\"x\"\nlanguages=[]\nstart=\"a\"\n[[step]]\nid=\"a\"\ntype=\"hangup\"\n",
        "[flow]\nid=\"x\"\nlanguages=[\"fr\"]\nstart=\"a\"\n",
        "[flow]\nid=\"x\"\nlanguages=[\"en\"]\nstart=\"a\"\nrate=9.0\n[[step]]\nid=\"a\"\ntype=\"hangup\"\n",
        "\u{0}\u{1}{{{",
    ] {
        let r = parse_flow("odd.toml", src);
        let e = r.expect_err("odd input is rejected");
        assert!(!e.0.is_empty());
        assert!(e.to_string().starts_with("odd.toml:"), "{e}");
    }
}

#[test]
fn flow_set_keeps_the_last_good_version() {
    let good = format!(
        r#"{HEADER}
[[step]]
id = "hello"
type = "say"
prompt = {{ en = "Hi", zh = "你好" }}
next = "bye"
{GOODBYE}"#
    );
    let broken = good.replace("next = \"bye\"", "next = \"byee\"");
    let mut set = FlowSet::new();
    assert_eq!(
        set.update("ivr-flows/t.toml", &good),
        Update::Loaded {
            id: "t".into(),
            version: 1
        }
    );
    match set.update("ivr-flows/t.toml", &broken) {
        Update::Rejected { errors, kept } => {
            assert_eq!(kept, Some(("t".to_string(), 1)));
            assert!(errors.to_string().contains("byee"));
        }
        other => panic!("broken flow accepted: {other:?}"),
    }
    // Offering the good text again changes nothing.
    assert_eq!(
        set.update("ivr-flows/t.toml", &good),
        Update::Unchanged {
            id: "t".into(),
            version: 1
        }
    );
    let flow = set.get("t").expect("still there");
    assert_eq!(flow.steps.len(), 2);
    assert_eq!(set.version("t"), Some(1));
    let better = good.replace("Hi", "Hello");
    assert_eq!(
        set.update("ivr-flows/t.toml", &better),
        Update::Loaded {
            id: "t".into(),
            version: 2
        }
    );
    // A second file claiming the same id is refused.
    match set.update("ivr-flows/copy.toml", &good) {
        Update::Rejected { errors, kept } => {
            assert_eq!(kept, None);
            assert!(errors.to_string().contains("already used"), "{errors}");
        }
        other => panic!("duplicate id accepted: {other:?}"),
    }
    assert_eq!(set.len(), 1);
    // A first load that fails keeps nothing.
    let mut empty = FlowSet::new();
    assert!(matches!(
        empty.update("x.toml", &broken),
        Update::Rejected { kept: None, .. }
    ));
    assert!(empty.is_empty());
}

#[test]
fn assess_must_say_where_urgent_answers_go() {
    let e = one_error(&format!(
        r#"
[[step]]
id = "hello"
type = "ask"
prompt = {{ en = "How are you?", zh = "你好吗？" }}
next = "check"

[[step]]
id = "check"
type = "assess"
watch = "bye"
next = "bye"
{GOODBYE}"#
    ));
    assert!(e.starts_with("ivr-flows/t.toml:12:1: "), "{e}");
    assert!(e.contains("needs `urgent`"), "{e}");
}

#[test]
fn a_step_leading_into_a_loop_that_never_waits_is_not_a_second_loop() {
    let e = errors(&format!(
        r#"
[[step]]
id = "hello"
type = "set"
vars = {{ n = "1" }}
next = "test"

[[step]]
id = "test"
type = "branch"
when = [{{ var = "n", equals = "2", next = "bye" }}, {{ var = "n", equals = "3", next = "into" }}]
next = "hello"
{GOODBYE}
[[step]]
id = "into"
type = "set"
vars = {{ n = "4" }}
next = "hello"
"#
    ));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("\"hello\" -> \"test\" -> \"hello\""),
        "{e:#?}"
    );
}
