//! Helpers shared by the unit tests of the networks.

use candle_core::{DType, Device, Tensor};

/// `max |a - b| / max |b|` over all entries (in f64), the relative error the gradient and
/// reference checks of `conv`, `groupnorm` and `model` are held to.
pub(crate) fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let values = |t: &Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// A `shape` tensor of f64 values `shift + scale u`, `u` uniform on `[-1, 1)` from a
/// xorshift stream of `seed` (deterministic test inputs for `conv` and `groupnorm`).
pub(crate) fn random(shape: &[usize], seed: u64, scale: f64, shift: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            shift + scale * ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}
