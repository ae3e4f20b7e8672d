//! The `scoregen` binary: bad input exits with code 2, a one-line message and no output
//! file; seeds give byte-identical files.

use std::process::Command;

mod common;
use common::{assert_user_error, run, tmpdir};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scoregen"))
}

const GOOD: &str = r#"{"prior": {"kind": "gaussian_mixture", "weights": [1, 2], "means": [[-2, 0], [2, 1]],
    "covariances": [[[1, 0.3], [0.3, 0.5]], [[0.5, 0], [0, 0.5]]]}}"#;

#[test]
fn bad_problem_files_exit_2_without_output() {
    let d = tmpdir("bad");
    let out = d.join("s.npy");
    let cases = [
        ("malformed.json", r#"{"prior": {"kind": "gaussian""#, "malformed JSON"),
        (
            "nan.json",
            r#"{"prior": {"kind": "gaussian", "mean": [NaN, 0], "variance": 1}}"#,
            "malformed JSON",
        ),
        (
            "nonpd.json",
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "covariance": [[1, 2], [2, 1]]}}"#,
            "not positive definite",
        ),
        (
            "shape.json",
            r#"{"prior": {"kind": "gaussian_mixture", "weights": [1, 1], "means": [[0, 0], [1]], "variance": 1}}"#,
            "row 1 has 1 entries",
        ),
        ("kind.json", r#"{"prior": {"kind": "student"}}"#, "unknown kind"),
        (
            "mask.json",
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "mask", "observed": [5]}, "y": [1]}"#,
            "out of range",
        ),
        (
            "sigma.json",
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "mask", "observed": [0]}, "y": [1], "sigma_y": -0.5}"#,
            "sigma_y",
        ),
    ];
    for (name, text, needle) in cases {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        let o = run(&[
            "sample",
            "--problem",
            p.to_str().unwrap(),
            "--steps",
            "10",
            "--n",
            "10",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_user_error(&o, needle, &out);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(name),
            "message names the file"
        );
    }
    let o = run(&[
        "sample",
        "--problem",
        d.join("missing.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_user_error(&o, "cannot read", &out);
}

#[test]
fn bad_options_exit_2_without_output() {
    let d = tmpdir("opts");
    let p = d.join("p.json");
    std::fs::write(&p, GOOD).unwrap();
    let out = d.join("s.npy");
    let ps = p.to_str().unwrap();
    let os = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--sampler", "magic"], "unknown sampler"),
        (vec!["--grid", "weird"], "unknown time grid"),
        (vec!["--b=-1"], "b must be"),
        (vec!["--n", "many"], "invalid value"),
        (vec!["--sampler", "pc", "--predictor", "ald"], "unknown predictor"),
        (vec!["--sampler", "ddim", "--eta", "2"], "eta"),
        (vec!["--t-min", "0"], "t_min"),
        (vec!["--n", "0"], "--n"),
    ] {
        let mut a = vec!["sample", "--problem", ps, "--steps", "10", "--out", os];
        a.extend(args);
        assert_user_error(&run(&a), needle, &out);
    }
    let bad_ext = d.join("s.txt");
    assert_user_error(
        &run(&["sample", "--problem", ps, "--out", bad_ext.to_str().unwrap()]),
        ".npy or .csv",
        &bad_ext,
    );
    let no_dir = d.join("nope").join("s.npy");
    let o = run(&["sample", "--problem", ps, "--out", no_dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!no_dir.exists());
}

#[test]
fn eval_and_plot_reject_bad_sample_files() {
    let d = tmpdir("eval");
    let p = d.join("p.json");
    std::fs::write(&p, GOOD).unwrap();
    let a = d.join("a.csv");
    std::fs::write(&a, "x,y\n1,2\n3,4\n5,6\n").unwrap();
    let nan = d.join("nan.csv");
    std::fs::write(&nan, "x,y\n1,NaN\n3,4\n").unwrap();
    let three = d.join("three.csv");
    std::fs::write(&three, "1,2,3\n4,5,6\n7,8,9\n").unwrap();
    let junk = d.join("junk.npy");
    std::fs::write(&junk, b"not an npy file").unwrap();
    // A valid .npy (v1.0, <f8, shape (2, 2)) holding a NaN.
    let nan_npy = d.join("nan.npy");
    let mut header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }".to_vec();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    for v in [1.0f64, f64::NAN, 2.0, 3.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&nan_npy, bytes).unwrap();
    let fig = d.join("fig.png");
    for (s, r, needle) in [
        (&nan, &a, "missing"),
        (&nan_npy, &a, "nan"),
        (&three, &a, "dimension"),
        (&junk, &a, "junk.npy"),
        (&d.join("absent.csv"), &a, "absent.csv"),
    ] {
        let o = run(&[
            "eval",
            "--samples",
            s.to_str().unwrap(),
            "--reference",
            r.to_str().unwrap(),
        ]);
        assert_user_error(&o, needle, &fig);
        let o = run(&[
            "plot",
            "--samples",
            s.to_str().unwrap(),
            "--reference",
            r.to_str().unwrap(),
            "--out",
            fig.to_str().unwrap(),
        ]);
        assert_user_error(&o, needle, &fig);
    }
}

#[test]
fn same_seed_same_bytes_and_eval_runs() {
    let d = tmpdir("seed");
    let p = d.join("p.json");
    std::fs::write(&p, GOOD).unwrap();
    let ps = p.to_str().unwrap();
    let f = |name: &str, seed: &str, sampler: &str| {
        let out = d.join(name);
        let o = run(&[
            "sample",
            "--problem",
            ps,
            "--sampler",
            sampler,
            "--steps",
            "100",
            "--n",
            "300",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    for sampler in ["em", "ei", "heun", "ddpm", "ddim", "ald", "pc"] {
        let a = f("a.npy", "5", sampler);
        let b = f("b.npy", "5", sampler);
        assert_eq!(a, b, "{sampler}: same seed must give the same bytes");
        // Deterministic samplers (heun, ddim) differ through the initial draw.
        assert_ne!(a, f("c.npy", "6", sampler), "{sampler}: another seed must differ");
    }
    let r = d.join("r.npy");
    let o = run(&["exact", "--problem", ps, "--n", "300", "--out", r.to_str().unwrap()]);
    assert!(o.status.success());
    let o = run(&[
        "eval",
        "--samples",
        d.join("a.npy").to_str().unwrap(),
        "--reference",
        r.to_str().unwrap(),
        "--problem",
        ps,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["sw1"].as_f64().unwrap() >= 0.0);
    assert!(v["mixture_weight_err"].as_f64().is_some());
}

#[test]
fn every_command_has_help() {
    for c in [
        vec![],
        vec!["sample"],
        vec!["exact"],
        vec!["eval"],
        vec!["plot"],
        vec!["demo"],
        vec!["bench"],
        vec!["bench", "sample"],
    ] {
        let mut a = c.clone();
        a.push("--help");
        let o = bin().args(&a).output().unwrap();
        assert!(o.status.success(), "{c:?}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
    }
}

#[test]
fn train_then_sample_and_bad_training_input() {
    let d = tmpdir("train");
    let model = d.join("model");
    let ms = model.to_str().unwrap();
    let o = run(&[
        "train",
        "--data",
        "builtin:moons",
        "--n",
        "500",
        "--steps",
        "30",
        "--batch",
        "64",
        "--hidden",
        "32",
        "--out",
        ms,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights_before = std::fs::read(model.join("checkpoint.json")).unwrap();
    // Class-conditional (moons has labels): sample class 1 with guidance.
    let out = d.join("s.npy");
    let o = run(&[
        "sample",
        "--model",
        ms,
        "--class",
        "1",
        "--guidance",
        "1.5",
        "--steps",
        "20",
        "--n",
        "50",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.exists());
    let none = d.join("none.npy");
    let ns = none.to_str().unwrap();
    assert_user_error(
        &run(&["sample", "--model", ms, "--class", "7", "--n", "5", "--out", ns]),
        "out of range",
        &none,
    );
    // Training again into the same directory without --resume: refused, nothing overwritten.
    let o = run(&["train", "--data", "builtin:moons", "--steps", "5", "--out", ms]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(model.join("checkpoint.json")).unwrap(), weights_before);
    // Missing and corrupted checkpoints.
    assert_user_error(
        &run(&["sample", "--model", d.join("nope").to_str().unwrap(), "--out", ns]),
        "not a checkpoint",
        &none,
    );
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("checkpoint.json"), "{\"format\": 3").unwrap();
    assert_user_error(
        &run(&["sample", "--model", bad.to_str().unwrap(), "--out", ns]),
        "corrupted",
        &none,
    );
    let trunc = d.join("trunc");
    std::fs::create_dir_all(&trunc).unwrap();
    for e in std::fs::read_dir(&model).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let keep = if e.file_name().to_string_lossy().ends_with(".safetensors") {
            bytes.len() / 2
        } else {
            bytes.len()
        };
        std::fs::write(trunc.join(e.file_name()), &bytes[..keep]).unwrap();
    }
    assert_user_error(
        &run(&["sample", "--model", trunc.to_str().unwrap(), "--out", ns]),
        "weights",
        &none,
    );
    // NaN in the data; labels of the wrong length.
    let nan = d.join("nan.csv");
    std::fs::write(&nan, "1,2\n3,NaN\n5,6\n").unwrap();
    let m2 = d.join("m2");
    let o = run(&[
        "train",
        "--data",
        nan.to_str().unwrap(),
        "--steps",
        "5",
        "--out",
        m2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!m2.exists());
    let good = d.join("good.csv");
    std::fs::write(&good, "1,2\n3,4\n5,6\n7,8\n").unwrap();
    let labels = d.join("labels.csv");
    std::fs::write(&labels, "0\n1\n1\n").unwrap();
    let o = run(&[
        "train",
        "--data",
        good.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--steps",
        "5",
        "--out",
        m2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 labels for 4 rows"));
    assert!(!m2.exists());
}

#[test]
fn train_with_each_process_then_sample() {
    let d = tmpdir("process");
    for (name, kind) in [
        ("ou", "\"vp\""),
        ("vp", "\"linear\""),
        ("sub-vp", "\"sub_vp\""),
        ("ve", "\"ve\""),
    ] {
        let model = d.join(name);
        let ms = model.to_str().unwrap();
        let o = run(&[
            "train",
            "--data",
            "builtin:moons",
            "--n",
            "300",
            "--steps",
            "20",
            "--batch",
            "32",
            "--hidden",
            "16",
            "--process",
            name,
            "--out",
            ms,
        ]);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        // The checkpoint records the process, and sampling reads it from there.
        let meta = std::fs::read_to_string(model.join("checkpoint.json")).unwrap();
        let process = &meta[meta.find("\"process\"").unwrap()..];
        assert!(
            process[..process.find('}').unwrap()].contains(kind),
            "{name}: {process:.120}"
        );
        let out = d.join(format!("{name}.csv"));
        let o = run(&[
            "sample",
            "--model",
            ms,
            "--steps",
            "10",
            "--n",
            "20",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 20);
        assert!(text
            .split([',', '\n'])
            .filter(|c| !c.is_empty())
            .all(|c| c.parse::<f64>().unwrap().is_finite()));
    }
    let none = d.join("none");
    assert_user_error(
        &run(&[
            "train",
            "--data",
            "builtin:moons",
            "--process",
            "vpsde",
            "--out",
            none.to_str().unwrap(),
        ]),
        "unknown process 'vpsde'",
        &none,
    );
}

#[test]
fn train_unet_then_sample_a_grid_and_bad_image_flags() {
    let d = tmpdir("unet");
    let model = d.join("unet");
    let ms = model.to_str().unwrap();
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let o = run(&[
        "train",
        "--data",
        "builtin:digits",
        "--model",
        "unet",
        "--channels",
        "8,16",
        "--steps",
        "4",
        "--batch",
        "8",
        "--out",
        ms,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = std::fs::read_to_string(model.join("checkpoint.json")).unwrap();
    assert!(meta.contains("\"kind\": \"unet\""), "{meta}");
    // Every class, 2 samples each, as .npy and as a grid of images.
    let (out, grid) = (path("s.npy"), path("grid.png"));
    let o = run(&[
        "sample",
        "--model",
        ms,
        "--each-class",
        "--n",
        "2",
        "--steps",
        "5",
        "--image-grid",
        &grid,
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&grid).unwrap().len() > 0);
    // 20 rows of 64 f32/f64 values: the .npy holds at least 20 * 64 * 4 bytes.
    assert!(std::fs::metadata(&out).unwrap().len() >= 20 * 64 * 4);
    let o = run(&[
        "sample",
        "--model",
        ms,
        "--class",
        "3",
        "--n",
        "3",
        "--steps",
        "5",
        "--out",
        &path("c3.csv"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(path("c3.csv")).unwrap().lines().count(), 3);
    // The real digits as a grid, one row per class.
    let o = run(&["plot", "--samples", "builtin:digits", "--out", &path("real.png")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An MLP model of vectors for the grid refusal below.
    let mlp = d.join("mlp");
    let o = run(&[
        "train",
        "--data",
        "builtin:moons",
        "--n",
        "100",
        "--steps",
        "2",
        "--batch",
        "8",
        "--hidden",
        "8",
        "--out",
        mlp.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad_model = d.join("bad-model");
    let bm = bad_model.to_str().unwrap();
    let train_cases: [(&[&str], &str); 7] = [
        (&["--data", "builtin:moons", "--model", "unet"], "needs images"),
        (&["--data", "builtin:digits", "--model", "cnn"], "unknown --model"),
        (&["--data", "builtin:digits", "--image-shape", "4x4"], "16 pixels"),
        (&["--data", "builtin:digits", "--image-shape", "8by8"], "image shape"),
        (&["--data", "builtin:digits", "--hidden", "32"], "mlp only"),
        (&["--data", "builtin:moons", "--channels", "8,16"], "unet only"),
        (&["--data", "builtin:digits", "--channels", "8,12"], "groups"),
    ];
    for (args, needle) in train_cases {
        let mut all = vec!["train"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--steps", "2", "--out", bm]);
        assert_user_error(&run(&all), needle, &bad_model);
    }
    let none = d.join("none.npy");
    let ns = none.to_str().unwrap();
    let sample_cases: [(&[&str], &str); 4] = [
        (
            &["--model", mlp.to_str().unwrap(), "--image-grid", &path("g2.png")],
            "model of images",
        ),
        (
            &["--model", ms, "--image-grid", &path("g.txt")],
            "unsupported file type",
        ),
        (
            &["--model", mlp.to_str().unwrap(), "--each-class", "--class", "1"],
            "cannot be used with",
        ),
        (&["--model", ms, "--class", "12"], "out of range"),
    ];
    for (args, needle) in sample_cases {
        let mut all = vec!["sample", "--n", "2", "--steps", "3"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", ns]);
        assert_user_error(&run(&all), needle, &none);
    }
    assert!(!d.join("g2.png").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unknown_or_unavailable_devices_exit_2_without_output() {
    let d = tmpdir("device");
    let out = d.join("m");
    // The default build has no CUDA: say how to get it. (A CUDA build on a machine
    // without a GPU says the device is not available, also exit 2.)
    let cuda_needle = if cfg!(feature = "cuda") {
        "not available"
    } else {
        "--features cuda"
    };
    for (device, needle) in [("gpu", "unknown device 'gpu'"), ("cuda", cuda_needle)] {
        let mut args = vec![
            "--device",
            device,
            "train",
            "--data",
            "builtin:moons",
            "--steps",
            "5",
            "--out",
        ];
        args.push(out.to_str().unwrap());
        assert_user_error(&run(&args), needle, &out);
    }
}

#[test]
fn likelihood_of_a_mixture_prior_matches_its_closed_form() {
    let d = tmpdir("likelihood");
    let problem = common::write(&d, "g.json", GOOD);
    let x = d.join("x.npy");
    let o = run(&[
        "exact",
        "--problem",
        &problem,
        "--n",
        "50",
        "--out",
        x.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ll = d.join("ll.csv");
    let o = run(&[
        "likelihood",
        "--problem",
        &problem,
        "--data",
        x.to_str().unwrap(),
        "--rtol",
        "1e-7",
        "--atol",
        "1e-7",
        "--out",
        ll.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<f64> = std::fs::read_to_string(&ll)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(got.len(), 50);
    // The closed form, from the library (the ODE starts at t_min = 1e-5 and ends at the
    // reference prior: both effects are below 1e-3 here).
    let law = scoregen::inverse::Problem::from_json(GOOD, None)
        .unwrap()
        .mixture()
        .unwrap()
        .clone();
    let xs = scoregen::data::to_rows(&scoregen::data::read_points(&x).unwrap())
        .unwrap()
        .0;
    let want = law.log_prob(&xs).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-2, "{g} vs {w}");
    }
    // Bad input: wrong width, unknown names, no output left behind.
    let wide = common::write(&d, "wide.csv", "1,2,3\n4,5,6\n");
    let out = d.join("bad.npy");
    let xs = x.to_str().unwrap();
    for (data, extra, needle) in [
        (wide.as_str(), &[][..], "3 columns"),
        (xs, &["--estimator", "magic"][..], "--estimator"),
        (xs, &["--rtol", "0"][..], "tolerance"),
    ] {
        let mut args = vec![
            "likelihood",
            "--problem",
            &problem,
            "--data",
            data,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        assert_user_error(&run(&args), needle, &out);
    }
}
