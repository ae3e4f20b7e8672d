//! `scoregen impute` and `scoregen bench impute`: observed cells kept byte for byte, labels
//! decoded, multiple imputations and uncertainty written, a saved model reused, rows and
//! columns with nothing observed, malformed CSV (exit 2, nothing written).

mod common;
use common::{assert_user_error, run, tmpdir, write};

/// Tiny training and sampling so that a test takes seconds.
const FAST: [&str; 10] = [
    "--train-steps",
    "150",
    "--em-rounds",
    "1",
    "--em-steps",
    "50",
    "--particles",
    "16",
    "--steps",
    "20",
];

/// A small mixed table: a label column, two correlated numbers (one with odd formatting),
/// a quoted label with a comma, a row with nothing observed.
fn table_text() -> String {
    let mut s = String::from("kind,a,b,tag\n");
    for i in 0..60 {
        let a = (i % 7) as f64 * 0.5;
        let kind = if i % 3 == 0 { "\"x,y\"" } else { "plain" };
        let b = if i % 5 == 0 {
            "NA".to_string()
        } else {
            format!("{:.2}", 2.0 * a + 1.0)
        };
        let tag = if i % 4 == 0 {
            ""
        } else if i % 2 == 0 {
            "even"
        } else {
            "odd"
        };
        s += &format!("{kind}, {a} ,{b},{tag}\n");
    }
    s += ",,,\n";
    s
}

fn fields(line: &str) -> Vec<String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    r.records()
        .next()
        .unwrap()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect()
}

#[test]
fn imputes_mixed_table_keeping_observed_cells() {
    let d = tmpdir("mixed");
    let data = write(&d, "t.csv", &table_text());
    let out = d.join("done.csv");
    let model = d.join("m");
    let mut args = vec![
        "impute",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--imputations",
        "3",
        "--save-model",
        model.to_str().unwrap(),
    ];
    // The default EDM denoiser needs more than FAST's 150 first-round steps to learn
    // b = 2a + 1 on this 60-row table (at 150 its mean error was 2.44, b's sd being 2.0;
    // eps met the bound).
    let mut fast = FAST;
    fast[1] = "1000";
    args.extend(fast);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let input = std::fs::read_to_string(&data).unwrap();
    let output = std::fs::read_to_string(&out).unwrap();
    let (inl, outl): (Vec<&str>, Vec<&str>) = (input.lines().collect(), output.lines().collect());
    assert_eq!(inl.len(), outl.len());
    assert_eq!(inl[0], outl[0]);
    for (a, b) in inl.iter().zip(&outl).skip(1) {
        let (fa, fb) = (fields(a), fields(b));
        for (j, (x, y)) in fa.iter().zip(&fb).enumerate() {
            let missing = x.trim().is_empty() || x.trim() == "NA";
            if missing {
                assert!(!y.is_empty() && y != "NA", "column {j} not imputed in '{b}'");
                match j {
                    0 => assert!(y == "x,y" || y == "plain", "label '{y}'"),
                    3 => assert!(y == "even" || y == "odd", "label '{y}'"),
                    _ => assert!(y.parse::<f64>().unwrap().is_finite()),
                }
            } else {
                // Byte for byte, odd spacing included.
                assert_eq!(x, y);
            }
        }
    }
    // The completed `b` follows b = 2a + 1 where a is observed (the model learned it).
    let mut err = 0.0;
    let mut k = 0.0;
    for (a, b) in inl.iter().zip(&outl).skip(1) {
        let (fa, fb) = (fields(a), fields(b));
        if fa[2] == "NA" && !fa[1].trim().is_empty() {
            let av: f64 = fa[1].trim().parse().unwrap();
            err += (fb[2].parse::<f64>().unwrap() - (2.0 * av + 1.0)).abs();
            k += 1.0;
        }
    }
    // b's spread is 2.0 (sd); a tiny model still gets the conditional mean far closer.
    assert!(err / k < 1.5, "mean |b - (2a + 1)| = {}", err / k);
    for name in ["done.imp1.csv", "done.imp2.csv", "done.imp3.csv", "done.sd.csv"] {
        assert!(d.join(name).exists(), "{name}");
    }
    let sd = std::fs::read_to_string(d.join("done.sd.csv")).unwrap();
    let last = fields(sd.lines().last().unwrap());
    assert!(last.iter().all(|v| v.parse::<f64>().unwrap() >= 0.0), "{last:?}");
    assert!(model.join("encoding.json").exists());

    // The saved model imputes another table with the same columns.
    let other = write(&d, "u.csv", "kind,a,b,tag\nplain,1.5,,odd\n\"x,y\",,3.00,\n");
    let out2 = d.join("u_done.csv");
    let o = run(&[
        "impute",
        "--data",
        &other,
        "--model",
        model.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--particles",
        "16",
        "--steps",
        "20",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out2).unwrap();
    assert!(text.starts_with("kind,a,b,tag\nplain,1.5,"), "{text}");
    // A label the model never saw is an error.
    let bad = write(&d, "v.csv", "kind,a,b,tag\nnew,1.5,,odd\n");
    let out3 = d.join("v_done.csv");
    let o = run(&[
        "impute",
        "--data",
        &bad,
        "--model",
        model.to_str().unwrap(),
        "--out",
        out3.to_str().unwrap(),
    ]);
    assert_user_error(&o, "not seen", &out3);
}

#[test]
fn same_seed_same_bytes() {
    let d = tmpdir("seed");
    let data = write(&d, "t.csv", &table_text());
    let mut outs = Vec::new();
    for k in 0..2 {
        let out = d.join(format!("o{k}.csv"));
        let model = d.join(format!("m{k}"));
        let mut args = vec![
            "impute",
            "--data",
            &data,
            "--out",
            out.to_str().unwrap(),
            "--save-model",
            model.to_str().unwrap(),
            "--seed",
            "4",
        ];
        args.extend(FAST);
        assert!(run(&args).status.success());
        outs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn malformed_tables_exit_2_and_write_nothing() {
    let d = tmpdir("bad");
    let out = d.join("o.csv");
    let cases = [
        ("ragged.csv", "a,b\n1,2\n3\n", "row 3 has 1 fields"),
        ("text.csv", "a,b\n1,2\n3,oops\n4,5\n", "'oops' is not a number"),
        ("empty.csv", "", "empty"),
        ("header.csv", "a,b\n", "no data rows"),
        (
            "allmissing.csv",
            "a,b\n1,\n2,NA\n3,\n",
            "column 'b' has no observed value",
        ),
    ];
    for (name, text, needle) in cases {
        let p = write(&d, name, text);
        let o = run(&["impute", "--data", &p, "--out", out.to_str().unwrap()]);
        assert_user_error(&o, needle, &out);
    }
    let o = run(&["impute", "--data", "/no/such.csv", "--out", out.to_str().unwrap()]);
    assert_user_error(&o, "cannot read", &out);
    let p = write(&d, "ok.csv", "a,b\n1,2\n3,\n");
    let o = run(&[
        "impute",
        "--data",
        &p,
        "--out",
        out.to_str().unwrap(),
        "--method",
        "nope",
    ]);
    assert_user_error(&o, "unknown", &out);
    let o = run(&["impute", "--data", &p, "--out", d.join("o.txt").to_str().unwrap()]);
    assert_user_error(&o, ".csv", &d.join("o.txt"));
}

#[test]
fn bench_impute_scores_against_mean_and_knn() {
    let d = tmpdir("bench");
    let masks = d.join("masks");
    let csv = d.join("r.csv");
    let mut args = vec![
        "bench",
        "impute",
        "--data",
        "builtin:iris",
        "--mechanism",
        "mnar",
        "--repeats",
        "1",
        "--save-masks",
        masks.to_str().unwrap(),
        "--out",
        csv.to_str().unwrap(),
    ];
    args.extend(FAST);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for m in ["mean", "knn", "scoregen/smc-impute"] {
        assert!(text.contains(m), "{m} missing in {text}");
    }
    assert!(masks.join("iris").join("complete.npy").exists());
    assert!(masks.join("iris").join("mask_mnar_r0.3_0.npy").exists());
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 1 + 3, "{rows}");
    let o = run(&["bench", "impute", "--mechanism", "sideways"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The acceptance check on the built-in tables with default settings (minutes per table:
/// `cargo test --release -p scoregen-cli --test impute -- --ignored`); the full table with
/// five repeats is in BENCHMARKS.md.
#[test]
#[ignore]
fn default_settings_beat_mean_and_knn_on_real_tables() {
    let d = tmpdir("accept");
    let csv = d.join("r.csv");
    let o = run(&[
        "bench",
        "impute",
        "--data",
        "builtin:iris,builtin:wine,builtin:breast-cancer",
        "--repeats",
        "2",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    for table in ["iris", "wine", "breast-cancer"] {
        let rmse = |method: &str| -> f64 {
            let v: Vec<f64> = text
                .lines()
                .map(|l| l.split(',').collect::<Vec<_>>())
                .filter(|f| f[0] == table && f[4] == method)
                .map(|f| f[6].parse().unwrap())
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (ours, mean, knn) = (rmse("scoregen/smc-impute"), rmse("mean"), rmse("knn"));
        assert!(
            ours < mean && ours < knn,
            "{table}: ours {ours}, mean {mean}, knn {knn}"
        );
    }
}
