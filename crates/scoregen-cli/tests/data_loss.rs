//! No command may lose a user's file: an output that is (or would replace) an input is
//! refused before any work, and an existing output is untouched when the command fails.
//! Each test is one of the data-loss cases found by the hostile-input campaign (issue 15).

mod common;
use common::{run, tmpdir, write};
use std::path::Path;

const FAST: [&str; 10] = [
    "--train-steps",
    "20",
    "--em-rounds",
    "0",
    "--em-steps",
    "1",
    "--particles",
    "4",
    "--steps",
    "5",
];

const TABLE: &str = "a,b\n1,2\n2,\n3,6\n,8\n5,10\n6,12\n";

/// Exit code 2, one `error:` line mentioning `needle`, and no staging directory left in `dir`.
fn assert_refused(o: &std::process::Output, needle: &str, dir: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "'{err}' should mention '{needle}'"
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("scoregen-stage") || n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "staging files left: {left:?}");
}

#[test]
fn impute_refuses_to_overwrite_its_input_table() {
    let d = tmpdir("same");
    let data = write(&d, "t.csv", TABLE);
    let mut args = vec!["impute", "--data", &data, "--out", &data];
    args.extend(FAST);
    let o = run(&args);
    assert_refused(&o, "would overwrite the input --data", &d);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), TABLE);
    // The same file through another spelling of the path.
    let other = d.join(".").join("t.csv");
    let mut args = vec!["impute", "--data", &data, "--out", other.to_str().unwrap()];
    args.extend(FAST);
    assert_refused(&run(&args), "would overwrite", &d);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), TABLE);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "nothing else written");
}

#[test]
fn impute_imputations_never_overwrite_an_input_named_like_them() {
    let d = tmpdir("imp1");
    let data = write(&d, "x.imp1.csv", TABLE);
    let out = d.join("x.csv");
    let mut args = vec![
        "impute",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--imputations",
        "2",
    ];
    args.extend(FAST);
    assert_refused(&run(&args), "--imputations", &d);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), TABLE);
    assert!(!out.exists());
}

#[test]
fn impute_save_model_may_not_replace_a_directory_holding_the_input() {
    let d = tmpdir("modeldir");
    let data = write(&d, "t.csv", TABLE);
    let out = std::env::temp_dir().join(format!("scoregen-dl-{}-o.csv", std::process::id()));
    let mut args = vec![
        "impute",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--save-model",
        d.to_str().unwrap(),
    ];
    args.extend(FAST);
    assert_refused(&run(&args), "--save-model", &d);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), TABLE);
    assert!(!out.exists());
}

#[test]
fn impute_writes_all_outputs_or_none() {
    let d = tmpdir("allornone");
    let data = write(&d, "t.csv", TABLE);
    let out = d.join("o.csv");
    std::fs::write(&out, "precious").unwrap();
    // The .sd.csv target is a directory: refused before any work; o.csv untouched.
    std::fs::create_dir(d.join("o.sd.csv")).unwrap();
    let mut args = vec![
        "impute",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--imputations",
        "1",
    ];
    args.extend(FAST);
    assert_refused(&run(&args), "is a directory", &d);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
    assert!(!d.join("o.imp1.csv").exists() && !d.join("o-model").exists());
    // Once it can, every output appears together.
    std::fs::remove_dir(d.join("o.sd.csv")).unwrap();
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "o.csv",
        "o.imp1.csv",
        "o.sd.csv",
        "o-model/encoding.json",
        "o-model/checkpoint.json",
    ] {
        assert!(d.join(f).exists(), "{f} missing");
    }
    assert_ne!(std::fs::read_to_string(&out).unwrap(), "precious");
}

#[test]
fn sample_leaves_an_existing_out_alone_when_the_image_grid_fails() {
    let d = tmpdir("grid");
    let model = d.join("m");
    let o = run(&[
        "train",
        "--data",
        "builtin:digits",
        "--n",
        "64",
        "--steps",
        "2",
        "--batch",
        "8",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = d.join("s.npy");
    std::fs::write(&out, "precious").unwrap();
    let grid = d.join("g.png");
    std::fs::create_dir(&grid).unwrap();
    let o = run(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--n",
        "2",
        "--steps",
        "3",
        "--image-grid",
        grid.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_refused(&o, "--image-grid", &d);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
    // --out and --image-grid naming one file.
    let same = d.join("x.png");
    let o = run(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--n",
        "2",
        "--steps",
        "3",
        "--image-grid",
        same.to_str().unwrap(),
        "--out",
        same.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn exact_and_posterior_refuse_to_overwrite_the_problem_file() {
    let d = tmpdir("problem");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mixture2d.json")).unwrap();
    // A problem file whose name looks like an output.
    let p = write(&d, "p.npy", &text);
    let o = run(&["exact", "--problem", &p, "--n", "10", "--out", &p]);
    assert_refused(&o, "would overwrite the input --problem", &d);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
}

#[test]
fn ebm_writes_nothing_when_it_fails() {
    let d = tmpdir("ebm");
    let out = d.join("run");
    // An unwritable sample grid (a directory) makes the run fail before training.
    std::fs::create_dir_all(out.join("samples.png")).unwrap();
    let o = run(&[
        "ebm",
        "--model",
        "rbm",
        "--data",
        "builtin:digits",
        "--n",
        "50",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_refused(&o, "is a directory", &out);
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_new_training_run_appears_only_when_it_has_finished() {
    let d = tmpdir("train");
    let out = d.join("run");
    let o = run(&[
        "train",
        "--data",
        "builtin:moons",
        "--n",
        "100",
        "--steps",
        "3",
        "--batch",
        "4",
        "--hidden",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("checkpoint.json").exists());
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "no staging directory left: {names:?}");
    // Resuming writes in place.
    let o = run(&[
        "train",
        "--data",
        "builtin:moons",
        "--n",
        "100",
        "--steps",
        "5",
        "--batch",
        "4",
        "--hidden",
        "8",
        "--resume",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
