//! The hostile-input campaign (issue 15): a few hundred bad or edge-case inputs against the
//! binary, every command, each run under an address-space cap (`ulimit -v`), one rayon
//! thread and a time limit. For every run:
//!
//! * the exit code is 0 or 2: never a panic (101), an abort (134), a signal or a hang;
//! * a refusal (exit 2) prints exactly one line, `error: ...`, of bounded length, with no
//!   Rust debug formatting;
//! * no input file changes (every fixture is hashed before and after the whole campaign);
//! * a refused run leaves its output directory empty (no partial file, no staging
//!   directory); a successful one writes only readable outputs with finite numbers;
//! * a case marked `Refused` exits 2.
//!
//! Sized for CI: about a minute on two cores. Set `SCOREGEN_CAMPAIGN_VERBOSE=1` to print
//! each case.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Address-space cap of every run, in KiB (`ulimit -v`).
const MEMORY_CAP_KIB: u64 = 4 << 20;
/// Wall-clock limit of every run.
const TIME_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Must exit 2.
    Refused,
    /// 0 or 2, both fine (edge cases that may legitimately work).
    Either,
}

struct Case {
    args: Vec<String>,
    expect: Expect,
}

/// Fixture files (inputs): written once, hashed before and after the campaign.
struct Fixtures {
    dir: PathBuf,
}

impl Fixtures {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        let p = self.dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// A `.npy` file: version-1 header with `descr`, `shape` and the raw data bytes.
fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((header.len() as u16).to_le_bytes());
    v.extend(header.as_bytes());
    v.extend(data);
    v
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every file below `dir` with a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    use std::hash::{Hash, Hasher};
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap_or_default().hash(&mut h);
                m.insert(p, h.finish());
            }
        }
    }
    m
}

const PROBLEM: &str = r#"{"prior": {"kind": "gaussian_mixture", "weights": [0.5, 0.3, 0.2],
 "means": [[-3.0, 0.0], [2.0, 2.5], [2.5, -2.0]],
 "covariances": [[[1.0, 0.6], [0.6, 0.8]], [[0.4, -0.2], [-0.2, 0.6]], [[0.3, 0.0], [0.0, 1.2]]]},
 "operator": {"kind": "dense", "matrix": [[1.0, 0.5]]}, "y": [1.2], "sigma_y": 0.3}"#;

/// Problem files: good ones, then bad or extreme ones.
fn problems(fx: &Fixtures) -> (Vec<String>, Vec<(String, Expect)>) {
    let gauss16 = r#""prior": {"kind": "gaussian", "mean": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0], "variance": 1}"#;
    let good = vec![
        fx.write("p/good.json", PROBLEM),
        fx.write(
            "p/mask.json",
            r#"{"prior": {"kind": "gaussian_mixture", "weights": [1, 3], "means": [[0, 0, 0], [2, 1, -1]], "variance": [1, 2]},
               "operator": {"kind": "mask", "observed": [0, 2]}, "y": [0.3, -0.2], "sigma_y": 0.1}"#,
        ),
        fx.write(
            "p/inpaint.json",
            format!(r#"{{{gauss16}, "operator": {{"kind": "inpaint_box", "box": [1, 1, 2, 2]}}, "y": [0,0,0,0,0,0,0,0,0,0,0,0], "sigma_y": 0.1}}"#),
        ),
        fx.write("p/gauss.json", r#"{"prior": {"kind": "gaussian", "mean": [0, 1, 2], "variance": 2}}"#),
    ];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long = "é".repeat(5000);
    let mixture = |weights: &str, means: &str, cov: &str| {
        format!(
            r#"{{"prior": {{"kind": "gaussian_mixture", "weights": {weights}, "means": {means}, {cov}}}, "operator": {{"kind": "dense", "matrix": [[1.0, 0.5]]}}, "y": [1.2], "sigma_y": 0.3}}"#
        )
    };
    let op = |op: &str, y: &str| format!(r#"{{{gauss16}, "operator": {op}, "y": {y}, "sigma_y": 0.1}}"#);
    let bad: Vec<(&str, String, Expect)> = vec![
        ("empty", String::new(), Expect::Refused),
        ("brace", "{".into(), Expect::Refused),
        ("array", "[]".into(), Expect::Refused),
        ("null", "null".into(), Expect::Refused),
        ("deep", deep, Expect::Refused),
        ("binary", String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x41]).into_owned(), Expect::Refused),
        ("longkind", format!(r#"{{"prior": {{"kind": "{long}"}}}}"#), Expect::Refused),
        ("longkey", format!(r#"{{"prior": {{"kind": "gaussian", "mean": [0], "{long}": 1}}}}"#), Expect::Either),
        ("noprior", r#"{"y": [1]}"#.into(), Expect::Refused),
        ("means_empty", mixture("[1]", "[[]]", r#""variance": 1"#), Expect::Refused),
        ("means_none", mixture("[]", "[]", r#""variance": 1"#), Expect::Refused),
        ("weights_overflow", mixture("[1e308, 1e308]", "[[0, 0], [1, 1]]", r#""variance": 1"#), Expect::Either),
        ("weights_zero", mixture("[0, 0]", "[[0, 0], [1, 1]]", r#""variance": 1"#), Expect::Refused),
        ("weights_negative", mixture("[-1, 2]", "[[0, 0], [1, 1]]", r#""variance": 1"#), Expect::Refused),
        ("weights_inf", mixture("[1e400, 1]", "[[0, 0], [1, 1]]", r#""variance": 1"#), Expect::Refused),
        ("ragged_means", mixture("[1, 1]", "[[0, 0], [1]]", r#""variance": 1"#), Expect::Refused),
        ("huge_means", mixture("[1, 1]", "[[1e300, 0], [-1e300, 1]]", r#""variance": 1"#), Expect::Either),
        ("tiny_var", mixture("[1, 1]", "[[0, 0], [1, 1]]", r#""variance": 1e-300"#), Expect::Either),
        ("huge_var", mixture("[1, 1]", "[[0, 0], [1, 1]]", r#""variance": 1e300"#), Expect::Either),
        ("neg_var", mixture("[1, 1]", "[[0, 0], [1, 1]]", r#""variance": -1"#), Expect::Refused),
        ("nonpd", mixture("[1]", "[[0, 0]]", r#""covariances": [[[1, 2], [2, 1]]]"#), Expect::Refused),
        ("asym", mixture("[1]", "[[0, 0]]", r#""covariances": [[[1, 0.5], [0.1, 1]]]"#), Expect::Refused),
        ("cov_shape", mixture("[1]", "[[0, 0]]", r#""covariances": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]"#), Expect::Refused),
        ("string_num", mixture(r#"["1"]"#, "[[0, 0]]", r#""variance": 1"#), Expect::Refused),
        ("unknown_kind", r#"{"prior": {"kind": "laplace", "mean": [0]}}"#.into(), Expect::Refused),
        ("y_len", op(r#"{"kind": "dense", "matrix": [[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}"#, "[1, 2]"), Expect::Refused),
        ("matrix_shape", op(r#"{"kind": "dense", "matrix": [[1, 2]]}"#, "[1]"), Expect::Refused),
        ("mask_range", op(r#"{"kind": "mask", "observed": [99]}"#, "[1]"), Expect::Refused),
        ("mask_huge_dim", op(r#"{"kind": "mask", "observed": [0], "dim": 1000000000000}"#, "[1]"), Expect::Refused),
        ("mask_dup", op(r#"{"kind": "mask", "observed": [1, 1]}"#, "[1, 1]"), Expect::Either),
        ("box_huge", op(r#"{"kind": "inpaint_box", "box": [0, 0, 1000000000, 1000000000]}"#, "[]"), Expect::Refused),
        ("image_huge", op(r#"{"kind": "superres", "factor": 2, "image": [1000000000000, 1000000000000]}"#, "[1]"), Expect::Refused),
        ("blur_huge_sigma", {
            let g4 = r#""prior": {"kind": "gaussian", "mean": [0,0,0,0], "variance": 1}"#;
            format!(r#"{{{g4}, "operator": {{"kind": "blur", "sigma": 1e5, "image": [2, 2]}}, "y": [0,0,0,0], "sigma_y": 0.1}}"#)
        }, Expect::Either),
        ("blur_nan", op(r#"{"kind": "blur", "sigma": -1}"#, "[0]"), Expect::Refused),
        ("superres_factor", op(r#"{"kind": "superres", "factor": 0}"#, "[0]"), Expect::Refused),
        ("svd_not_orthonormal", {
            let g2 = r#""prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}"#;
            format!(r#"{{{g2}, "operator": {{"kind": "svd", "u": [[2]], "s": [1], "v": [[3, 0], [0, 5]]}}, "y": [1], "sigma_y": 0.1}}"#)
        }, Expect::Refused),
        ("sigma_neg", op(r#"{"kind": "mask", "observed": [0]}"#, "[1]").replace("0.1}", "-1}"), Expect::Refused),
        ("sigma_huge", op(r#"{"kind": "mask", "observed": [0]}"#, "[1]").replace("0.1}", "1e300}"), Expect::Either),
        ("y_huge", op(r#"{"kind": "mask", "observed": [0]}"#, "[1e300]"), Expect::Either),
        ("model_missing", r#"{"prior": {"kind": "model", "path": "no/such/dir"}, "operator": {"kind": "mask", "observed": [0]}, "y": [1], "sigma_y": 0.1}"#.into(), Expect::Refused),
    ];
    let bad = bad
        .into_iter()
        .map(|(name, text, e)| (fx.write(&format!("p/{name}.json"), text), e))
        .collect();
    (good, bad)
}

/// Point files (`.npy`, `.csv`): good ones, then bad or extreme ones.
fn points(fx: &Fixtures) -> (Vec<String>, Vec<(String, Expect)>) {
    let xs: Vec<f64> = (0..200).map(|i| ((i * 37) % 17) as f64 / 7.0 - 1.0).collect();
    let mut csv = String::from("a,b\n");
    for r in xs.chunks(2) {
        csv += &format!("{},{}\n", r[0], r[1]);
    }
    let good = vec![
        fx.write("x/good.npy", npy("<f8", false, "(100, 2)", &f64s(&xs))),
        fx.write("x/good.csv", &csv),
    ];
    let f32s: Vec<u8> = xs.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
    let bad: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("f32.npy", npy("<f4", false, "(100, 2)", &f32s), Expect::Either),
        ("empty.npy", vec![], Expect::Refused),
        ("magic.npy", b"NOTNUMPY".to_vec(), Expect::Refused),
        (
            "truncated.npy",
            npy("<f8", false, "(100, 2)", &f64s(&xs[..50])),
            Expect::Refused,
        ),
        (
            "huge_shape.npy",
            npy("<f8", false, "(1000000000000, 2)", &f64s(&xs)),
            Expect::Refused,
        ),
        (
            "overflow_shape.npy",
            npy("<f8", false, "(18446744073709551615, 18446744073709551615)", &f64s(&xs)),
            Expect::Refused,
        ),
        ("zero_rows.npy", npy("<f8", false, "(0, 2)", &[]), Expect::Refused),
        ("zero_cols.npy", npy("<f8", false, "(5, 0)", &[]), Expect::Refused),
        (
            "three_d.npy",
            npy("<f8", false, "(2, 2, 2)", &f64s(&xs[..8])),
            Expect::Refused,
        ),
        ("one_d.npy", npy("<f8", false, "(8,)", &f64s(&xs[..8])), Expect::Either),
        ("int.npy", npy("<i8", false, "(4, 2)", &[0u8; 64]), Expect::Either),
        (
            "bigendian.npy",
            npy(">f8", false, "(4, 2)", &f64s(&xs[..8])),
            Expect::Either,
        ),
        (
            "fortran.npy",
            npy("<f8", true, "(4, 2)", &f64s(&xs[..8])),
            Expect::Either,
        ),
        ("object.npy", npy("|O", false, "(4, 2)", &[0u8; 64]), Expect::Refused),
        (
            "nan.npy",
            npy("<f8", false, "(2, 2)", &f64s(&[1.0, f64::NAN, 0.0, 1.0])),
            Expect::Refused,
        ),
        (
            "inf.npy",
            npy("<f8", false, "(2, 2)", &f64s(&[1.0, f64::INFINITY, 0.0, 1.0])),
            Expect::Refused,
        ),
        (
            "huge.npy",
            npy(
                "<f8",
                false,
                "(4, 2)",
                &f64s(&[1e308, -1e308, 1e307, 0.0, 1.0, 2.0, -1e308, 5.0]),
            ),
            Expect::Either,
        ),
        (
            "badheader.npy",
            b"\x93NUMPY\x01\x00\x10\x00{'descr': <f8  \n".to_vec(),
            Expect::Refused,
        ),
        ("empty.csv", vec![], Expect::Refused),
        ("header_only.csv", b"a,b\n".to_vec(), Expect::Refused),
        ("ragged.csv", b"1,2\n3\n4,5,6\n".to_vec(), Expect::Refused),
        ("text.csv", b"1,2\nx,y\n".to_vec(), Expect::Refused),
        ("nan.csv", b"1,2\nnan,3\n".to_vec(), Expect::Refused),
        ("inf.csv", b"1,2\ninf,3\n".to_vec(), Expect::Refused),
        ("huge.csv", b"1e308,2\n-1e308,3\n1e307,0\n".to_vec(), Expect::Either),
        ("overflow.csv", b"1e400,2\n3,4\n".to_vec(), Expect::Refused),
        ("one_col.csv", b"1\n2\n\n3\n".to_vec(), Expect::Either),
        ("crlf.csv", b"1,2\r\n3,4\r\n5,6\r\n".to_vec(), Expect::Either),
        ("bom.csv", b"\xef\xbb\xbf1,2\n3,4\n5,6\n".to_vec(), Expect::Either),
        ("nonutf8.csv", b"1,2\n\xff\xfe,3\n".to_vec(), Expect::Refused),
        (
            "longcell.csv",
            format!("1,2\n{},3\n", "7".repeat(100_000)).into_bytes(),
            Expect::Either,
        ),
        (
            "longtext.csv",
            format!("1,2\n{},3\n", "é".repeat(50_000)).into_bytes(),
            Expect::Refused,
        ),
        ("spaces.csv", b" 1 , 2 \n 3 ,4\n5, 6\n".to_vec(), Expect::Either),
        ("semicolon.csv", b"1;2\n3;4\n".to_vec(), Expect::Either),
        ("quoted.csv", b"\"1\",\"2\"\n\"3\",\"4\"\n".to_vec(), Expect::Either),
        ("wrong.ext", b"1,2\n3,4\n".to_vec(), Expect::Refused),
    ];
    let bad = bad
        .into_iter()
        .map(|(name, bytes, e)| (fx.write(&format!("x/{name}"), bytes), e))
        .collect();
    (good, bad)
}

/// Tables for `impute`.
fn tables(fx: &Fixtures) -> (String, Vec<(String, Expect)>) {
    let mut t = String::from("kind,a,b\n");
    for i in 0..30 {
        let a = (i % 7) as f64 * 0.5;
        let b = if i % 5 == 0 {
            String::new()
        } else {
            format!("{:.2}", 2.0 * a + 1.0)
        };
        t += &format!("{},{a},{b}\n", if i % 2 == 0 { "x" } else { "y" });
    }
    let good = fx.write("t/good.csv", &t);
    let bad: Vec<(&str, String, Expect)> = vec![
        ("empty.csv", String::new(), Expect::Refused),
        ("header_only.csv", "a,b\n".into(), Expect::Refused),
        ("ragged.csv", "a,b\n1,2\n3\n".into(), Expect::Refused),
        ("all_missing_col.csv", "a,b\n1,\n2,\n3,\n".into(), Expect::Refused),
        ("all_missing_row.csv", "a,b\n1,2\n,\n3,4\n5,6\n".into(), Expect::Either),
        ("one_col.csv", "a\n1\n\n3\n4\n".into(), Expect::Either),
        ("complete.csv", "a,b\n1,2\n3,4\n".into(), Expect::Either),
        ("huge.csv", "a,b\n1e308,1\n-1e308,\n1e307,3\n".into(), Expect::Either),
        ("tiny.csv", "a,b\n1e-308,1\n-1e-308,\n0,3\n".into(), Expect::Either),
        ("inf.csv", "a,b\ninf,1\n2,\n".into(), Expect::Refused),
        ("labels_only.csv", "k,l\nx,y\n,z\nx,\n".into(), Expect::Either),
        (
            "many_levels.csv",
            {
                let mut s = String::from("k,a\n");
                for i in 0..300 {
                    s += &format!("level{i},{}\n", if i % 3 == 0 { "".to_string() } else { i.to_string() });
                }
                s
            },
            Expect::Either,
        ),
        ("dup_header.csv", "a,a\n1,2\n3,\n".into(), Expect::Either),
        (
            "long_label.csv",
            format!("a,b\n{},1\n2,\n", "é".repeat(20_000)),
            Expect::Either,
        ),
        ("quoted.csv", "a,b\n\"1,5\",2\n3,\n".into(), Expect::Either),
    ];
    let bad = bad
        .into_iter()
        .map(|(name, text, e)| (fx.write(&format!("t/{name}"), text), e))
        .collect();
    (good, bad)
}

/// A tiny trained checkpoint and corrupted copies of it.
fn checkpoints(fx: &Fixtures) -> (String, Vec<(String, Expect)>) {
    let good = fx.dir.join("ck/good");
    let o = common::run(&[
        "train",
        "--data",
        "builtin:moons",
        "--n",
        "200",
        "--steps",
        "2",
        "--batch",
        "8",
        "--hidden",
        "8",
        "--out",
        good.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = std::fs::read_to_string(good.join("checkpoint.json")).unwrap();
    let weights: String = {
        let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
        v["weights"].as_str().unwrap().to_string()
    };
    let wbytes = std::fs::read(good.join(&weights)).unwrap();
    let mut bad = vec![];
    let mut variant = |name: &str, meta: &str, w: &[u8], e: Expect| {
        let d = fx.dir.join("ck").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("checkpoint.json"), meta).unwrap();
        std::fs::write(d.join(&weights), w).unwrap();
        bad.push((d.to_string_lossy().into_owned(), e));
    };
    let swap = |from: &str, to: &str| {
        assert!(meta.contains(from), "checkpoint.json has no '{from}'");
        meta.replacen(from, to, 1)
    };
    variant("garbage_meta", "{", &wbytes, Expect::Refused);
    variant("empty_meta", "", &wbytes, Expect::Refused);
    variant("truncated_weights", &meta, &wbytes[..wbytes.len() / 2], Expect::Refused);
    variant("garbage_weights", &meta, b"hello", Expect::Refused);
    variant(
        "huge_hidden",
        &swap("\"hidden\": 8", "\"hidden\": 1000000000000"),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "wrong_hidden",
        &swap("\"hidden\": 8", "\"hidden\": 9"),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "huge_dim",
        &swap("\"dim\": 2", "\"dim\": 1000000000"),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "zero_depth",
        &swap("\"depth\": 3", "\"depth\": 0"),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "huge_classes",
        &swap("\"n_classes\": 2", "\"n_classes\": 1000000000000"),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "negative_class_weight",
        &swap("\"class_weights\": [", "\"class_weights\": [-5, "),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "zero_std",
        &swap("\"std\": [", "\"std\": [0, "),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "null_std",
        &swap("\"std\": [", "\"std\": [null, "),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "unknown_kind",
        &swap("\"kind\": \"mlp\"", "\"kind\": \"transformer\""),
        &wbytes,
        Expect::Refused,
    );
    variant(
        "missing_weights_name",
        &swap(
            &format!("\"weights\": \"{weights}\""),
            "\"weights\": \"../../../etc/passwd\"",
        ),
        &wbytes,
        Expect::Refused,
    );
    (good.to_string_lossy().into_owned(), bad)
}

fn cases(fx: &Fixtures) -> Vec<Case> {
    let mut v = vec![];
    let mut add = |expect: Expect, args: Vec<String>| v.push(Case { args, expect });
    let s = |x: &[&str]| x.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let (good_p, bad_p) = problems(fx);
    let (good_x, bad_x) = points(fx);
    let (good_t, bad_t) = tables(fx);
    let (good_ck, bad_ck) = checkpoints(fx);
    let gp = &good_p[0];
    let gx = &good_x[0];

    // Problem files through every command that reads one.
    for (p, e) in bad_p
        .iter()
        .map(|(p, e)| (p, *e))
        .chain(good_p.iter().map(|p| (p, Expect::Either)))
    {
        add(
            e,
            s(&[
                "sample",
                "--problem",
                p,
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ]),
        );
        add(e, s(&["exact", "--problem", p, "--n", "4", "--out", "{out}/s.npy"]));
        add(
            e,
            s(&["likelihood", "--problem", p, "--data", gx, "--out", "{out}/l.npy"]),
        );
        for m in ["tds", "mcgdiff", "dps", "ddrm"] {
            add(
                e,
                s(&[
                    "posterior",
                    "--problem",
                    p,
                    "--method",
                    m,
                    "--n",
                    "4",
                    "--particles",
                    "4",
                    "--steps",
                    "3",
                    "--out",
                    "{out}/s.npy",
                ]),
            );
        }
    }
    // Every posterior method on the good problems, and with extreme settings.
    for p in &good_p {
        for m in [
            "exact",
            "replacement",
            "smc-impute",
            "mcgdiff",
            "tds",
            "dps",
            "pigdm",
            "tmpd",
            "ddrm",
            "dcps",
        ] {
            add(
                Expect::Either,
                s(&[
                    "posterior",
                    "--problem",
                    p,
                    "--method",
                    m,
                    "--n",
                    "4",
                    "--particles",
                    "4",
                    "--steps",
                    "3",
                    "--blocks",
                    "2",
                    "--langevin",
                    "2",
                    "--out",
                    "{out}/s.npy",
                ]),
            );
        }
    }
    // Point files through eval, plot, train, ebm.
    for (x, e) in bad_x
        .iter()
        .map(|(x, e)| (x, *e))
        .chain(good_x.iter().map(|x| (x, Expect::Either)))
    {
        add(e, s(&["eval", "--samples", x, "--reference", gx]));
        add(e, s(&["eval", "--samples", gx, "--reference", x, "--problem", gp]));
        add(e, s(&["plot", "--samples", x, "--out", "{out}/p.png"]));
        add(
            e,
            s(&["likelihood", "--problem", gp, "--data", x, "--out", "{out}/l.npy"]),
        );
        add(
            e,
            s(&[
                "train", "--data", x, "--steps", "2", "--batch", "4", "--hidden", "8", "--out", "{out}/m",
            ]),
        );
        add(
            e,
            s(&[
                "ebm",
                "--model",
                "energy",
                "--data",
                x,
                "--train",
                "ssm",
                "--steps",
                "2",
                "--batch",
                "4",
                "--hidden",
                "8",
                "--langevin-steps",
                "2",
                "--samples",
                "4",
                "--out",
                "{out}/e",
            ]),
        );
    }
    // Tables through impute.
    let fast = [
        "--train-steps",
        "10",
        "--em-rounds",
        "0",
        "--particles",
        "4",
        "--steps",
        "3",
    ];
    for (t, e) in bad_t
        .iter()
        .map(|(t, e)| (t, *e))
        .chain(std::iter::once((&good_t, Expect::Either)))
    {
        let mut a = s(&["impute", "--data", t, "--out", "{out}/o.csv", "--imputations", "2"]);
        a.extend(s(&fast));
        add(e, a);
    }
    // Checkpoints through sample, likelihood, posterior (as a problem's model) and impute --model.
    for (ck, e) in bad_ck
        .iter()
        .map(|(c, e)| (c, *e))
        .chain(std::iter::once((&good_ck, Expect::Either)))
    {
        add(
            e,
            s(&["likelihood", "--model", ck, "--data", gx, "--out", "{out}/l.npy"]),
        );
        add(
            e,
            s(&[
                "sample",
                "--model",
                ck,
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ]),
        );
        if e == Expect::Refused {
            // Resuming writes into the checkpoint: only the broken ones, which must be refused.
            add(
                e,
                s(&[
                    "train",
                    "--data",
                    "builtin:moons",
                    "--resume",
                    "--steps",
                    "4",
                    "--out",
                    ck,
                ]),
            );
        }
        let prob = fx.write(
            &format!("p/model_{}.json", Path::new(ck).file_name().unwrap().to_string_lossy()),
            format!(r#"{{"prior": {{"kind": "model", "path": "{ck}"}}, "operator": {{"kind": "mask", "observed": [0]}}, "y": [0.5], "sigma_y": 0.1}}"#),
        );
        add(
            e,
            s(&[
                "posterior",
                "--problem",
                &prob,
                "--method",
                "tds",
                "--n",
                "4",
                "--particles",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ]),
        );
    }
    // Numeric options: zero, negative, huge, not a number, non-finite.
    let numbers = [
        "0",
        "-1",
        "-0",
        "1e12",
        "18446744073709551616",
        "99999999999999999999999",
        "nan",
        "inf",
        "-inf",
        "1e400",
        "abc",
        "",
    ];
    let lik = |opt: &'static str| {
        (
            vec!["likelihood", "--problem", gp, "--data", gx, "--out", "{out}/l.npy"],
            opt,
        )
    };
    let mut numeric: Vec<(Vec<&str>, &str)> = ["--probes", "--steps", "--rtol", "--atol", "--t-min", "--dequantise"]
        .into_iter()
        .map(lik)
        .collect();
    numeric.extend(vec![
        (
            vec!["sample", "--problem", gp, "--steps", "3", "--out", "{out}/s.npy"],
            "--n",
        ),
        (
            vec!["sample", "--problem", gp, "--n", "4", "--out", "{out}/s.npy"],
            "--steps",
        ),
        (
            vec![
                "sample",
                "--problem",
                gp,
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--b",
        ),
        (
            vec![
                "sample",
                "--problem",
                gp,
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--t-min",
        ),
        (
            vec![
                "sample",
                "--problem",
                gp,
                "--n",
                "4",
                "--steps",
                "3",
                "--sampler",
                "pc",
                "--out",
                "{out}/s.npy",
            ],
            "--snr",
        ),
        (
            vec![
                "sample",
                "--problem",
                gp,
                "--n",
                "4",
                "--steps",
                "3",
                "--sampler",
                "pc",
                "--out",
                "{out}/s.npy",
            ],
            "--corrector-steps",
        ),
        (
            vec![
                "sample",
                "--problem",
                gp,
                "--n",
                "4",
                "--steps",
                "3",
                "--sampler",
                "ddim",
                "--out",
                "{out}/s.npy",
            ],
            "--eta",
        ),
        (vec!["exact", "--problem", gp, "--out", "{out}/s.npy"], "--n"),
        (
            vec!["exact", "--problem", gp, "--n", "4", "--out", "{out}/s.npy"],
            "--seed",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "tds",
                "--steps",
                "3",
                "--particles",
                "4",
                "--out",
                "{out}/s.npy",
            ],
            "--n",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "tds",
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--particles",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "tds",
                "--n",
                "4",
                "--particles",
                "4",
                "--out",
                "{out}/s.npy",
            ],
            "--steps",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "tds",
                "--n",
                "4",
                "--particles",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--ess-threshold",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "dps",
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--zeta",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "ddrm",
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--eta",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "replacement",
                "--n",
                "4",
                "--steps",
                "3",
                "--out",
                "{out}/s.npy",
            ],
            "--jumps",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "dcps",
                "--n",
                "4",
                "--steps",
                "3",
                "--langevin",
                "2",
                "--out",
                "{out}/s.npy",
            ],
            "--blocks",
        ),
        (
            vec![
                "posterior",
                "--problem",
                gp,
                "--method",
                "dcps",
                "--n",
                "4",
                "--steps",
                "3",
                "--blocks",
                "2",
                "--out",
                "{out}/s.npy",
            ],
            "--langevin",
        ),
        (vec!["eval", "--samples", gx, "--reference", gx], "--directions"),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--batch",
                "4",
                "--hidden",
                "8",
                "--out",
                "{out}/m",
            ],
            "--steps",
        ),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--steps",
                "2",
                "--hidden",
                "8",
                "--out",
                "{out}/m",
            ],
            "--batch",
        ),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--steps",
                "2",
                "--batch",
                "4",
                "--out",
                "{out}/m",
            ],
            "--hidden",
        ),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--steps",
                "2",
                "--batch",
                "4",
                "--hidden",
                "8",
                "--out",
                "{out}/m",
            ],
            "--lr",
        ),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--steps",
                "2",
                "--batch",
                "4",
                "--hidden",
                "8",
                "--out",
                "{out}/m",
            ],
            "--n",
        ),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--steps",
                "2",
                "--batch",
                "4",
                "--hidden",
                "8",
                "--out",
                "{out}/m",
            ],
            "--depth",
        ),
        (
            vec![
                "impute",
                "--data",
                &good_t,
                "--out",
                "{out}/o.csv",
                "--train-steps",
                "10",
                "--em-rounds",
                "0",
                "--steps",
                "3",
            ],
            "--particles",
        ),
        (
            vec![
                "impute",
                "--data",
                &good_t,
                "--out",
                "{out}/o.csv",
                "--train-steps",
                "10",
                "--em-rounds",
                "0",
                "--particles",
                "4",
                "--steps",
                "3",
            ],
            "--runs",
        ),
        (
            vec![
                "impute",
                "--data",
                &good_t,
                "--out",
                "{out}/o.csv",
                "--train-steps",
                "10",
                "--particles",
                "4",
                "--steps",
                "3",
                "--em-steps",
                "2",
            ],
            "--em-rounds",
        ),
        (
            vec![
                "impute",
                "--data",
                &good_t,
                "--out",
                "{out}/o.csv",
                "--train-steps",
                "10",
                "--em-rounds",
                "0",
                "--particles",
                "4",
                "--steps",
                "3",
            ],
            "--imputations",
        ),
        (
            vec![
                "impute",
                "--data",
                &good_t,
                "--out",
                "{out}/o.csv",
                "--em-rounds",
                "0",
                "--particles",
                "4",
                "--steps",
                "3",
            ],
            "--train-steps",
        ),
        (
            vec![
                "ebm",
                "--model",
                "rbm",
                "--data",
                "builtin:digits",
                "--epochs",
                "1",
                "--gibbs-steps",
                "2",
                "--out",
                "{out}/e",
            ],
            "--hidden",
        ),
        (
            vec![
                "ebm",
                "--model",
                "rbm",
                "--data",
                "builtin:digits",
                "--hidden",
                "8",
                "--gibbs-steps",
                "2",
                "--out",
                "{out}/e",
            ],
            "--epochs",
        ),
        (
            vec![
                "ebm",
                "--model",
                "rbm",
                "--data",
                "builtin:digits",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--gibbs-steps",
                "2",
                "--out",
                "{out}/e",
            ],
            "--threshold",
        ),
        (
            vec![
                "ebm",
                "--model",
                "rbm",
                "--data",
                "builtin:digits",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--out",
                "{out}/e",
            ],
            "--gibbs-steps",
        ),
        (
            vec![
                "ebm",
                "--model",
                "energy",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--train",
                "dsm",
                "--hidden",
                "8",
                "--steps",
                "2",
                "--langevin-steps",
                "2",
                "--out",
                "{out}/e",
            ],
            "--samples",
        ),
        (
            vec![
                "ebm",
                "--model",
                "energy",
                "--data",
                "builtin:moons",
                "--n",
                "100",
                "--train",
                "cd",
                "--hidden",
                "8",
                "--steps",
                "2",
                "--langevin-steps",
                "2",
                "--samples",
                "4",
                "--out",
                "{out}/e",
            ],
            "--sgld-steps",
        ),
        (vec!["demo", "--out-dir", "{out}/d"], "--n"),
        (
            vec![
                "bench",
                "impute",
                "--data",
                &good_t,
                "--train-steps",
                "10",
                "--em-rounds",
                "0",
                "--particles",
                "4",
                "--steps",
                "3",
            ],
            "--rate",
        ),
        (
            vec![
                "bench",
                "impute",
                "--data",
                &good_t,
                "--train-steps",
                "10",
                "--em-rounds",
                "0",
                "--particles",
                "4",
                "--steps",
                "3",
            ],
            "--repeats",
        ),
    ]);
    for (base, opt) in &numeric {
        for n in numbers {
            let mut a = s(base);
            a.push(opt.to_string());
            a.push(n.to_string());
            // A demo that is allowed to run would take a minute: only refusals are tried.
            if base[0] == "demo" && !matches!(n, "0" | "-1" | "abc" | "" | "1e12" | "nan") {
                continue;
            }
            add(Expect::Either, a);
        }
    }
    // Names and paths.
    let (p_dir, gauss_p) = (fx.path("p"), fx.path("p/gauss.json"));
    let names: Vec<Vec<&str>> = vec![
        vec!["sample", "--problem", gp, "--sampler", "nope", "--out", "{out}/s.npy"],
        vec![
            "sample",
            "--problem",
            gp,
            "--grid",
            "edm:-1",
            "--steps",
            "3",
            "--out",
            "{out}/s.npy",
        ],
        vec!["sample", "--problem", gp, "--grid", "nope", "--out", "{out}/s.npy"],
        vec![
            "sample",
            "--problem",
            gp,
            "--sampler",
            "pc",
            "--predictor",
            "nope",
            "--out",
            "{out}/s.npy",
        ],
        vec!["sample", "--problem", gp, "--out", "{out}/s.txt2"],
        vec!["sample", "--problem", gp, "--out", "{out}/no/such/dir/s.npy"],
        vec!["sample", "--problem", gp, "--out", "{out}"],
        vec!["sample", "--problem", gp, "--out", gp],
        vec!["sample", "--problem", "no/such/file.json", "--out", "{out}/s.npy"],
        vec!["sample", "--problem", &p_dir, "--out", "{out}/s.npy"],
        vec!["sample", "--model", "no/such/dir", "--out", "{out}/s.npy"],
        vec!["sample", "--model", &good_ck, "--class", "3", "--out", "{out}/s.npy"],
        vec![
            "sample",
            "--model",
            &good_ck,
            "--image-grid",
            "{out}/g.png",
            "--n",
            "4",
            "--steps",
            "3",
            "--out",
            "{out}/s.npy",
        ],
        vec!["sample", "--out", "{out}/s.npy"],
        vec!["posterior", "--problem", gp, "--method", "nope", "--out", "{out}/s.npy"],
        vec![
            "posterior",
            "--problem",
            gp,
            "--method",
            "tds",
            "--resampling",
            "nope",
            "--out",
            "{out}/s.npy",
        ],
        vec!["posterior", "--problem", gp, "--method", "tds", "--out", gp],
        vec!["exact", "--problem", gp, "--out", gp],
        vec!["eval", "--samples", gx, "--reference", "no/such.npy"],
        vec!["eval", "--samples", gx, "--reference", gx, "--problem", &gauss_p],
        vec!["plot", "--samples", gx, "--out", "{out}/p.jpg"],
        vec!["plot", "--samples", gx, "--out", gx],
        vec!["plot", "--samples", gx, "--image-shape", "3x3", "--out", "{out}/p.png"],
        vec!["plot", "--samples", gx, "--image-shape", "0x2", "--out", "{out}/p.png"],
        vec![
            "plot",
            "--samples",
            gx,
            "--image-shape",
            "99999999999x99999999999",
            "--out",
            "{out}/p.png",
        ],
        vec!["plot", "--samples", "builtin:nope", "--out", "{out}/p.png"],
        vec!["train", "--data", "builtin:nope", "--out", "{out}/m"],
        vec!["train", "--data", gx, "--out", gx],
        vec!["train", "--data", gx, "--model", "cnn", "--out", "{out}/m"],
        vec!["train", "--data", gx, "--param", "nope", "--out", "{out}/m"],
        vec!["train", "--data", gx, "--loss", "nope", "--out", "{out}/m"],
        vec!["train", "--data", gx, "--time-sampling", "nope", "--out", "{out}/m"],
        vec![
            "train",
            "--data",
            gx,
            "--label-column",
            "7",
            "--steps",
            "2",
            "--out",
            "{out}/m",
        ],
        vec![
            "train", "--data", gx, "--labels", gx, "--steps", "2", "--out", "{out}/m",
        ],
        vec![
            "train",
            "--data",
            "builtin:digits",
            "--model",
            "unet",
            "--image-shape",
            "3x3",
            "--steps",
            "2",
            "--out",
            "{out}/m",
        ],
        vec![
            "train",
            "--data",
            "builtin:digits",
            "--model",
            "unet",
            "--channels",
            "0,8",
            "--steps",
            "2",
            "--out",
            "{out}/m",
        ],
        vec![
            "train",
            "--data",
            "builtin:digits",
            "--model",
            "unet",
            "--channels",
            "1000000000,8",
            "--steps",
            "2",
            "--out",
            "{out}/m",
        ],
        vec![
            "train",
            "--data",
            "builtin:digits",
            "--model",
            "unet",
            "--blocks",
            "1000000000000",
            "--steps",
            "2",
            "--out",
            "{out}/m",
        ],
        vec!["impute", "--data", &good_t, "--method", "exact", "--out", "{out}/o.csv"],
        vec!["impute", "--data", &good_t, "--method", "nope", "--out", "{out}/o.csv"],
        vec![
            "impute",
            "--data",
            &good_t,
            "--categorical",
            "zzz",
            "--out",
            "{out}/o.csv",
        ],
        vec![
            "impute",
            "--data",
            &good_t,
            "--categorical",
            "99",
            "--out",
            "{out}/o.csv",
        ],
        vec!["impute", "--data", &good_t, "--out", &good_t],
        vec!["impute", "--data", &good_t, "--out", "{out}/o.npy"],
        vec!["impute", "--data", &good_t, "--model", &good_ck, "--out", "{out}/o.csv"],
        vec!["impute", "--data", "builtin:nope", "--out", "{out}/o.csv"],
        vec!["ebm", "--model", "nope", "--data", gx, "--out", "{out}/e"],
        vec![
            "ebm", "--model", "energy", "--data", gx, "--train", "nope", "--out", "{out}/e",
        ],
        vec![
            "ebm",
            "--model",
            "energy",
            "--data",
            gx,
            "--sampler",
            "nope",
            "--out",
            "{out}/e",
        ],
        vec!["ebm", "--model", "rbm", "--data", gx, "--out", "{out}/e"],
        vec!["ebm", "--model", "rbm", "--data", "builtin:digits", "--out", gx],
        vec!["bench", "impute", "--data", "no/such.csv"],
        vec!["bench", "impute", "--data", &good_t, "--mechanism", "nope"],
        vec!["bench", "nope"],
        vec!["bench", "train", "--dims", "0"],
        vec!["bench", "train", "--steps", "0"],
        vec!["bench", "train", "--infer-batch", "0"],
        vec!["bench", "train", "--dims", "1000000000"],
        vec!["bench", "sample", "--dims", "0"],
        vec!["bench", "sample", "--particles", "0"],
        vec!["bench", "sample", "--steps", "0"],
        vec!["bench", "sample", "--dims", "abc"],
        vec!["bench", "gmm", "--problems", "0"],
        vec!["bench", "gmm", "--dx", "0"],
        vec!["bench", "gmm", "--problems", "-1"],
        vec!["bench", "impute-gauss", "--particles", "0"],
        vec!["bench", "digits", "--model", "no/such/dir"],
        vec!["bench", "sample", "--particles", "100000000000"],
        vec!["bench", "sample", "--steps", "100000000000"],
        vec!["bench", "gmm", "--particles", "100000000000"],
        vec!["bench", "impute-gauss", "--particles", "100000000000"],
        vec!["bench", "impute-gauss", "--runs", "100000000000"],
        vec!["bench", "gmm", "--jobs", "0"],
        vec!["bench", "gmm", "--resamples", "0"],
        vec!["bench", "gmm", "--problems", "2", "--only-problem", "5"],
        vec!["bench", "gmm", "--methods", "dcps,dcps500"],
        vec!["bench", "gmm", "--methods", "smc-impute"],
        vec!["bench", "gmm", "--methods", "dcps", "--dcps-blocks", "0"],
        vec!["bench", "quality", "--sets", "nope", "--out", "{out}/q"],
        vec!["bench", "quality", "--n-eval", "1", "--out", "{out}/q"],
        vec!["bench", "quality", "--param", "nope", "--out", "{out}/q"],
        vec!["bench", "quality", "--time-sampling", "nope", "--out", "{out}/q"],
        vec!["bench", "impute", "--time-sampling", "nope"],
        vec!["bench", "quality", "--steps", "0", "--out", "{out}/q"],
        vec![
            "train",
            "--data",
            "builtin:moons",
            "--process",
            "nope",
            "--out",
            "{out}/m",
        ],
        vec![
            "train",
            "--data",
            "builtin:moons",
            "--param",
            "nope",
            "--out",
            "{out}/m",
        ],
        vec![
            "train",
            "--data",
            "builtin:moons",
            "--time-sampling",
            "nope",
            "--out",
            "{out}/m",
        ],
        vec![
            "posterior",
            "--problem",
            gp,
            "--method",
            "pigdm",
            "--pigdm-update",
            "nope",
            "--out",
            "{out}/p.npy",
        ],
        vec![
            "posterior",
            "--problem",
            gp,
            "--method",
            "dcps",
            "--langevin-step",
            "-1",
            "--out",
            "{out}/p.npy",
        ],
        vec!["nope"],
        vec!["sample", "--problem", gp, "--max-memory", "0", "--out", "{out}/s.npy"],
        vec!["sample", "--problem", gp, "--max-memory", "1K", "--out", "{out}/s.npy"],
    ];
    for a in names {
        add(Expect::Refused, s(&a));
    }
    v
}

/// Runs one case with the caps; `None` when it ran past the time limit.
fn run_capped(args: &[String], out: &Path) -> Option<std::process::Output> {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{out}", &out.to_string_lossy()))
        .collect();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_CAP_KIB}; exec \"$0\" --quiet \"$@\""))
        .arg(env!("CARGO_BIN_EXE_scoregen"))
        .args(&args)
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes while waiting, so that a long message cannot block the child.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = vec![];
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out_t = drain(Box::new(child.stdout.take().unwrap()));
    let err_t = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Some(std::process::Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    })
}

/// Every `.npy` / `.csv` output below `dir` must be readable with finite numbers.
fn check_outputs(dir: &Path) -> Result<(), String> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| e.to_string())?.flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains("scoregen-stage") || name.contains(".tmp") {
                return Err(format!("staging file left: {}", p.display()));
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 0 {
                return Err(format!("empty output {}", p.display()));
            }
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext == "npy" || (ext == "csv" && !d.ends_with("-model")) {
                if ext == "csv" {
                    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    let lower = text.to_lowercase();
                    if lower.contains("nan") || lower.contains("inf") {
                        return Err(format!("non-finite value in {}", p.display()));
                    }
                    continue;
                }
                let x = scoregen::data::read_points(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let v: Vec<f64> = x
                    .to_dtype(candle_core::DType::F64)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1())
                    .map_err(|e| e.to_string())?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(format!("non-finite value in {}", p.display()));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn hostile_inputs_never_crash_hang_or_lose_files() {
    let root = common::tmpdir("campaign");
    let fx = Fixtures { dir: root.join("fx") };
    std::fs::create_dir_all(&fx.dir).unwrap();
    let cases = cases(&fx);
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let before = snapshot(&fx.dir);
    let verbose = std::env::var_os("SCOREGEN_CAMPAIGN_VERBOSE").is_some();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(vec![]);
    let counts = Mutex::new([0usize; 2]);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let out = root.join(format!("out{i}"));
                std::fs::create_dir_all(&out).unwrap();
                let shown = case.args.join(" ");
                let fail = |why: String| {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("case {i}: scoregen {shown}\n    {why}"))
                };
                let t = Instant::now();
                let Some(o) = run_capped(&case.args, &out) else {
                    fail(format!("no answer within {TIME_LIMIT:?} (hang)"));
                    continue;
                };
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                if verbose {
                    eprintln!(
                        "[{i}] {:?} {:.2}s scoregen {shown}\n    {}",
                        o.status.code(),
                        t.elapsed().as_secs_f64(),
                        err.trim_end()
                    );
                }
                match o.status.code() {
                    Some(0) => {
                        counts.lock().unwrap()[0] += 1;
                        if case.expect == Expect::Refused {
                            fail(format!("exit 0, expected a refusal (exit 2); stderr: {err}"));
                        } else if let Err(e) = check_outputs(&out) {
                            fail(e);
                        }
                    }
                    Some(2) => {
                        counts.lock().unwrap()[1] += 1;
                        let lines: Vec<&str> = err.trim_end().lines().collect();
                        let debug = [
                            "panicked",
                            "Os {",
                            "{ code:",
                            "RUST_BACKTRACE",
                            "candle_core::",
                            "std::rt::",
                            "stack backtrace",
                        ];
                        if lines.len() != 1 || !lines[0].starts_with("error: ") {
                            fail(format!("a refusal must be one `error:` line, got: {err}"));
                        } else if lines[0].chars().count() > 600 {
                            fail(format!("error line of {} characters", lines[0].chars().count()));
                        } else if let Some(d) = debug.iter().find(|d| lines[0].contains(*d)) {
                            fail(format!("debug text '{d}' in: {}", lines[0]));
                        }
                        let left: Vec<_> = std::fs::read_dir(&out)
                            .unwrap()
                            .flatten()
                            .map(|e| e.file_name())
                            .collect();
                        if !left.is_empty() {
                            fail(format!("refused, but left {left:?}"));
                        }
                    }
                    code => fail(format!("exit {code:?} (signal or crash); stderr: {}", err.trim_end())),
                }
                let _ = std::fs::remove_dir_all(&out);
            });
        }
    });
    let after = snapshot(&fx.dir);
    let mut changed: Vec<String> = before
        .iter()
        .filter(|(p, h)| after.get(*p) != Some(h))
        .map(|(p, _)| format!("input changed or removed: {}", p.display()))
        .collect();
    changed.extend(
        after
            .keys()
            .filter(|p| !before.contains_key(*p))
            .map(|p| format!("file appeared among the inputs: {}", p.display())),
    );
    let mut failures = failures.into_inner().unwrap();
    failures.extend(changed);
    let [ok, refused] = *counts.lock().unwrap();
    eprintln!(
        "campaign: {} cases, {ok} ran, {refused} refused, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&root);
}
