//! `scoregen posterior`: every method on a problem file, exact observations kept, bad input
//! exits with code 2 and writes nothing, seeds reproduce bytes.

mod common;
use common::{assert_user_error, run, tmpdir, write};

const DECK000: &str = r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "covariance": [[1, 1.5], [1.5, 5]]},
 "operator": {"kind": "mask", "observed": [0]}, "y": [0.5], "sigma_y": 0}"#;

#[test]
fn every_method_writes_samples_and_keeps_exact_observations() {
    let d = tmpdir("methods");
    let p = write(&d, "p.json", DECK000);
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
    ] {
        let out = d.join(format!("{m}.npy"));
        let o = run(&[
            "posterior",
            "--problem",
            &p,
            "--method",
            m,
            "--n",
            "200",
            "--particles",
            "100",
            "--steps",
            "50",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{m}: {}", String::from_utf8_lossy(&o.stderr));
        let x = scoregen::data::read_points(&out).unwrap();
        assert_eq!(x.dims(), &[200, 2], "{m}");
        if matches!(m, "exact" | "replacement" | "smc-impute" | "mcgdiff" | "tds") {
            let v: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                v.chunks(2).all(|r| (r[0] - 0.5).abs() < 1e-9),
                "{m}: observed coordinate changed"
            );
        }
    }
    // Same seed, same bytes; another seed differs.
    let (a, b, c) = (d.join("a.npy"), d.join("b.npy"), d.join("c.npy"));
    for (out, seed) in [(&a, "3"), (&b, "3"), (&c, "4")] {
        let o = run(&[
            "posterior",
            "--problem",
            &p,
            "--method",
            "mcgdiff",
            "--n",
            "100",
            "--particles",
            "50",
            "--steps",
            "30",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success());
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

#[test]
fn bad_posterior_input_exits_2_without_output() {
    let d = tmpdir("bad");
    let out = d.join("s.npy");
    let o = out.to_str().unwrap();
    let good = write(&d, "good.json", DECK000);
    let no_op = write(
        &d,
        "noop.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}}"#,
    );
    let shape = write(
        &d,
        "shape.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1},
            "operator": {"kind": "dense", "matrix": [[1, 0, 0]]}, "y": [1], "sigma_y": 0.1}"#,
    );
    let ylen = write(
        &d,
        "ylen.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1},
            "operator": {"kind": "dense", "matrix": [[1, 0]]}, "y": [1, 2], "sigma_y": 0.1}"#,
    );
    let neg = write(
        &d,
        "neg.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1},
            "operator": {"kind": "mask", "observed": [0]}, "y": [1], "sigma_y": -1}"#,
    );
    let range = write(
        &d,
        "range.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1},
            "operator": {"kind": "mask", "observed": [5]}, "y": [1], "sigma_y": 0}"#,
    );
    let nonpd = write(
        &d,
        "nonpd.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "covariance": [[1, 2], [2, 1]]},
            "operator": {"kind": "mask", "observed": [0]}, "y": [1], "sigma_y": 0}"#,
    );
    let dense = write(
        &d,
        "dense.json",
        r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1},
            "operator": {"kind": "dense", "matrix": [[1, 1]]}, "y": [1], "sigma_y": 0.1}"#,
    );
    let missing = d.join("missing.json").to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--problem", &good, "--method", "magic"],
            "unknown posterior method",
        ),
        (vec!["--problem", &no_op, "--method", "tds"], "operator"),
        (vec!["--problem", &shape, "--method", "tds"], "dimension"),
        (vec!["--problem", &ylen, "--method", "tds"], "y"),
        (vec!["--problem", &neg, "--method", "tds"], "sigma_y"),
        (vec!["--problem", &range, "--method", "tds"], "out of range"),
        (vec!["--problem", &nonpd, "--method", "tds"], "positive definite"),
        (vec!["--problem", &dense, "--method", "smc-impute"], "mask"),
        (
            vec!["--problem", &good, "--method", "tds", "--particles", "0"],
            "--particles must be at least 1",
        ),
        (
            vec!["--problem", &good, "--method", "tds", "--resampling", "lottery"],
            "resampling",
        ),
        (vec!["--problem", &missing, "--method", "tds"], "missing.json"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["posterior"];
        full.extend(args);
        full.extend(["--out", o]);
        assert_user_error(&run(&full), needle, &out);
    }
}

/// A trained model as the prior: the observation goes into the model's normalised
/// coordinates and the samples come back; observed coordinates are kept exactly.
#[test]
fn model_prior_posterior_runs() {
    let d = tmpdir("model");
    let model = d.join("model");
    let o = run(&[
        "train",
        "--data",
        "builtin:moons",
        "--n",
        "500",
        "--steps",
        "30",
        "--hidden",
        "32",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let problem = format!(
        r#"{{"prior": {{"kind": "model", "path": "{}"}},
            "operator": {{"kind": "mask", "dim": 2, "observed": [0]}}, "y": [0.5], "sigma_y": 0}}"#,
        model.display()
    );
    let p = write(&d, "p.json", &problem);
    for m in ["smc-impute", "mcgdiff", "tds", "dps", "pigdm"] {
        let out = d.join(format!("{m}.npy"));
        let o = run(&[
            "posterior",
            "--problem",
            &p,
            "--method",
            m,
            "--n",
            "64",
            "--particles",
            "32",
            "--steps",
            "20",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{m}: {}", String::from_utf8_lossy(&o.stderr));
        let x: Vec<f64> = scoregen::data::read_points(&out)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(x.iter().all(|v| v.is_finite()), "{m}");
        if m != "dps" && m != "pigdm" {
            assert!(
                x.chunks(2).all(|r| (r[0] - 0.5).abs() < 1e-9),
                "{m}: observed coordinate changed"
            );
        }
    }
    let exact = run(&[
        "posterior",
        "--problem",
        &p,
        "--method",
        "exact",
        "--out",
        d.join("e.npy").to_str().unwrap(),
    ]);
    assert_eq!(exact.status.code(), Some(2));
}
