//! Property-based fuzzing of the readers of user files (issue 15): the problem file
//! (`Problem`), `.npy` arrays, numeric CSV tables and the mixed tables of `impute`.
//!
//! Each reader gets (a) arbitrary bytes and (b) structured mutations of valid files
//! (hostile values at any node of a JSON document; hostile cells, ragged rows, blank lines
//! and quoting in CSV; hostile shapes, dtypes and lengths in `.npy` headers; then byte-level
//! truncation, flips and insertions). The property, always: no panic, no abort, no hang,
//! and either an error that is one line and a user error (exit 2), or a value that
//! satisfies the reader's invariants (finite numbers, consistent shapes, normalised
//! weights, orthonormal SVD factors, every row kept).
//!
//! Sized for CI: about 4,000 cases in all, a few seconds in release mode.

mod fuzz_util;

use fuzz_util::{
    byte_muts, check_err, config, json_muts, mutate_bytes, mutate_json, nasty_count, nasty_value, replace_node,
    sweep_nodes, TempDir,
};
use proptest::prelude::*;
use scoregen::data::{read_csv, read_npy, read_npy_f64, CsvOptions, HeaderMode};
use scoregen::impute::{ColumnKind, MixedTable};
use scoregen::inverse::{Operator, Prior, Problem};
use serde_json::{json, Value};

/// The size limit on any matrix implied by a problem file (`MAX_MATRIX_ENTRIES`).
const MAX_ENTRIES: usize = 1 << 25;

// ---------------------------------------------------------------------------------------
// Problem files
// ---------------------------------------------------------------------------------------

/// Valid problem files covering every prior and operator kind.
fn problem_templates() -> Vec<Value> {
    let s = std::f64::consts::FRAC_1_SQRT_2;
    let g16 = json!({"kind": "gaussian", "mean": vec![0.0; 16], "variance": 1.0});
    vec![
        json!({"prior": {"kind": "gaussian_mixture", "weights": [1, 3], "means": [[0, 0], [2, 1]],
                         "covariances": [[[1, 0.2], [0.2, 1]], [[2, 0], [0, 0.5]]]},
               "operator": {"kind": "dense", "matrix": [[1, 0.5]]}, "y": [0.3], "sigma_y": 0.3}),
        json!({"prior": {"kind": "gaussian", "mean": [0, 1, 2, 3], "variance": 2},
               "operator": {"kind": "mask", "observed": [0, 2]}, "y": [0.1, -0.2], "sigma_y": 0}),
        json!({"prior": {"kind": "gaussian_mixture", "weights": [0.5, 0.5], "means": [[0, 0, 0], [1, 1, 1]],
                         "variances": [[1, 2, 3], [1, 1, 1]]},
               "operator": {"kind": "svd", "u": [[1, 0], [0, 1]], "s": [2, 1],
                            "v": [[s, 0], [s, 0], [0, 1]]},
               "y": [0.5, 0.5], "sigma_y": 0.1}),
        json!({"prior": g16, "operator": {"kind": "blur", "sigma": 0.7}, "y": vec![0.0; 16], "sigma_y": 0.1}),
        json!({"prior": g16, "operator": {"kind": "superres", "factor": 2, "image": [4, 4]},
               "y": vec![0.0; 4], "sigma_y": 0.1}),
        json!({"prior": g16, "operator": {"kind": "inpaint_box", "box": [1, 1, 2, 2]},
               "y": vec![0.0; 12], "sigma_y": 0.1}),
        json!({"prior": g16, "operator": {"kind": "outpaint_half", "keep": "left", "image": [4, 4]},
               "y": vec![0.0; 8]}),
        json!({"prior": {"kind": "model", "path": "ckpt"},
               "operator": {"kind": "mask", "dim": 6, "observed": [5, 1]}, "y": [1, 2], "sigma_y": 0.2}),
        json!({"prior": {"kind": "model", "path": "ckpt"},
               "operator": {"kind": "blur", "sigma": 1.5, "image": [3, 5]}, "y": vec![0.0; 15]}),
        json!({"prior": {"kind": "gaussian_mixture", "weights": [1, 1, 1], "means": [[0], [1], [2]],
                         "variance": [1, 2, 3]}}),
        json!({"prior": {"kind": "gaussian_mixture", "weights": [1], "means": [[0, 0]], "variance": 1},
               "operator": {"kind": "dense", "matrix": [[1, 0], [0, 1]]}, "y": [0, 0]}),
    ]
}

/// `max |A^T A - I|` over the columns of the row-major `n x r` matrix `a` kept by `keep`.
fn orthonormality_defect(a: &[f64], n: usize, r: usize, keep: &[bool]) -> f64 {
    let mut worst = 0.0f64;
    for i in (0..r).filter(|&i| keep[i]) {
        for j in (0..r).filter(|&j| keep[j]) {
            let g: f64 = (0..n).map(|k| a[k * r + i] * a[k * r + j]).sum();
            let dev = (g - if i == j { 1.0 } else { 0.0 }).abs();
            worst = if dev.is_nan() { f64::INFINITY } else { worst.max(dev) };
        }
    }
    worst
}

/// The invariants of a problem that parsed.
fn check_problem(p: &Problem) -> Result<(), TestCaseError> {
    let dx = match &p.prior {
        Prior::Mixture(m) => {
            let d = m.dim();
            prop_assert!(d >= 1);
            prop_assert!(d * d <= MAX_ENTRIES, "prior dimension {d}");
            let w = m.weights();
            prop_assert_eq!(w.len(), m.n_components());
            prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "weights {w:?}");
            let total: f64 = w.iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "weights {w:?} sum to {total}");
            prop_assert!(m.means().iter().flatten().all(|x| x.is_finite()));
            // The law can be sampled and its draws are finite.
            let x = m.sample(3, &scoregen::rng::Noise::new(1), 0);
            prop_assert_eq!(x.len(), 3 * d);
            Some(d)
        }
        Prior::Model(_) => None,
    };
    if let Some(op) = &p.operator {
        let (dy, c) = op.shape();
        if let Some(d) = dx {
            prop_assert_eq!(c, d, "operator and prior dimensions");
        }
        prop_assert!(
            (1..=MAX_ENTRIES).contains(&c) && dy.saturating_mul(c) <= MAX_ENTRIES,
            "{dy}x{c}"
        );
        match op {
            Operator::Dense { rows, cols, a } => {
                prop_assert_eq!(a.len(), rows * cols);
                prop_assert!(a.iter().all(|x| x.is_finite()));
            }
            Operator::Mask { dim, observed } => {
                let mut seen = std::collections::HashSet::new();
                prop_assert!(observed.iter().all(|&i| i < *dim && seen.insert(i)), "{observed:?}");
            }
            Operator::Svd { rows, cols, u, s, v } => {
                let r = s.len();
                prop_assert_eq!(u.len(), rows * r);
                prop_assert_eq!(v.len(), cols * r);
                prop_assert!(s.iter().all(|x| x.is_finite() && *x >= 0.0));
                let keep: Vec<bool> = s.iter().map(|x| *x > 0.0).collect();
                let du = orthonormality_defect(u, *rows, r, &keep);
                let dv = orthonormality_defect(v, *cols, r, &keep);
                prop_assert!(du <= 1e-6 && dv <= 1e-6, "svd factors not orthonormal: {du:e}, {dv:e}");
            }
        }
        // Small operators: the SVD the posterior methods use, and one application.
        if dy * c <= 4096 {
            match op.svd() {
                Ok(f) => prop_assert!(f.s.iter().chain(&f.u).chain(&f.v).all(|x| x.is_finite())),
                Err(e) => check_err(&e)?,
            }
            let ax = op.apply_rows(&vec![1.0; c]);
            prop_assert_eq!(ax.len(), dy);
        }
        let y = p.y.as_ref().expect("an operator comes with y");
        prop_assert_eq!(y.len(), dy);
    }
    if let Some(y) = &p.y {
        prop_assert!(y.iter().all(|x| x.is_finite()));
    }
    if let Some(s) = p.sigma_y {
        prop_assert!(s.is_finite() && s >= 0.0);
    }
    Ok(())
}

fn problem_case(text: &str) -> Result<(), TestCaseError> {
    match Problem::from_json(text, None) {
        Ok(p) => check_problem(&p),
        Err(e) => check_err(&e),
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn problem_json_structured_mutations(t in 0usize..problem_templates().len(), muts in json_muts(4)) {
        let doc = mutate_json(problem_templates()[t].clone(), &muts);
        problem_case(&doc.to_string())?;
    }

    #[test]
    fn problem_json_byte_mutations(t in 0usize..problem_templates().len(), jm in json_muts(1), bm in byte_muts(3)) {
        let text = mutate_json(problem_templates()[t].clone(), &jm).to_string();
        let bytes = mutate_bytes(text.into_bytes(), &bm);
        // The file reader: non-UTF-8 is an error naming the file.
        let dir = TempDir::new("problem");
        let path = dir.join("p.json");
        std::fs::write(&path, &bytes).unwrap();
        match Problem::from_file(&path) {
            Ok(p) => check_problem(&p)?,
            Err(e) => check_err(&e)?,
        }
    }
}

/// Systematically, every node of every template replaced by every hostile value (about
/// 40,000 problem files): single-field bugs (`means: [[]]`, weights `[1e308, 1e308]`, a
/// huge mask `dim`, a blur `sigma` of 1e5, a multi-byte string in a numeric field) cannot
/// hide behind the odds of a random draw.
#[test]
fn problem_json_every_node_every_hostile_value() {
    for (t, doc) in problem_templates().iter().enumerate() {
        for i in sweep_nodes(doc) {
            for k in 0..nasty_count() {
                let text = replace_node(doc, i, nasty_value(k)).to_string();
                if let Err(e) = problem_case(&text) {
                    panic!("template {t}, node {i}, value {k}: {e}\n{text:.400}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn problem_json_arbitrary_text(s in ".{0,200}") {
        problem_case(&s)?;
    }

    #[test]
    fn problem_json_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
        problem_case(&String::from_utf8_lossy(&b))?;
    }
}

// ---------------------------------------------------------------------------------------
// .npy arrays
// ---------------------------------------------------------------------------------------

/// A `.npy` file (format `major.0`) from a header dict and raw data, padded as numpy does.
fn npy_file(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let len_bytes = if major == 1 { 2 } else { 4 };
    let mut header = dict.as_bytes().to_vec();
    let pad = (64 - (8 + len_bytes + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([major, 0]);
    if major == 1 {
        out.extend((header.len() as u16).to_le_bytes());
    } else {
        out.extend((header.len() as u32).to_le_bytes());
    }
    out.extend(&header);
    out.extend(data);
    out
}

/// Hostile pieces of a `.npy` header dict.
const DESCRS: [&str; 12] = [
    "<f8",
    "<f4",
    ">f8",
    ">f4",
    "<i8",
    "<f2",
    "|u1",
    "<c16",
    "<f16",
    "<U10",
    "<f99999999999999999999",
    "",
];
const SHAPES: [&str; 14] = [
    "(2, 3)",
    "(6,)",
    "(3, 2)",
    "()",
    "(0, 3)",
    "(1, 1, 6)",
    "(18446744073709551615, 2)",
    "(4294967296, 4294967296)",
    "(9223372036854775807, 9223372036854775807)",
    "(-1, 6)",
    "(2, 3",
    "(1e3, 2)",
    "('a', 2)",
    "(6, 1)",
];

/// The invariants of an array that was read.
fn check_npy(path: &std::path::Path) -> Result<(), TestCaseError> {
    match read_npy(path) {
        Ok(t) => {
            let (n, d) = t.dims2().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(n >= 1 && d >= 1);
            let (flat, n2, d2) = read_npy_f64(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((n2, d2), (n, d));
            prop_assert_eq!(flat.len(), n * d);
        }
        Err(e) => check_err(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn npy_structured_mutations(
        major in prop::sample::select(vec![1u8, 2, 3, 0, 4]),
        descr in 0usize..DESCRS.len(),
        fortran in any::<bool>(),
        shape in 0usize..SHAPES.len(),
        n_values in 0usize..10,
        extra_keys in any::<bool>(),
        bm in byte_muts(3),
    ) {
        let dict = format!(
            "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, {}}}",
            DESCRS[descr],
            if fortran { "True" } else { "False" },
            SHAPES[shape],
            if extra_keys { "'x': 1, " } else { "" },
        );
        let data: Vec<u8> = (0..n_values).flat_map(|i| (i as f64 * 1.5 - 3.0).to_le_bytes()).collect();
        let bytes = mutate_bytes(npy_file(major, &dict, &data), &bm);
        let dir = TempDir::new("npy");
        let path = dir.join("x.npy");
        std::fs::write(&path, &bytes).unwrap();
        check_npy(&path)?;
    }

    #[test]
    fn npy_arbitrary_bytes(prefix in any::<bool>(), b in prop::collection::vec(any::<u8>(), 0..200)) {
        // Half of the cases start with the magic, so that the header parser is reached.
        let mut bytes = if prefix { b"\x93NUMPY".to_vec() } else { vec![] };
        bytes.extend(b);
        let dir = TempDir::new("npy");
        let path = dir.join("x.npy");
        std::fs::write(&path, &bytes).unwrap();
        check_npy(&path)?;
    }
}

// ---------------------------------------------------------------------------------------
// CSV tables (the data reader and the impute table reader)
// ---------------------------------------------------------------------------------------

/// Hostile CSV cells.
const CELLS: [&str; 24] = [
    "1",
    "-2.5",
    "",
    " ",
    "NA",
    "nan",
    "null",
    "inf",
    "-inf",
    "1e309",
    "1e-400",
    "-0",
    "abc",
    "ééééééééééééééééééééééééééééééé",
    "\"quoted, with comma\"",
    "\"multi\nline\"",
    "\"",
    "1,2",
    "0x10",
    "١",
    "\u{0}",
    "\u{feff}1",
    "99999999999999999999999999999999999999999999",
    "label",
];

/// A CSV text from `rows` of cell indices, an optional header, line ends and blank lines.
fn csv_text(header: Option<usize>, rows: &[Vec<usize>], crlf: bool, blanks: &[usize]) -> String {
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = Vec::new();
    if let Some(c) = header {
        lines.push((0..c).map(|j| format!("c{j}")).collect::<Vec<_>>().join(","));
    }
    for r in rows {
        lines.push(r.iter().map(|&k| CELLS[k % CELLS.len()]).collect::<Vec<_>>().join(","));
    }
    for &b in blanks {
        let at = b % (lines.len() + 1);
        lines.insert(at, String::new());
    }
    lines.join(eol) + eol
}

fn csv_rows() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..4).prop_flat_map(|cols| {
        prop::collection::vec(
            prop::collection::vec(prop_oneof![3 => 0usize..2, 1 => 0usize..CELLS.len()], cols..=cols),
            0..6,
        )
    })
}

/// The invariants of a numeric table.
fn check_table(t: &scoregen::data::Table, allow_missing: bool) -> Result<(), TestCaseError> {
    prop_assert!(t.rows >= 1 && t.cols >= 1);
    prop_assert_eq!(t.values.len(), t.rows * t.cols);
    prop_assert_eq!(t.raw.len(), t.rows);
    prop_assert!(t.raw.iter().all(|r| r.len() == t.cols));
    prop_assert_eq!(t.lines.len(), t.rows);
    prop_assert!(t.lines.windows(2).all(|w| w[0] < w[1]), "lines {:?}", t.lines);
    prop_assert!(t.values.iter().all(|v| v.is_finite() || (allow_missing && v.is_nan())));
    if let Some(h) = &t.header {
        prop_assert_eq!(h.len(), t.cols);
    }
    Ok(())
}

/// The invariants of a mixed table.
fn check_mixed(t: &MixedTable) -> Result<(), TestCaseError> {
    prop_assert!(t.rows >= 1 && t.cols >= 1);
    prop_assert_eq!(t.header.len(), t.cols);
    prop_assert_eq!(t.kinds.len(), t.cols);
    prop_assert_eq!(t.cells.len(), t.rows * t.cols);
    prop_assert_eq!(t.raw.len(), t.rows);
    prop_assert_eq!(t.lines.len(), t.rows);
    for i in 0..t.rows {
        for j in 0..t.cols {
            let v = t.cells[i * t.cols + j];
            match &t.kinds[j] {
                ColumnKind::Numeric { .. } => prop_assert!(v.is_finite() || v.is_nan()),
                ColumnKind::Categorical { levels } => {
                    prop_assert!(v.is_nan() || (v.fract() == 0.0 && v >= 0.0 && (v as usize) < levels.len()))
                }
            }
        }
    }
    Ok(())
}

fn data_csv_case(bytes: &[u8], header: HeaderMode, allow_missing: bool) -> Result<(), TestCaseError> {
    let dir = TempDir::new("csv");
    let path = dir.join("t.csv");
    std::fs::write(&path, bytes).unwrap();
    let opts = CsvOptions {
        header,
        allow_missing,
        ..CsvOptions::default()
    };
    match read_csv(&path, &opts) {
        Ok(t) => check_table(&t, allow_missing),
        Err(e) => check_err(&e),
    }
}

fn mixed_case(bytes: &[u8], categorical: &[String]) -> Result<(), TestCaseError> {
    match MixedTable::parse("t.csv", bytes, categorical) {
        Ok(t) => check_mixed(&t),
        Err(e) => check_err(&e),
    }
}

const HEADERS: [HeaderMode; 3] = [HeaderMode::Auto, HeaderMode::Yes, HeaderMode::No];

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn csv_structured_mutations(
        header in prop::option::of(1usize..4),
        rows in csv_rows(),
        crlf in any::<bool>(),
        blanks in prop::collection::vec(any::<usize>(), 0..3),
        mode in 0usize..3,
        allow_missing in any::<bool>(),
        bm in byte_muts(2),
    ) {
        let bytes = mutate_bytes(csv_text(header, &rows, crlf, &blanks).into_bytes(), &bm);
        data_csv_case(&bytes, HEADERS[mode], allow_missing)?;
        let cat = if mode == 0 { vec![] } else { vec!["c0".to_string()] };
        mixed_case(&bytes, &cat)?;
    }

    /// A one-column file with missing cells written as empty lines (as `pandas.to_csv`
    /// and `numpy.savetxt` do): every row is kept, the empty ones as missing values.
    #[test]
    fn csv_one_column_keeps_every_row(
        first in -1000i32..1000,
        middle in prop::collection::vec(prop::option::of(-1000i32..1000), 0..10),
        last in -1000i32..1000,
        crlf in any::<bool>(),
    ) {
        // Blank lines before the first row and after the last are not rows: the first and
        // last cells are present.
        let cells: Vec<Option<i32>> = std::iter::once(Some(first))
            .chain(middle)
            .chain(std::iter::once(Some(last)))
            .collect();
        let eol = if crlf { "\r\n" } else { "\n" };
        let body: String = cells.iter().map(|c| c.map_or(String::new(), |v| v.to_string()) + eol).collect();
        let dir = TempDir::new("csv1");
        let path = dir.join("one.csv");
        std::fs::write(&path, &body).unwrap();
        let opts = CsvOptions { allow_missing: true, ..CsvOptions::default() };
        let t = read_csv(&path, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_table(&t, true)?;
        prop_assert_eq!(t.rows, cells.len(), "rows vanished from {:?}", body);
        for (i, c) in cells.iter().enumerate() {
            prop_assert_eq!(t.values[i].is_nan(), c.is_none(), "row {}", i + 1);
            prop_assert_eq!(t.lines[i], i as u64 + 1);
        }
        let with_header = format!("x{eol}{body}");
        let m = MixedTable::parse("one.csv", with_header.as_bytes(), &[])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_mixed(&m)?;
        prop_assert_eq!(m.rows, cells.len(), "rows vanished from {:?}", with_header);
        for (i, c) in cells.iter().enumerate() {
            prop_assert_eq!(m.cells[i].is_nan(), c.is_none(), "row {}", i + 1);
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn csv_arbitrary_bytes(
        b in prop::collection::vec(prop_oneof![3 => prop::sample::select(b"0123456789.,-e\n\r\" aN".to_vec()), 1 => any::<u8>()], 0..120),
        mode in 0usize..3,
        allow_missing in any::<bool>(),
    ) {
        data_csv_case(&b, HEADERS[mode], allow_missing)?;
        mixed_case(&b, &[])?;
    }
}
