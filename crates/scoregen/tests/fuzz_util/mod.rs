//! Shared machinery of the property-based fuzz tests of the readers (`tests/fuzz_*.rs`):
//! the proptest configuration, the check every error must pass, and two mutation engines —
//! structured mutations of a JSON document (replace any node by a hostile value, delete,
//! truncate, duplicate, nest deeply, perturb a number) and byte-level mutations of any file
//! (truncate, flip, overwrite, insert, delete, splice invalid UTF-8).
//!
//! Runs are deterministic: the seed is fixed (override it with `PROPTEST_RNG_SEED`, and the
//! number of cases with `PROPTEST_CASES`), and failures are not persisted to files (each bug
//! found has its own regression test instead).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{json, Value};

/// The seed of every fuzz test unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x5c0e_6e11;

/// `cases` cases (or `PROPTEST_CASES`), a fixed seed (or `PROPTEST_RNG_SEED`), no
/// persistence files, and a bounded shrink.
pub fn config(cases: u32) -> Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("PROPTEST_CASES").map_or(cases, |c| c as u32),
        rng_seed: RngSeed::Fixed(env("PROPTEST_RNG_SEED").unwrap_or(SEED)),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// The contract of every reader error: the CLI prints it as one `error:` line and exits
/// with code 2, so it must be a user error (not a tensor-backend or numerical failure),
/// on one line, non-empty and of reasonable length whatever the input held.
pub fn check_err(e: &scoregen::Error) -> Result<(), TestCaseError> {
    let m = e.to_string();
    prop_assert!(!m.trim().is_empty(), "empty message");
    prop_assert!(!m.contains(['\n', '\r']), "message on more than one line: {m:?}");
    prop_assert!(m.chars().count() < 1000, "message of {} characters: {m:.200}", m.len());
    prop_assert!(e.is_user_error(), "not a user error (the CLI would exit 1): {m}");
    Ok(())
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "scoregen-fuzz-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Hostile JSON values: sizes at and beyond every limit, non-integers where integers are
/// expected, overflowing sums, empty and ragged arrays, long and multi-byte strings (cut
/// inside a character at byte 40), control characters, paths, deep nesting.
pub fn nasty_value(i: usize) -> Value {
    let table = nasty_table();
    table[i % table.len()].clone()
}

/// The number of hostile values of [`nasty_value`] (indices beyond wrap around).
pub fn nasty_count() -> usize {
    nasty_table().len()
}

fn nasty_table() -> &'static [Value] {
    static TABLE: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    TABLE.get_or_init(build_nasty_table)
}

fn build_nasty_table() -> Vec<Value> {
    let deep = |n: usize| (0..n).fold(json!(1), |v, _| Value::Array(vec![v]));
    vec![
        json!(0),
        json!(-0.0),
        json!(-1),
        json!(1),
        json!(0.5),
        json!(2),
        json!(3),
        json!(1e5),
        json!(-1e5),
        json!(1e9),
        json!(1_000_000_000_000u64),
        json!(4_294_967_296u64),
        json!(33_554_433u64),
        json!(9_007_199_254_740_993u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e19),
        json!(1e300),
        json!(1e308),
        json!(-1e308),
        json!(5e-324),
        json!(1e-300),
        json!(null),
        json!(true),
        json!(""),
        json!("a"),
        json!("é".repeat(25)),
        json!(format!("x{}", "€".repeat(30))),
        json!("x".repeat(5000)),
        json!("line one\nline two\r\n\u{1b}[31m"),
        json!("\u{0}"),
        json!("NaN"),
        json!("inf"),
        json!("-1"),
        json!("1e400"),
        json!("mlp"),
        json!("unet"),
        json!("gaussian"),
        json!("../../../etc/passwd"),
        json!("/dev/zero"),
        json!([]),
        json!([[]]),
        json!([[[]]]),
        json!([[], []]),
        json!([1e308, 1e308]),
        json!([1e308, 1e308, 1e308]),
        json!([0, 0]),
        json!([-1, 2]),
        json!([1e-320, 1e-320]),
        json!(["é".repeat(30)]),
        json!([null]),
        json!([1, 2]),
        json!([1, 2, 3]),
        json!([[1, 2], [3]]),
        json!([[1e308, 1e308], [1e308, 1e308]]),
        json!([4_294_967_296u64, 4_294_967_296u64]),
        json!([1e9, 1e9]),
        json!([65536, 65536]),
        json!([5793, 5793]),
        json!((0..100).collect::<Vec<_>>()),
        json!({}),
        json!({"kind": "mlp"}),
        deep(40),
        deep(200),
    ]
}

/// A numeric perturbation: what a corrupt or hand-edited file does to a number.
fn perturb(x: f64, k: u64) -> Value {
    let y = match k % 12 {
        0 => x * 2.0,
        1 => x + 0.5,
        2 => -x,
        3 => x * 1e300,
        4 => x + 1e-3,
        5 => x * 1e9,
        6 => x - 1.0,
        7 => x.abs() * 1e15 + 1e15,
        8 => x * (1.0 + 1e-9),
        9 => 0.0,
        10 => x.trunc() + 1e12,
        _ => x * 3.0 + 1.0,
    };
    if y.is_finite() {
        serde_json::Number::from_f64(y).map_or(Value::Null, Value::Number)
    } else {
        Value::Null
    }
}

/// One structured mutation of a JSON document: `(kind, node selector, argument)`.
pub type JsonMut = (u8, u64, u64);

/// Up to `n` JSON mutations.
pub fn json_muts(n: usize) -> impl Strategy<Value = Vec<JsonMut>> {
    prop::collection::vec((0u8..8, any::<u64>(), any::<u64>()), 0..=n)
}

/// Every node of `v`, as paths of keys / indices.
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(x, here, out);
                here.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                here.push(Step::Key(k.clone()));
                paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

/// Applies the mutations in order; each picks a node of the current document.
pub fn mutate_json(mut doc: Value, muts: &[JsonMut]) -> Value {
    for &(kind, sel, arg) in muts {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let path = all[(sel % all.len() as u64) as usize].clone();
        let (parent, last) = match path.split_last() {
            Some((last, parent)) => (parent.to_vec(), Some(last.clone())),
            None => (vec![], None),
        };
        let node = node_mut(&mut doc, &path);
        match kind {
            // Replace by a hostile value (the most common mutation).
            0..=2 => *node = nasty_value(arg as usize),
            // Perturb a number, or every number of an array.
            3 => match node {
                Value::Number(n) => *node = perturb(n.as_f64().unwrap_or(0.0), arg),
                Value::Array(a) => {
                    if let Some(x) = a.iter_mut().find(|x| x.is_number()) {
                        *x = perturb(x.as_f64().unwrap_or(0.0), arg);
                    }
                }
                _ => *node = nasty_value(arg as usize),
            },
            // Truncate an array or a string.
            4 => match node {
                Value::Array(a) => a.truncate((arg % (a.len() as u64 + 1)) as usize),
                Value::String(s) => {
                    let cut = s.char_indices().nth((arg % 8) as usize).map_or(s.len(), |(i, _)| i);
                    s.truncate(cut);
                }
                _ => *node = Value::Null,
            },
            // Duplicate an array element / grow an array.
            5 => match node {
                Value::Array(a) if !a.is_empty() => {
                    let x = a[(arg % a.len() as u64) as usize].clone();
                    a.push(x);
                }
                other => *other = json!([other.clone(), other.clone()]),
            },
            // Nest deeper.
            6 => {
                let depth = 1 + (arg % 150) as usize;
                let inner = node.clone();
                *node = (0..depth).fold(inner, |v, _| Value::Array(vec![v]));
            }
            // Delete from the parent object / array.
            _ => {
                let parent = node_mut(&mut doc, &parent);
                match (parent, last) {
                    (Value::Object(o), Some(Step::Key(k))) => {
                        o.remove(&k);
                    }
                    (Value::Array(a), Some(Step::Index(i))) if i < a.len() => {
                        a.remove(i);
                    }
                    _ => {}
                }
            }
        }
    }
    doc
}

/// The number of nodes of a JSON document (every object member and array element, and
/// the root).
pub fn node_count(doc: &Value) -> usize {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    all.len()
}

/// The nodes a systematic sweep replaces: every node whose path has no array index above
/// 1 (the first two elements of an array stand for the rest), as indices in the order of
/// [`node_count`].
pub fn sweep_nodes(doc: &Value) -> Vec<usize> {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    (0..all.len())
        .filter(|&i| all[i].iter().all(|s| !matches!(s, Step::Index(k) if *k > 1)))
        .collect()
}

/// `doc` with its node `i` (in the order of [`node_count`]) replaced by `v`.
pub fn replace_node(doc: &Value, i: usize, v: Value) -> Value {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    let mut out = doc.clone();
    *node_mut(&mut out, &all[i]) = v;
    out
}

/// One byte-level mutation: `(kind, position selector, argument)`.
pub type ByteMut = (u8, u64, u64);

/// Up to `n` byte mutations.
pub fn byte_muts(n: usize) -> impl Strategy<Value = Vec<ByteMut>> {
    prop::collection::vec((0u8..8, any::<u64>(), any::<u64>()), 0..=n)
}

/// Applies byte mutations in order (positions taken modulo the current length).
pub fn mutate_bytes(mut b: Vec<u8>, muts: &[ByteMut]) -> Vec<u8> {
    for &(kind, sel, arg) in muts {
        let len = b.len();
        let pos = if len == 0 { 0 } else { (sel % len as u64) as usize };
        match kind {
            // Truncate.
            0 => b.truncate(pos),
            // Flip one bit.
            1 if len > 0 => b[pos] ^= 1 << (arg % 8),
            // Overwrite a byte with an interesting value.
            2 if len > 0 => b[pos] = [0u8, 0xff, 0x80, b'\n', b'\r', b',', b'"', b'-', b'9', b'e'][(arg % 10) as usize],
            // Insert a short hostile sequence (invalid UTF-8, quote, newlines, huge number).
            3 => {
                let seqs: [&[u8]; 10] = [
                    b"\xff\xfe",
                    b"\xc3",
                    b"\xe2\x82",
                    b"\"",
                    b"\n\n",
                    b"\r\n",
                    b"99999999999999999999",
                    b"1e309",
                    b",",
                    b"\x00",
                ];
                let s = seqs[(arg % 10) as usize];
                b.splice(pos..pos, s.iter().copied());
            }
            // Delete a range.
            4 if len > 0 => {
                let end = (pos + 1 + (arg % 16) as usize).min(len);
                b.drain(pos..end);
            }
            // Duplicate a range.
            5 if len > 0 => {
                let end = (pos + 1 + (arg % 64) as usize).min(len);
                let chunk: Vec<u8> = b[pos..end].to_vec();
                b.splice(pos..pos, chunk);
            }
            // Append garbage.
            6 => b.extend((0..(arg % 32)).map(|i| (arg >> (i % 8)) as u8)),
            // Overwrite 8 bytes with a little-endian u64 (lengths, sizes).
            _ if len >= 8 => {
                let at = pos.min(len - 8);
                let v = [u64::MAX, 1 << 40, arg, 0, 1 << 31, u32::MAX as u64][(arg % 6) as usize];
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    b
}
