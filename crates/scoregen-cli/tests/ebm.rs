//! `scoregen ebm` and `scoregen train --loss`: bad input exits with code 2, a one-line
//! message and no output; good runs write the model, samples and figures.

mod common;
use common::{assert_user_error, run, tmpdir};

#[test]
fn bad_ebm_input_exits_2_without_output() {
    let d = tmpdir("bad");
    let out = d.join("run");
    let os = out.to_str().unwrap();
    let csv = d.join("x.csv");
    std::fs::write(&csv, "0.1,0.2\n0.3,NaN\n0.5,0.6\n").unwrap();
    let cs = csv.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--model", "boltzmann", "--data", "builtin:digits"],
            "unknown --model",
        ),
        (vec!["--model", "rbm", "--data", "builtin:gmm25"], "outside [0, 1]"),
        (
            vec!["--model", "rbm", "--data", "builtin:digits", "--k", "0"],
            "--k must be at least 1",
        ),
        (
            vec!["--model", "rbm", "--data", "builtin:digits", "--threshold", "2"],
            "threshold",
        ),
        (vec!["--model", "rbm", "--data", "builtin:nope"], "unknown built-in"),
        (vec!["--model", "rbm", "--data", "missing.npy"], "missing.npy"),
        (
            vec!["--model", "energy", "--data", "builtin:gmm25", "--train", "mle"],
            "unknown --train",
        ),
        (
            vec!["--model", "energy", "--data", "builtin:gmm25", "--sampler", "hmc"],
            "unknown --sampler",
        ),
        (
            vec!["--model", "energy", "--data", "builtin:gmm25", "--sampler", "ald"],
            "needs a noise-conditional",
        ),
        (
            vec!["--model", "energy", "--data", "builtin:gmm25", "--steps", "0"],
            "steps >= 1",
        ),
        (
            vec!["--model", "energy", "--data", "builtin:gmm25", "--langevin-step=-1"],
            "langevin-step",
        ),
        (vec!["--model", "energy", "--data", cs], "missing value"),
        (
            vec!["--model", "energy", "--data", "builtin:gmm25", "--hidden", "0"],
            "hidden",
        ),
    ] {
        let mut a = vec!["ebm", "--out", os];
        a.extend(args);
        assert_user_error(&run(&a), needle, &out);
    }
    let o = run(&["train", "--data", "builtin:gmm25", "--loss", "kl", "--out", os]);
    assert_user_error(&o, "unknown loss", &out);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The RBM on the binarised digits: reconstruction error printed per epoch and falling; the
/// model, samples and the PNG grid of Gibbs samples written; a second run into the same
/// directory is refused.
#[test]
fn rbm_on_digits_writes_model_and_gibbs_samples() {
    let d = tmpdir("rbm");
    let out = d.join("run");
    let os = out.to_str().unwrap();
    let args = [
        "ebm",
        "--model",
        "rbm",
        "--data",
        "builtin:digits",
        "--hidden",
        "64",
        "--epochs",
        "4",
        "--gibbs-steps",
        "50",
        "--samples",
        "16",
        "--out",
        os,
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let errs: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("reconstruction error ").nth(1))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert_eq!(errs.len(), 4, "{text}");
    assert!(errs[3] < errs[0], "{errs:?}");
    for f in ["rbm.json", "samples.npy", "samples.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let png = std::fs::read(out.join("samples.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already there"));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A tiny energy model on gmm25 by each training method; files written.
#[test]
fn energy_model_runs_end_to_end() {
    let d = tmpdir("energy");
    for (train, sampler) in [("cd", "mala"), ("ssm", "ula"), ("dsm", "ald")] {
        let out = d.join(train);
        let o = run(&[
            "ebm",
            "--model",
            "energy",
            "--data",
            "builtin:gmm25",
            "--n",
            "500",
            "--train",
            train,
            "--sampler",
            sampler,
            "--steps",
            "10",
            "--batch",
            "64",
            "--hidden",
            "16",
            "--depth",
            "2",
            "--sgld-steps",
            "3",
            "--langevin-steps",
            "20",
            "--samples",
            "100",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{train}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("modes populated"));
        for f in [
            "model/energy.json",
            "model/energy.safetensors",
            "samples.npy",
            "samples.png",
        ] {
            assert!(out.join(f).is_file(), "{train}: {f}");
        }
    }
    // `train --loss`: the sliced loss through the trainer.
    let out = d.join("ssm-train");
    let o = run(&[
        "train",
        "--data",
        "builtin:gmm25",
        "--n",
        "300",
        "--loss",
        "ssm",
        "--steps",
        "5",
        "--batch",
        "32",
        "--hidden",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = std::fs::read_to_string(out.join("checkpoint.json")).unwrap();
    assert!(meta.contains("\"loss\": \"ssm\""), "{meta}");
    std::fs::remove_dir_all(&d).unwrap();
}
