//! Property-based fuzzing of the checkpoint reader (issue 15): `checkpoint.json` and the
//! safetensors weights file of a trained model, as read by `read_meta` and `load_model`.
//!
//! Two small valid checkpoints (a class-conditional MLP and a U-Net) are trained once;
//! each case copies one into a temporary directory and damages it: structured mutations
//! of the JSON (hostile sizes, values and names at any node), byte mutations of either
//! file, and structured damage to the tensors (wrong shapes, integer dtypes, NaN, missing
//! or extra tensors). The property: no panic and no abort; either a one-line user error
//! (exit 2), or a model that is usable — its dimension, normalisation and class weights
//! consistent, and one score evaluation and one de-normalisation succeed.
//!
//! Sized for CI: a few hundred cases per property, a few seconds in release mode.

mod fuzz_util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use fuzz_util::{
    byte_muts, check_err, config, json_muts, mutate_bytes, mutate_json, nasty_count, nasty_value, replace_node,
    sweep_nodes, TempDir,
};
use proptest::prelude::*;
use scoregen::nn::train::{load_model, read_meta};
use scoregen::nn::{train, Arch, MlpConfig, TrainConfig, TrainSetup, UnetConfig};
use scoregen::process::Process;
use scoregen::score::{Parametrisation, Score};

/// The two template checkpoints, trained once per run of this test binary into cargo's
/// temporary directory for integration tests.
fn templates() -> &'static [PathBuf; 2] {
    static T: OnceLock<[PathBuf; 2]> = OnceLock::new();
    T.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-checkpoint-templates");
        let _ = std::fs::remove_dir_all(&root);
        let mlp = root.join("mlp");
        let unet = root.join("unet");
        let cfg = TrainConfig {
            steps: 2,
            batch: 8,
            eval_every: 1,
            checkpoint_every: 1,
            ..Default::default()
        };
        // A class-conditional MLP on 3-D data.
        let n = 40;
        let x: Vec<f64> = (0..n * 3).map(|i| ((i * 37) % 11) as f64 / 3.0).collect();
        let x = Tensor::from_vec(x, (n, 3), &Device::Cpu).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let arch = Arch::Mlp(MlpConfig {
            dim: 3,
            hidden: 8,
            depth: 2,
            fourier: 4,
            n_classes: 3,
            param: Parametrisation::Eps,
        });
        let setup = TrainSetup {
            arch,
            process: Process::ou(2.0, 5.0),
            config: cfg.clone(),
            checkpoint_dir: Some(&mlp),
            resume: false,
            device: candle_core::Device::Cpu,
        };
        train(&x, Some(&labels), &setup, &mut |_| {}).unwrap();
        // An unconditional U-Net on 4x4 images.
        let x: Vec<f64> = (0..n * 16).map(|i| ((i * 13) % 7) as f64).collect();
        let x = Tensor::from_vec(x, (n, 16), &Device::Cpu).unwrap();
        let arch = Arch::Unet(UnetConfig {
            height: 4,
            width: 4,
            channels: vec![4, 4],
            blocks: 1,
            groups: 2,
            fourier: 4,
            time_dim: 8,
            n_classes: 0,
            param: Parametrisation::Eps,
        });
        let setup = TrainSetup {
            arch,
            process: Process::ou(2.0, 5.0),
            config: cfg,
            checkpoint_dir: Some(&unet),
            resume: false,
            device: candle_core::Device::Cpu,
        };
        train(&x, None, &setup, &mut |_| {}).unwrap();
        [mlp, unet]
    })
}

/// Copies checkpoint `src` into `dst`; returns the weights file name.
fn copy_checkpoint(src: &Path, dst: &Path) -> String {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    read_meta(dst).unwrap().weights
}

/// The property: a clean user error, or a usable model.
fn check_checkpoint(dir: &Path) -> Result<(), TestCaseError> {
    match read_meta(dir) {
        Ok(meta) => {
            if let Some(w) = &meta.class_weights {
                prop_assert_eq!(w.len(), meta.arch.n_classes());
                prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{w:?}");
                prop_assert!(w.iter().sum::<f64>() > 0.0, "{w:?}");
            }
        }
        Err(e) => check_err(&e)?,
    }
    match load_model(dir) {
        Ok((score, meta)) => {
            let d = score.dim();
            prop_assert_eq!(d, meta.arch.dim());
            let norm = &meta.normalisation;
            prop_assert_eq!(norm.mean.len(), d);
            prop_assert_eq!(norm.std.len(), d);
            prop_assert!(norm.mean.iter().all(|m| m.is_finite()));
            prop_assert!(norm.std.iter().all(|s| s.is_finite() && *s > 0.0), "{:?}", norm.std);
            let z = Tensor::zeros((2, d), DType::F64, &Device::Cpu).unwrap();
            let s = score
                .score(0.5, &z)
                .map_err(|e| TestCaseError::fail(format!("score: {e}")))?;
            prop_assert_eq!(s.dims(), &[2, d]);
            let x = norm
                .denormalise(&z)
                .map_err(|e| TestCaseError::fail(format!("denormalise: {e}")))?;
            prop_assert_eq!(x.dims(), &[2, d]);
        }
        Err(e) => check_err(&e)?,
    }
    Ok(())
}

/// Structured damage to the tensors of a weights file.
fn damage_tensors(path: &Path, kind: u8, sel: u64) {
    let map = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut names: Vec<String> = map.keys().cloned().collect();
    names.sort();
    let name = names[(sel % names.len() as u64) as usize].clone();
    let mut map: HashMap<String, Tensor> = map;
    let t = map[&name].clone();
    let n = t.elem_count();
    let new = match kind % 9 {
        // One more row / column.
        0 => Some(Tensor::zeros((n + 1,), DType::F32, &Device::Cpu).unwrap()),
        1 => Some(t.flatten_all().unwrap()),
        // An integer dtype of the right shape.
        2 => Some(t.to_dtype(DType::U8).unwrap()),
        3 => Some(t.to_dtype(DType::I64).unwrap()),
        // NaN and infinity.
        4 => Some((t.ones_like().unwrap() * f64::NAN).unwrap()),
        5 => Some((t.ones_like().unwrap() * f64::INFINITY).unwrap()),
        // Empty.
        6 => Some(Tensor::zeros((0,), DType::F32, &Device::Cpu).unwrap()),
        // Missing.
        7 => None,
        // Half precision (fine).
        _ => Some(t.to_dtype(DType::F16).unwrap()),
    };
    match new {
        Some(x) => {
            map.insert(name, x);
        }
        None => {
            map.remove(&name);
        }
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn checkpoint_json_structured_mutations(t in 0usize..2, muts in json_muts(3)) {
        let dir = TempDir::new("ckpt");
        let ck = dir.join("c");
        copy_checkpoint(&templates()[t], &ck);
        let text = std::fs::read_to_string(ck.join("checkpoint.json")).unwrap();
        let doc = mutate_json(serde_json::from_str(&text).unwrap(), &muts);
        std::fs::write(ck.join("checkpoint.json"), doc.to_string()).unwrap();
        check_checkpoint(&ck)?;
    }

    #[test]
    fn checkpoint_byte_mutations(t in 0usize..2, weights in any::<bool>(), bm in byte_muts(3)) {
        let dir = TempDir::new("ckpt");
        let ck = dir.join("c");
        let w = copy_checkpoint(&templates()[t], &ck);
        let file = ck.join(if weights { w.as_str() } else { "checkpoint.json" });
        let bytes = mutate_bytes(std::fs::read(&file).unwrap(), &bm);
        std::fs::write(&file, bytes).unwrap();
        check_checkpoint(&ck)?;
    }

    #[test]
    fn checkpoint_tensor_damage(t in 0usize..2, kind in 0u8..9, sel in any::<u64>(), twice in any::<bool>()) {
        let dir = TempDir::new("ckpt");
        let ck = dir.join("c");
        let w = copy_checkpoint(&templates()[t], &ck);
        damage_tensors(&ck.join(&w), kind, sel);
        if twice {
            damage_tensors(&ck.join(&w), kind.wrapping_add(3), sel.rotate_left(7));
        }
        check_checkpoint(&ck)?;
    }
}

/// Systematically, every node of both checkpoints' JSON replaced by every hostile value
/// (about 8,000 checkpoints): huge sizes, bad scales and class weights, path names.
#[test]
fn checkpoint_json_every_node_every_hostile_value() {
    for (t, src) in templates().iter().enumerate() {
        let dir = TempDir::new("ckpt-sweep");
        let ck = dir.join("c");
        copy_checkpoint(src, &ck);
        let path = ck.join("checkpoint.json");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for i in sweep_nodes(&doc) {
            for k in 0..nasty_count() {
                let text = replace_node(&doc, i, nasty_value(k)).to_string();
                // A new file each time: rewriting one in place makes ext4 flush it to disk.
                std::fs::remove_file(&path).unwrap();
                std::fs::write(&path, &text).unwrap();
                if let Err(e) = check_checkpoint(&ck) {
                    panic!("template {t}, node {i}, value {k}: {e}\n{text:.600}");
                }
            }
        }
    }
}

/// A copy of template `t` with its JSON edited by `edit`; the error of `load_model`.
fn load_edited(t: usize, edit: impl FnOnce(&mut serde_json::Value)) -> scoregen::Error {
    let dir = TempDir::new("ckpt-regression");
    let ck = dir.join("c");
    copy_checkpoint(&templates()[t], &ck);
    let path = ck.join("checkpoint.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut doc);
    std::fs::write(&path, doc.to_string()).unwrap();
    let e = load_model(&ck).err().expect("the damaged checkpoint must be refused");
    let m = e.to_string();
    assert!(e.is_user_error() && !m.contains('\n'), "{m}");
    assert!(m.contains("checkpoint.json"), "{m}");
    e
}

/// Issue 15: checkpoint configurations with huge sizes were allocated (an abort, exit 134)
/// before anything was checked.
#[test]
fn huge_checkpoint_sizes_are_refused_before_allocation() {
    use serde_json::json;
    for (key, value, needle) in [
        ("hidden", json!(1_000_000_000_000u64), "parameters"),
        ("dim", json!(1_000_000_000u64), "dimension is too large"),
        ("depth", json!(u64::MAX), "parameters"),
        ("fourier", json!(1u64 << 62), "parameters"),
        ("n_classes", json!(1_000_000_000u64), "classes"),
        ("n_classes", json!(u64::MAX), "classes"),
    ] {
        let e = load_edited(0, |d| d["arch"][key] = value.clone()).to_string();
        assert!(e.contains(needle), "{key}: {e}");
    }
    for (key, value, needle) in [
        ("height", json!(1u64 << 40), "dimension"),
        ("width", json!(1u64 << 33), "dimension"),
        ("blocks", json!(1_000_000_000_000u64), "parameters"),
        ("time_dim", json!(1u64 << 40), "parameters"),
        ("channels", json!([1u64 << 30, 1u64 << 30]), "parameters"),
        ("channels", json!(vec![4; 100_000]), "levels"),
    ] {
        let e = load_edited(1, |d| d["arch"][key] = value.clone()).to_string();
        assert!(e.contains(needle), "{key}: {e}");
    }
}

/// Issue 15: bad values inside a checkpoint were accepted (negative class weights), or
/// failed later with exit 1 and "tensor backend: shape mismatch".
#[test]
fn bad_checkpoint_values_are_clear_user_errors() {
    use serde_json::json;
    let e = load_edited(0, |d| d["normalisation"]["std"] = json!([1, 0, 1])).to_string();
    assert!(e.contains("standard deviation 2 is 0"), "{e}");
    let e = load_edited(0, |d| d["normalisation"]["std"] = json!([1, -2, 1])).to_string();
    assert!(e.contains("standard deviation 2 is -2"), "{e}");
    let e = load_edited(0, |d| d["normalisation"]["std"] = json!([1, null, 1])).to_string();
    assert!(e.contains("corrupted checkpoint"), "{e}");
    let e = load_edited(0, |d| d["normalisation"]["mean"] = json!([1, 2])).to_string();
    assert!(e.contains("2 means and 3 standard deviations for dimension 3"), "{e}");
    for w in [
        json!([0.5, -0.1, 0.6]),
        json!([0.5, 1e308, 0.5]),
        json!([0, 0, 0]),
        json!([0.5, 0.5]),
    ] {
        let e = load_edited(0, |d| d["class_weights"] = w.clone()).to_string();
        assert!(e.contains("class_weights"), "{w}: {e}");
    }
    let long = "x".repeat(5000);
    for name in ["../../etc/passwd", "/dev/zero", "", "..", "a/b", &long] {
        let e = load_edited(0, |d| d["weights"] = json!(name)).to_string();
        assert!(
            e.contains("is not a file name in the checkpoint directory"),
            "{name}: {e}"
        );
    }
    let e = load_edited(0, |d| d["process"]["t_max"] = json!(-1)).to_string();
    assert!(e.contains("t_max"), "{e}");
    let e = load_edited(0, |d| d["arch"]["kind"] = json!("é".repeat(100))).to_string();
    assert!(e.chars().count() < 400, "{e}");

    // A tensor of the wrong shape: the weights file and the tensor are named.
    let dir = TempDir::new("ckpt-regression");
    let ck = dir.join("c");
    let w = copy_checkpoint(&templates()[0], &ck);
    let path = ck.join(&w);
    let mut map = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    map.insert(
        "ema.in.w".into(),
        Tensor::zeros((8, 7), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, &path).unwrap();
    let e = load_model(&ck).err().unwrap();
    let m = e.to_string();
    assert!(e.is_user_error(), "{m}");
    assert!(
        m.contains(&w) && m.contains("tensor 'ema.in.w': shape [8, 7], expected [7, 8]"),
        "{m}"
    );
    // NaN weights.
    map.insert(
        "ema.in.w".into(),
        (Tensor::ones((7, 8), DType::F32, &Device::Cpu).unwrap() * f64::NAN).unwrap(),
    );
    candle_core::safetensors::save(&map, &path).unwrap();
    let m = load_model(&ck).err().unwrap().to_string();
    assert!(m.contains("tensor 'ema.in.w': has NaN or infinite values"), "{m}");
    // A truncated weights file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let e = load_model(&ck).err().unwrap();
    assert!(e.is_user_error() && e.to_string().contains("corrupted weights"), "{e}");
}

/// `param_count`, which bounds a checkpoint before any network is built, is the exact
/// number of parameters of the network that is then built.
#[test]
fn param_count_is_exact() {
    use scoregen::nn::train::param_count;
    use scoregen::nn::{Network, ScoreNet};
    let mut archs = vec![];
    for (depth, n_classes) in [(1, 0), (3, 0), (2, 5)] {
        archs.push(Arch::Mlp(MlpConfig {
            dim: 5,
            hidden: 7,
            depth,
            fourier: 6,
            n_classes,
            param: Parametrisation::Eps,
        }));
    }
    for (channels, blocks, n_classes) in [(vec![4], 1, 0), (vec![4, 8], 2, 3), (vec![8, 4, 12], 3, 0)] {
        archs.push(Arch::Unet(UnetConfig {
            height: 8,
            width: 8,
            channels,
            blocks,
            groups: 4,
            fourier: 4,
            time_dim: 6,
            n_classes,
            param: Parametrisation::Eps,
        }));
    }
    for arch in archs {
        let net = Network::new(&arch, 0, DType::F32, &Device::Cpu).unwrap();
        let n: usize = net.vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(param_count(&arch), n as u128, "{arch:?}");
    }
}
