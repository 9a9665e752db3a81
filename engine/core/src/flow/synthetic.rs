//! Synthetic flows for scale checks and benchmarks: large, valid flows with
//! every kind of step, generated rather than shipped.

use std::fmt::Write;

/// A valid flow of `n` steps (plus the flow-wide help step) in one chain:
/// says, asks, assessments, `set` and `branch` steps in turn, templates and
/// variables in every prompt, ending in a hangup. Runs of steps that do not
/// wait are as long as the chain allows, so checks that walk them go deep.
pub fn chain(n: usize) -> String {
    let mut s = String::with_capacity(n * 120);
    s.push_str(
        "[flow]\nid = \"chain\"\nlanguages = [\"zh\", \"en\"]\nstart = \"s0\"\ninputs = [\"elder_name\"]\non_help = \"help\"\nhelp_key = \"9\"\n\n",
    );
    s.push_str(
        "[[step]]\nid = \"help\"\ntype = \"hangup\"\nprompt = { en = \"Help is coming\", zh = \"马上来\" }\n\n",
    );
    for i in 0..n - 1 {
        let next = format!("s{}", i + 1);
        let _ = write!(s, "[[step]]\nid = \"s{i}\"\n");
        let _ = match i % 8 {
            0 | 4 => writeln!(
                s,
                "type = \"say\"\nprompt = {{ en = \"Hello {{elder_name}} {i}\", zh = \"你好{{elder_name}}\" }}\nnext = \"{next}\""
            ),
            1 => writeln!(
                s,
                "type = \"ask\"\nprompt = {{ en = \"How are you?\", zh = \"您好吗？\" }}\nsave = \"a{i}\"\non = [{{ intent = \"yes\", next = \"{next}\" }}, {{ key = \"2\", next = \"{next}\" }}]\nnext = \"{next}\""
            ),
            2 => writeln!(
                s,
                "type = \"assess\"\nemergency = \"{next}\"\nurgent = \"{next}\"\nnext = \"{next}\""
            ),
            3 | 5 | 6 => writeln!(
                s,
                "type = \"set\"\nvars = {{ v{i} = \"{{elder_name}} {{last_transcript}}\" }}\nnext = \"{next}\""
            ),
            _ => writeln!(
                s,
                "type = \"branch\"\nwhen = [{{ var = \"elder_name\", equals = \"x\", next = \"{next}\" }}]\nnext = \"{next}\""
            ),
        };
        s.push('\n');
    }
    let _ = write!(
        s,
        "[[step]]\nid = \"s{}\"\ntype = \"hangup\"\nprompt = {{ en = \"Bye {{elder_name}}\", zh = \"再见\" }}\n",
        n - 1
    );
    s
}
