//! How the next token is chosen from the logits: [`Sampling`] (greedy by
//! default; temperature, top-k, top-p, repetition penalty and a seed), and
//! the pure functions that apply it. No model is needed to run them, so the
//! unit tests below feed hand-made logits.

use crate::error::{ModelError, Result};
use rand::Rng;
use rand::rngs::StdRng;

/// How the next token is chosen. The default is greedy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by this.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Divide positive / multiply negative logits of already-seen tokens (1 = off),
    /// as transformers' `RepetitionPenaltyLogitsProcessor` does.
    pub repetition_penalty: f32,
    /// Seed for the sampler: the same seed and inputs give the same text.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Rejects parameters that would make [`sample`] divide by zero or
    /// produce NaN probabilities, naming the parameter and its value.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidRequest(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature {} must be a finite number ≥ 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// Chooses the next token from `logits` (`generated` and `prompt` are the
/// tokens the repetition penalty applies to).
pub(crate) fn sample(
    mut logits: Vec<f32>,
    s: &Sampling,
    generated: &[u32],
    prompt: &[u32],
    rng: &mut StdRng,
) -> u32 {
    if s.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / s.repetition_penalty
                } else {
                    *l * s.repetition_penalty
                };
            }
        }
    }
    if s.temperature == 0.0 {
        return argmax(&logits);
    }
    // Candidates by logit, descending (ties: lower id first). Only the head
    // of the order is ever needed, so it is found by partial selection
    // (`select_nth_unstable_by`, linear) and only that head is sorted: top-k
    // needs k candidates; top-p needs as many as reach the mass, found by
    // doubling. A full sort of a 49k vocabulary costs ~2 ms per token.
    let order = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weight = |l: f32| (((l - max) / s.temperature) as f64).exp();
    let limit = if s.top_k > 0 {
        s.top_k.min(logits.len())
    } else {
        logits.len()
    };
    let mut all: Vec<u32> = (0..logits.len() as u32).collect();
    // Softmax's denominator over the candidates top-k leaves.
    let total: f64 = if limit < all.len() {
        all.select_nth_unstable_by(limit - 1, order);
        all[..limit]
            .iter()
            .map(|&i| weight(logits[i as usize]))
            .sum()
    } else {
        logits.iter().map(|&l| weight(l)).sum()
    };
    // With top-p, the smallest head that holds the nucleus (with a margin
    // for rounding); without it, all `limit` candidates.
    let mut head = if s.top_p < 1.0 { 64.min(limit) } else { limit };
    let idx = loop {
        let mut cand = all[..limit].to_vec();
        if head < limit {
            cand.select_nth_unstable_by(head - 1, order);
            cand.truncate(head);
        }
        cand.sort_unstable_by(order);
        let mass: f64 = cand
            .iter()
            .map(|&i| weight(logits[i as usize]))
            .sum::<f64>()
            / total;
        if head >= limit || mass > s.top_p as f64 + 1e-9 {
            break cand;
        }
        head = (head * 4).min(limit);
    };
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| weight(logits[i as usize]) / total)
        .collect();
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= s.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
    }
    let r: f64 = rng.random();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if r < acc {
            return idx[i];
        }
    }
    idx[probs.len() - 1]
}

/// Index of the largest logit (the first one on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let s = Sampling::default();
        assert_eq!(sample(vec![0.0, 2.0, 1.0], &s, &[], &[], &mut rng()), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let s = Sampling {
            repetition_penalty: 4.0,
            ..Sampling::default()
        };
        // Token 1 (seen in the prompt) drops from 2.0 to 0.5, below token 2.
        assert_eq!(sample(vec![0.0, 2.0, 1.0], &s, &[], &[1], &mut rng()), 2);
        // A negative logit is multiplied, so it falls further.
        let s = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::default()
        };
        assert_eq!(sample(vec![-1.0, -1.5, -3.0], &s, &[0], &[], &mut rng()), 1);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = vec![0.5, 0.4, 2.0, 1.9];
        for s in [
            Sampling {
                temperature: 1.0,
                top_k: 1,
                ..Sampling::default()
            },
            Sampling {
                temperature: 1.0,
                top_p: 1e-6,
                ..Sampling::default()
            },
        ] {
            let mut r = rng();
            for _ in 0..20 {
                assert_eq!(sample(logits.clone(), &s, &[], &[], &mut r), 2, "{s:?}");
            }
        }
    }

    #[test]
    fn top_k_never_picks_outside_the_k_best() {
        let s = Sampling {
            temperature: 5.0,
            top_k: 2,
            ..Sampling::default()
        };
        let mut r = rng();
        for _ in 0..200 {
            let t = sample(vec![1.0, 0.0, 3.0, 2.9], &s, &[], &[], &mut r);
            assert!(t == 2 || t == 3, "picked {t}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let s = Sampling {
            temperature: 1.0,
            ..Sampling::default()
        };
        let logits = vec![0.1, 0.2, 0.3, 0.25];
        let run = || {
            let mut r = StdRng::seed_from_u64(s.seed);
            (0..16)
                .map(|_| sample(logits.clone(), &s, &[], &[], &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn bad_parameters_are_named() {
        for (s, what) in [
            (
                Sampling {
                    temperature: -1.0,
                    ..Sampling::default()
                },
                "temperature -1",
            ),
            (
                Sampling {
                    top_p: 0.0,
                    ..Sampling::default()
                },
                "top_p 0",
            ),
            (
                Sampling {
                    repetition_penalty: f32::NAN,
                    ..Sampling::default()
                },
                "repetition_penalty NaN",
            ),
        ] {
            let e = s
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(what), "{e}");
        }
        assert!(Sampling::default().validate().is_ok());
    }

    /// The old full-sort sampler, kept as the reference the partial
    /// selection must agree with token for token.
    fn sample_by_full_sort(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> u32 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if s.top_k > 0 && s.top_k < idx.len() {
            idx.truncate(s.top_k);
        }
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| (((logits[i as usize] - max) / s.temperature) as f64).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if s.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= s.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let sum: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        let r: f64 = rng.random();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return idx[i];
            }
        }
        idx[probs.len() - 1]
    }

    #[test]
    fn partial_selection_samples_what_a_full_sort_samples() {
        let mut g = StdRng::seed_from_u64(3);
        for case in 0..60 {
            let n = [5, 300, 5000][case % 3];
            // Peaked and flat distributions, with repeated values (ties).
            let spread = [0.5f32, 4.0, 12.0][case % 3];
            let logits: Vec<f32> = (0..n)
                .map(|_| (g.random::<f32>() * spread * 8.0).round() / 8.0)
                .collect();
            let s = Sampling {
                temperature: [0.3, 1.0, 2.0][case % 3],
                top_k: [0, 1, 7, 40, 100_000][case % 5],
                top_p: [1.0, 0.9, 0.5, 0.999, 0.05][(case / 5) % 5],
                seed: case as u64,
                ..Sampling::default()
            };
            let (mut a, mut b) = (
                StdRng::seed_from_u64(case as u64),
                StdRng::seed_from_u64(case as u64),
            );
            for step in 0..20 {
                let got = sample(logits.clone(), &s, &[], &[], &mut a);
                let want = sample_by_full_sort(&logits, &s, &mut b);
                assert_eq!(got, want, "case {case} step {step}: {s:?}");
            }
        }
    }
}
