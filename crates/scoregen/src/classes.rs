//! Sampling a class-conditional model: one class, every class, the class mixture, or the
//! null class, from one loaded network.
//!
//! A model trained with labels (classifier-free guidance training, Ho & Salimans 2022) has
//! a conditional score `s(x, t | c)` for each class `c` and a null-class score `s(x, t)`.
//! Sampling class `c` with guidance weight `w >= 0` runs a reverse-time sampler (Song et
//! al. 2021, score SDEs) on `(1 + w) s(x, t | c) - w s(x, t)`. The marginal of the training
//! data, `p(x) = sum_c pi_c p(x | c)`, is sampled by drawing each row's class from the
//! training label frequencies `pi` and then sampling that class ([`ClassChoice::Mixture`]).
//! Every choice reuses the one [`LearnedScore`] it is given (the class is a setting of the
//! score, not of its weights), so a checkpoint is read once.
//!
//! Seeds: class `c` of the mixture runs the sampler with seed `seed + 1 + c`; the classes
//! are drawn from the uniforms of stream `(User, 2^40)` of `seed` by the inverse CDF of
//! `pi` ([`draw_classes`]). A fixed class, every class and the null class run the sampler
//! with `seed` itself (so every class of [`ClassChoice::Each`] starts from the same noise).

use candle_core::{DType, Tensor};

use crate::nn::model::Normalisation;
use crate::nn::{LearnedScore, ScoreNet};
use crate::rng::{stream, Noise, Purpose};
use crate::sample::{sample, SampleOptions, Sampler};
use crate::score::Score;
use crate::{Error, Result};

/// The stream index of the uniforms that draw the classes of [`ClassChoice::Mixture`].
pub const CLASS_DRAW_STREAM: u64 = 1 << 40;

/// Which class (or classes) a class-conditional model is sampled at.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassChoice {
    /// The null-class (unconditional) score; also the only choice for a model without
    /// classes.
    Null,
    /// One class, score `(1 + w) s(x | c) - w s(x)` with guidance weight `w = guidance`.
    Fixed {
        /// The class `c`.
        class: u32,
        /// The guidance weight `w >= 0`.
        guidance: f64,
    },
    /// `n` samples of every class `0..K` with guidance weight `guidance`, rows ordered by
    /// class (`n K` rows).
    Each {
        /// The guidance weight `w >= 0`.
        guidance: f64,
    },
    /// The class mixture `p(x) = sum_c pi_c p(x | c)`: each row's class is drawn from the
    /// weights `pi` (normalised here; typically the checkpoint's training label
    /// frequencies), rows in the order of the draws.
    Mixture(Vec<f64>),
}

impl ClassChoice {
    /// The default for a model with training label frequencies `class_weights` (the
    /// checkpoint's `class_weights`): the class mixture when there are some, else the null
    /// class.
    pub fn default_for(class_weights: Option<&[f64]>) -> Self {
        match class_weights {
            Some(pi) => ClassChoice::Mixture(pi.to_vec()),
            None => ClassChoice::Null,
        }
    }

    /// Rows produced for `n` samples with a model of `n_classes` classes.
    pub fn rows(&self, n: usize, n_classes: usize) -> usize {
        match self {
            ClassChoice::Each { .. } => n.saturating_mul(n_classes.max(1)),
            _ => n,
        }
    }
}

/// Draws `n` classes from the weights `pi` (`pi_c >= 0`, not all 0) by the inverse CDF
/// ([`crate::smc::categorical`]), `c_i = min { c : u_i sum_k pi_k < sum_{k <= c} pi_k }` with
/// `u_i` the uniforms of stream `(User, 2^40)` of `seed` (the last class when `u_i = 1`).
pub fn draw_classes(pi: &[f64], n: usize, seed: u64) -> Result<Vec<usize>> {
    let total: f64 = pi.iter().sum();
    if pi.is_empty() || pi.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || total <= 0.0 {
        return Err(Error::invalid(format!(
            "class weights must be finite, >= 0 and not all 0, got {pi:?}"
        )));
    }
    let u = Noise::new(seed).uniforms(stream(Purpose::User, CLASS_DRAW_STREAM), n);
    Ok(u.iter().map(|&v| crate::smc::categorical(pi, v)).collect())
}

/// Samples a (class-conditional) model by `sampler`: `n` rows per class of `choice`
/// ([`ClassChoice::rows`] in all), mapped back to data units by `norm` (`x = mean + sd z`).
///
/// `progress(class, k, total)` reports step `k` of `total` of the run of `class` (`None`:
/// the null class). The score's class setting is changed in place; it is returned with the
/// last class set. Errors: a class out of range, a negative guidance weight, a model
/// without classes asked for a class, and whatever the sampler reports.
pub fn sample_model(
    score: LearnedScore,
    norm: &Normalisation,
    choice: &ClassChoice,
    sampler: &Sampler,
    opts: &SampleOptions,
    n: usize,
    progress: &mut dyn FnMut(Option<u32>, usize, usize),
) -> Result<(Tensor, LearnedScore)> {
    let n_classes = score.net().n_classes();
    let mut run = |score: &LearnedScore, class: Option<u32>, o: &SampleOptions, rows: usize| {
        sample(score, sampler, o, rows, &mut |k, total| progress(class, k, total))
    };
    match choice {
        ClassChoice::Null => {
            let z = run(&score, None, opts, n)?;
            Ok((norm.denormalise(&z)?, score))
        }
        ClassChoice::Fixed { class, guidance } => {
            let score = score.conditional(*class, *guidance)?;
            let z = run(&score, Some(*class), opts, n)?;
            Ok((norm.denormalise(&z)?, score))
        }
        ClassChoice::Each { guidance } => {
            if n_classes == 0 {
                return Err(Error::invalid("this model was trained without classes"));
            }
            let mut score = score;
            let mut parts = Vec::with_capacity(n_classes);
            for c in 0..n_classes as u32 {
                score = score.conditional(c, *guidance)?;
                parts.push(norm.denormalise(&run(&score, Some(c), opts, n)?)?);
            }
            Ok((Tensor::cat(&parts, 0)?, score))
        }
        ClassChoice::Mixture(pi) => {
            if pi.len() != n_classes {
                return Err(Error::invalid(format!(
                    "{} class weights for a model of {n_classes} classes",
                    pi.len()
                )));
            }
            let cls = draw_classes(pi, n, opts.seed)?;
            let d = score.dim();
            let mut rows = vec![0.0; n * d];
            let mut score = score;
            for c in 0..pi.len() {
                let pos: Vec<usize> = (0..n).filter(|&i| cls[i] == c).collect();
                if pos.is_empty() {
                    continue;
                }
                score = score.conditional(c as u32, 0.0)?;
                let o = SampleOptions {
                    seed: opts.seed.wrapping_add(1 + c as u64),
                    ..opts.clone()
                };
                let z = run(&score, Some(c as u32), &o, pos.len())?;
                let (v, _, _) = crate::data::to_rows(&z)?;
                for (j, &i) in pos.iter().enumerate() {
                    rows[i * d..(i + 1) * d].copy_from_slice(&v[j * d..(j + 1) * d]);
                }
            }
            let x = crate::data::from_rows(rows, d, DType::F64, &candle_core::Device::Cpu)?;
            Ok((norm.denormalise(&x)?, score))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Mlp, MlpConfig};
    use crate::process::Process;
    use candle_core::Device;

    /// An untrained 2-D MLP with 3 classes (the sampler's law does not matter here: the
    /// tests compare the class bookkeeping with direct runs of the sampler).
    fn model() -> LearnedScore {
        let cfg = MlpConfig {
            hidden: 16,
            n_classes: 3,
            ..MlpConfig::reference(2)
        };
        LearnedScore::new(
            Mlp::new(cfg, 7, DType::F32, &Device::Cpu).unwrap(),
            Process::ou(2.0, 5.0),
        )
    }

    fn norm() -> Normalisation {
        Normalisation {
            mean: vec![1.0, -2.0],
            std: vec![2.0, 0.5],
        }
    }

    fn opts(seed: u64) -> SampleOptions {
        SampleOptions {
            steps: 8,
            seed,
            ..Default::default()
        }
    }

    fn values(t: &Tensor) -> Vec<f64> {
        let v = t.to_dtype(DType::F64).and_then(|t| t.flatten_all());
        v.and_then(|t| t.to_vec1()).unwrap()
    }

    /// The sampler run directly on the score of `class` (with its guidance weight).
    fn direct(class: Option<(u32, f64)>, seed: u64, n: usize) -> Vec<f64> {
        let s = match class {
            Some((c, w)) => model().conditional(c, w).unwrap(),
            None => model(),
        };
        let z = sample(&s, &Sampler::Ddpm, &opts(seed), n, &mut |_, _| {}).unwrap();
        values(&norm().denormalise(&z).unwrap())
    }

    #[test]
    fn fixed_each_and_null_equal_direct_runs() {
        let run = |choice: &ClassChoice, n: usize| {
            let mut seen = Vec::new();
            let (x, _) = sample_model(model(), &norm(), choice, &Sampler::Ddpm, &opts(5), n, &mut |c, _, _| {
                if seen.last() != Some(&c) {
                    seen.push(c)
                }
            })
            .unwrap();
            (values(&x), seen)
        };
        let (x, seen) = run(&ClassChoice::Null, 6);
        assert_eq!((x, seen), (direct(None, 5, 6), vec![None]));
        let fixed = ClassChoice::Fixed {
            class: 2,
            guidance: 1.5,
        };
        let (x, seen) = run(&fixed, 6);
        assert_eq!((x, seen), (direct(Some((2, 1.5)), 5, 6), vec![Some(2)]));
        let (x, seen) = run(&ClassChoice::Each { guidance: 0.5 }, 4);
        let want: Vec<f64> = (0..3).flat_map(|c| direct(Some((c, 0.5)), 5, 4)).collect();
        assert_eq!((x, seen), (want, vec![Some(0), Some(1), Some(2)]));
        assert_eq!(ClassChoice::Each { guidance: 0.0 }.rows(4, 3), 12);
    }

    #[test]
    fn mixture_rows_are_the_class_runs_in_draw_order() {
        let pi = vec![0.2, 0.0, 0.8];
        let n = 20;
        let (x, _) = sample_model(
            model(),
            &norm(),
            &ClassChoice::Mixture(pi.clone()),
            &Sampler::Ddpm,
            &opts(3),
            n,
            &mut |_, _, _| {},
        )
        .unwrap();
        let x = values(&x);
        let cls = draw_classes(&pi, n, 3).unwrap();
        assert!(!cls.contains(&1), "a class of weight 0 is never drawn");
        for c in [0usize, 2] {
            let pos: Vec<usize> = (0..n).filter(|&i| cls[i] == c).collect();
            // Class c runs with seed + 1 + c over its rows, in f64 before denormalising.
            let s = model().conditional(c as u32, 0.0).unwrap();
            let z = sample(&s, &Sampler::Ddpm, &opts(3 + 1 + c as u64), pos.len(), &mut |_, _| {}).unwrap();
            let z = z.to_dtype(DType::F64).unwrap();
            let want = values(&norm().denormalise(&z).unwrap());
            for (j, &i) in pos.iter().enumerate() {
                assert_eq!(&x[2 * i..2 * i + 2], &want[2 * j..2 * j + 2], "row {i} of class {c}");
            }
        }
    }

    #[test]
    fn class_draws_follow_the_weights() {
        // Frequencies within 4 binomial standard errors of pi / sum(pi).
        let pi = [1.0, 3.0, 4.0];
        let n = 20_000;
        let cls = draw_classes(&pi, n, 11).unwrap();
        for (c, w) in pi.iter().enumerate() {
            let p = w / 8.0;
            let f = cls.iter().filter(|&&k| k == c).count() as f64 / n as f64;
            assert!(
                (f - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt(),
                "class {c}: {f} vs {p}"
            );
        }
        assert!(draw_classes(&[0.0, 0.0], 3, 0).is_err());
        assert!(draw_classes(&[1.0, f64::NAN], 3, 0).is_err());
    }

    #[test]
    fn bad_choices_are_errors() {
        let run = |choice: ClassChoice| {
            sample_model(
                model(),
                &norm(),
                &choice,
                &Sampler::Ddpm,
                &opts(0),
                2,
                &mut |_, _, _| {},
            )
            .is_err()
        };
        assert!(run(ClassChoice::Fixed {
            class: 3,
            guidance: 0.0
        }));
        assert!(run(ClassChoice::Fixed {
            class: 0,
            guidance: -1.0
        }));
        assert!(run(ClassChoice::Mixture(vec![1.0, 1.0])));
        assert_eq!(ClassChoice::default_for(None), ClassChoice::Null);
        assert_eq!(
            ClassChoice::default_for(Some(&[0.5, 0.5])),
            ClassChoice::Mixture(vec![0.5, 0.5])
        );
    }
}
