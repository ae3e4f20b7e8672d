//! Inpainting, outpainting and super-resolution of real digits (the built-in 8 x 8 digits)
//! with a trained image prior: each task is a linear observation `y = A x + sigma_y z` of
//! a held digit, solved by posterior sampling (docs/methods.md) in the model's normalised
//! coordinates ([`crate::solve::sample_model_posterior`]).

use crate::inverse::{Method, Observation, Operator, PosteriorOptions};
use crate::nn::model::Normalisation;
use crate::nn::LearnedScore;
use crate::solve::sample_model_posterior;
use crate::Result;

/// The tasks on `h x w` images: `(name, A, sigma_y)` for inpainting a centred
/// `h/2 x w/2` hole, outpainting the right half (the left half observed) and 2 x 2
/// average-pooling super-resolution with `sigma_y = 0.02`.
pub fn tasks(h: usize, w: usize) -> Result<Vec<(&'static str, Operator, f64)>> {
    Ok(vec![
        ("inpaint", Operator::inpaint_box(h, w, h / 4, w / 4, h / 2, w / 2)?, 0.0),
        ("outpaint", Operator::outpaint_half(h, w, "left")?, 0.0),
        ("superres", Operator::avg_pool(h, w, 2)?, 0.02),
    ])
}

/// The rows of `count` test digits among `n_all`, spread over the set, the last rows first
/// (least likely to have been seen early in training): `n_all - 1 - (97 i mod n_all)`.
pub fn examples(n_all: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| n_all - 1 - i * 97 % n_all).collect()
}

/// The methods of a task: replacement and smc-impute first for a mask, then `list`
/// (comma separated).
pub fn task_methods(op: &Operator, list: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if matches!(op, Operator::Mask { .. }) {
        names.extend(["replacement".to_string(), "smc-impute".to_string()]);
    }
    names.extend(list.split(',').map(|s| s.trim().to_string()));
    names
}

/// The observation `y` drawn as an image: the observed pixels (0 elsewhere) for a mask,
/// else the pseudo-inverse `V S^{-1} U^T y`.
pub fn observation_image(op: &Operator, y: &[f64]) -> Result<Vec<f64>> {
    let d = op.shape().1;
    let mut im = vec![0.0; d];
    match op {
        Operator::Mask { observed, .. } => {
            for (j, &p) in observed.iter().enumerate() {
                im[p] = y[j];
            }
        }
        _ => {
            let f = op.svd()?;
            let c: Vec<f64> = f.ut(y).iter().zip(&f.s).map(|(a, s)| a / s).collect();
            f.add_v_rows(&mut im, &c);
        }
    }
    Ok(im)
}

/// One restoration: the observation `y = A truth` (noiseless even where `sigma_y > 0`, as
/// in the figures), one posterior sample by `method` (`particles`, `steps`, `seed`) in
/// data units, and its root-mean-square error to `truth`. Returns `(y, sample, rmse)`.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    score: &LearnedScore,
    norm: &Normalisation,
    op: &Operator,
    sigma_y: f64,
    truth: &[f64],
    method: &Method,
    particles: usize,
    steps: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<f64>, f64)> {
    let y = op.apply_rows(truth);
    let obs = Observation {
        op: op.clone(),
        y: y.clone(),
        sigma_y,
    };
    let opts = PosteriorOptions {
        n: 1,
        particles,
        steps,
        seed,
        ..Default::default()
    };
    let (x, _) = sample_model_posterior(score, norm, &obs, method, &opts, &mut |_, _| {})?;
    let mse = x.iter().zip(truth).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / truth.len() as f64;
    Ok((y, x, mse.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_examples_and_observation_images() {
        let t = tasks(8, 8).unwrap();
        assert_eq!(
            t.iter().map(|t| t.0).collect::<Vec<_>>(),
            ["inpaint", "outpaint", "superres"]
        );
        assert_eq!(t[0].1.shape(), (48, 64));
        assert_eq!(t[2].1.shape(), (16, 64));
        assert_eq!(examples(1797, 3), vec![1796, 1699, 1602]);
        assert_eq!(task_methods(&t[0].1, "dps").len(), 3);
        assert_eq!(task_methods(&t[2].1, "dps, ddrm"), vec!["dps", "ddrm"]);
        // A constant image: the mask shows it where observed, the pooled pseudo-inverse
        // everywhere (a constant image is in the row space of average pooling).
        let truth = vec![0.5; 64];
        let im = observation_image(&t[0].1, &t[0].1.apply_rows(&truth)).unwrap();
        assert_eq!(im.iter().filter(|&&v| v == 0.5).count(), 48);
        let im = observation_image(&t[2].1, &t[2].1.apply_rows(&truth)).unwrap();
        assert!(im.iter().all(|v| (v - 0.5).abs() < 1e-12), "{im:?}");
    }
}
