//! Helpers shared by the unit tests of the networks.

use candle_core::{DType, Tensor};

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
