//! What the fuzz targets share (engine/*/tests/fuzz_*.rs, see docs/fuzzing.md):
//! the seed corpus of each target, the mutations applied to it, the run
//! budget, and an allocator that measures what one input made the code
//! under test allocate.
//!
//! A target first feeds every file of its corpus (`tests/fuzz/corpus/<target>/`)
//! to the code unchanged, then inputs made by proptest, most of them a corpus
//! file mutated (bits flipped, bytes set to edge values, cut, repeated,
//! spliced with another file, numbers swapped for huge ones, tokens of the
//! format inserted), some plain random bytes, for `FUZZ_SECS` seconds (2 by
//! default) and at least `PROPTEST_CASES` inputs (256 by default). A failing
//! input is shrunk and printed, ready to be saved into the corpus.

// Each target uses a part of this module.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{
    Config, RngSeed, TestCaseError, TestCaseResult, TestError, TestRunner,
};

/// The repository's `tests/fuzz/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/corpus")
        .join(target)
}

/// Every file of a target's corpus, by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// One change to an input. Positions are proptest indices, so they scale to
/// whatever length the input has when the change is applied.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Overwrite four bytes with an edge value, little-endian (header fields).
    SetWord(Index, u32),
    Truncate(Index),
    Delete(Index, usize),
    Insert(Index, Vec<u8>),
    /// Insert one of the target's tokens (`[[step]]`, `m=audio`, `"type":`).
    Token(Index, Index),
    /// Repeat a short stretch of the input up to 64 times.
    Repeat(Index, usize, usize),
    /// Copy a stretch of another corpus file in.
    Splice(Index, Index, usize, Index),
    /// Replace the decimal number at or after a position with an edge value.
    Number(Index, Index),
}

const EDGE_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b'"', b'\'', b',', b'=', b'[', b']', b'{', b'}', b':',
    b'\\', b' ', b'0', b'9', b'-',
];
const EDGE_WORDS: &[u32] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775808",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "-9223372036854775809",
    "1e309",
    "NaN",
    "0.0000000001",
];

/// Inputs are cut to this length: a target fed a megabyte by repetition
/// learns nothing more than at 64 KiB, only slower.
pub const MAX_INPUT: usize = 64 << 10;

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (
            any::<Index>(),
            prop_oneof![any::<u8>(), proptest::sample::select(EDGE_BYTES)]
        )
            .prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), proptest::sample::select(EDGE_WORDS))
            .prop_map(|(i, w)| Mutation::SetWord(i, w)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<Index>(), 1usize..64, 2usize..64).prop_map(|(i, n, k)| Mutation::Repeat(i, n, k)),
        (any::<Index>(), any::<Index>(), 1usize..256, any::<Index>())
            .prop_map(|(f, s, n, at)| Mutation::Splice(f, s, n, at)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Mutation::Number(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation, corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::FlipBit(i, bit) if !b.is_empty() => {
            let p = at(i, b.len());
            b[p] ^= 1 << bit;
        }
        Mutation::SetByte(i, v) if !b.is_empty() => {
            let p = at(i, b.len());
            b[p] = *v;
        }
        Mutation::SetWord(i, w) if b.len() >= 4 => {
            let p = at(i, b.len() - 3);
            b[p..p + 4].copy_from_slice(&w.to_le_bytes());
        }
        Mutation::Truncate(i) => b.truncate(at(i, b.len() + 1)),
        Mutation::Delete(i, n) if !b.is_empty() => {
            let p = at(i, b.len());
            let end = (p + n).min(b.len());
            b.drain(p..end);
        }
        Mutation::Insert(i, bytes) => {
            let p = at(i, b.len() + 1);
            b.splice(p..p, bytes.iter().copied());
        }
        Mutation::Token(i, t) if !tokens.is_empty() => {
            let p = at(i, b.len() + 1);
            let tok = tokens[t.index(tokens.len())];
            b.splice(p..p, tok.iter().copied());
        }
        Mutation::Repeat(i, n, k) if !b.is_empty() => {
            let p = at(i, b.len());
            let end = (p + n).min(b.len());
            let chunk = b[p..end].to_vec();
            let rep: Vec<u8> = chunk
                .iter()
                .copied()
                .cycle()
                .take(chunk.len() * k)
                .collect();
            b.splice(end..end, rep);
        }
        Mutation::Splice(f, s, n, i) => {
            let other = &corpus[f.index(corpus.len())];
            if !other.is_empty() {
                let start = s.index(other.len());
                let end = (start + n).min(other.len());
                let p = at(i, b.len() + 1);
                b.splice(p..p, other[start..end].iter().copied());
            }
        }
        Mutation::Number(i, n) if !b.is_empty() => {
            let from = at(i, b.len());
            if let Some(start) = b[from..].iter().position(u8::is_ascii_digit) {
                let start = from + start;
                let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
                let num = EDGE_NUMBERS[n.index(EDGE_NUMBERS.len())].as_bytes();
                b.splice(start..end, num.iter().copied());
            }
        }
        _ => {}
    }
    b.truncate(MAX_INPUT);
    b
}

/// Inputs for a target: mostly mutated corpus files, some random bytes, some
/// random strings of the format's tokens.
pub fn inputs(corpus: &[Vec<u8>], tokens: &[&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    let seeds = corpus.to_vec();
    let tokens: Vec<&'static [u8]> = tokens.to_vec();
    let mutated = {
        let (seeds, tokens) = (seeds.clone(), tokens.clone());
        (any::<Index>(), vec(mutation(), 1..8)).prop_map(move |(i, ms)| {
            let base = seeds[i.index(seeds.len())].clone();
            ms.iter().fold(base, |b, m| apply(b, m, &seeds, &tokens))
        })
    };
    let random = vec(any::<u8>(), 0..512);
    let mut weighted = vec![(8, mutated.boxed()), (1, random.boxed())];
    if !tokens.is_empty() {
        let toks = tokens.clone();
        let words = vec(any::<Index>(), 0..64).prop_map(move |idx| {
            idx.iter()
                .flat_map(|i| toks[i.index(toks.len())].iter().copied())
                .collect::<Vec<u8>>()
        });
        weighted.push((1, words.boxed()));
    }
    proptest::strategy::Union::new_weighted(weighted).boxed()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// How long a target runs after its corpus: until both are reached.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Seconds of generated inputs; `FUZZ_SECS` overrides it.
    pub secs: u64,
    /// Generated inputs at the least; `PROPTEST_CASES` overrides it.
    pub cases: u32,
}

/// Two seconds and at least 256 generated inputs.
pub const DEFAULT_BUDGET: Budget = Budget {
    secs: 2,
    cases: 256,
};

/// Feed the corpus, then generated inputs for the default budget, to `check`.
/// Panics with the smallest failing input found.
pub fn run(target: &str, tokens: &[&'static [u8]], check: impl Fn(&[u8]) -> TestCaseResult) {
    run_for(target, tokens, DEFAULT_BUDGET, check)
}

/// [`run`] with another budget, for targets whose inputs are slow to try.
pub fn run_for(
    target: &str,
    tokens: &[&'static [u8]],
    budget: Budget,
    check: impl Fn(&[u8]) -> TestCaseResult,
) {
    let files = corpus(target);
    for (name, bytes) in &files {
        if let Err(e) = check(bytes) {
            panic!("{target}: corpus file {name}: {e}");
        }
    }
    let seeds: Vec<Vec<u8>> = files.into_iter().map(|(_, b)| b).collect();
    let strategy = inputs(&seeds, tokens);
    let secs = env_number("FUZZ_SECS").unwrap_or(budget.secs);
    let min_cases = env_number("PROPTEST_CASES").map_or(budget.cases, |n| n as u32);
    let batch_cases = min_cases.clamp(1, 128);
    let budget = Duration::from_secs(secs);
    // A seed of its own for every run, printed with a failure to replay it.
    let seed = env_number("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let start = Instant::now();
    let (mut cases, mut batch) = (0u32, 0u64);
    while cases < min_cases || start.elapsed() < budget {
        let config = Config {
            cases: batch_cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(seed.wrapping_add(batch)),
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        match runner.run(&strategy, |input| check(&input)) {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => panic!(
                "{target}: failing input ({} bytes; FUZZ_SEED={seed} replays the run), save it under {}:\n{}\n{why}",
                input.len(),
                corpus_dir(target).display(),
                input.escape_ascii()
            ),
            Err(TestError::Abort(why)) => panic!("{target}: {why}"),
        }
        cases += batch_cases;
        batch += 1;
    }
    eprintln!(
        "{target}: corpus and {cases} generated inputs in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Fails the case with a message: for `?` in a check.
pub fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

// ---- allocation accounting ----

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting what the current thread holds while a
/// [`measure`] is running on it.
pub struct Counting;

fn count(delta: isize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Run `f` and return its result with the most memory it held at once, in
/// bytes, counting what it allocated on this thread (and freed or not).
/// Needs `#[global_allocator] static A: fuzz::Counting = fuzz::Counting;`.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.set(false);
        }
    }
    LIVE.set(0);
    PEAK.set(0);
    ARMED.set(true);
    let guard = Disarm;
    let r = f();
    drop(guard);
    (r, PEAK.get().max(0) as usize)
}
