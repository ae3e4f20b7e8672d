//! The resource budget: huge sizes and counts are refused with one line naming the option,
//! before anything is allocated (these runs would otherwise abort or run for ever).

mod common;
use common::{run, tmpdir};

const PROBLEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mixture2d.json");

fn assert_names(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{args:?}: '{err}' should mention '{needle}'"
    );
}

#[test]
fn huge_sizes_and_counts_are_refused_before_any_work() {
    let d = tmpdir("budget");
    let out = d.join("o.npy");
    let o = out.to_str().unwrap();
    let m = d.join("m");
    let m = m.to_str().unwrap();
    let t = d.join("t.csv");
    std::fs::write(&t, "a,b\n1,\n2,3\n").unwrap();
    let t = t.to_str().unwrap();
    let x = d.join("x.csv");
    let x = x.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["sample", "--problem", PROBLEM, "--n", "1000000000000", "--out", o],
            "lower --n",
        ),
        (
            vec!["sample", "--problem", PROBLEM, "--steps", "10000000000", "--out", o],
            "--steps 10000000000",
        ),
        (vec!["sample", "--problem", PROBLEM, "--n", "-1", "--out", o], "'--n"),
        (
            vec!["exact", "--problem", PROBLEM, "--n", "100000000000", "--out", o],
            "lower --n",
        ),
        (
            vec!["train", "--data", "builtin:moons", "--n", "100000000000", "--out", m],
            "lower --n",
        ),
        (
            vec!["train", "--data", "builtin:moons", "--hidden", "10000000", "--out", m],
            "lower --hidden",
        ),
        (
            vec![
                "train",
                "--data",
                "builtin:moons",
                "--batch",
                "100000000000",
                "--out",
                m,
            ],
            "lower --batch",
        ),
        (
            vec!["impute", "--data", t, "--runs", "1000000000000", "--out", x],
            "--runs",
        ),
        (
            vec!["impute", "--data", t, "--em-rounds", "1000000000000", "--out", x],
            "--em-rounds",
        ),
        (
            vec!["impute", "--data", t, "--imputations", "100000000", "--out", x],
            "--imputations",
        ),
        (
            vec!["impute", "--data", t, "--particles", "100000000000", "--out", x],
            "lower --particles",
        ),
        (
            vec![
                "ebm",
                "--model",
                "rbm",
                "--data",
                "builtin:digits",
                "--hidden",
                "100000000000",
                "--out",
                m,
            ],
            "lower --hidden",
        ),
        (
            vec!["eval", "--samples", o, "--reference", o, "--directions", "100000000000"],
            "--directions",
        ),
        (
            vec![
                "posterior",
                "--problem",
                PROBLEM,
                "--method",
                "tds",
                "--steps",
                "1000000000000",
                "--out",
                o,
            ],
            "--steps",
        ),
        (
            vec![
                "sample",
                "--problem",
                PROBLEM,
                "--n",
                "10000000",
                "--out",
                o,
                "--max-memory",
                "100M",
            ],
            "--max-memory limit",
        ),
        (
            vec!["sample", "--problem", PROBLEM, "--out", o, "--max-memory", "lots"],
            "--max-memory",
        ),
    ];
    for (args, needle) in cases {
        assert_names(&args, needle);
    }
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only t.csv: {left:?}");
}
