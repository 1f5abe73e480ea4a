//! Picking the next token: greedy at temperature 0, otherwise a draw from the softmax of
//! `logits / temperature` with a seeded ChaCha generator (one draw per decision, so a seed
//! replays exactly). Constrained slots draw among the tokens an [`OptionTrie`] allows.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::llm::LlmError;

/// Temperature and random state of one request.
pub(crate) struct Sampler {
    temperature: f32,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Greedy when `temperature <= 0`; `seed = None` draws a fresh seed.
    pub(crate) fn new(temperature: f32, seed: Option<u64>) -> Result<Self, LlmError> {
        if !temperature.is_finite() {
            return Err(LlmError::Config(format!("temperature must be a finite number, got {temperature}")));
        }
        let seed = seed.unwrap_or_else(|| rand::rng().random());
        Ok(Sampler {
            temperature,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// One token of the whole vocabulary (`0..logits.len()`).
    pub(crate) fn pick(&mut self, logits: &[f32]) -> u32 {
        self.choose(logits, 0..logits.len() as u32).unwrap_or(0)
    }

    /// One of `candidates` (non-empty; ties in greedy mode go to the first). A candidate whose
    /// logit is not finite, or is outside `logits`, counts as impossible, unless all are.
    pub(crate) fn pick_from(&mut self, logits: &[f32], candidates: &[u32]) -> u32 {
        assert!(!candidates.is_empty(), "no candidate token");
        self.choose(logits, candidates.iter().copied()).unwrap_or(candidates[0])
    }

    fn choose<I: Iterator<Item = u32> + Clone>(&mut self, logits: &[f32], candidates: I) -> Option<u32> {
        let logit = |t: u32| logits.get(t as usize).copied().filter(|l| l.is_finite());
        let scored = candidates.filter_map(move |t| logit(t).map(|l| (t, l)));
        let (best, max) = scored.clone().fold(None, |acc: Option<(u32, f32)>, (t, l)| match acc {
            Some((_, bl)) if bl >= l => acc,
            _ => Some((t, l)),
        })?;
        if self.temperature <= 0.0 {
            return Some(best);
        }
        let inv_t = 1.0 / f64::from(self.temperature);
        let weight = |l: f32| ((f64::from(l) - f64::from(max)) * inv_t).exp();
        let total: f64 = scored.clone().map(|(_, l)| weight(l)).sum();
        let mut u = self.rng.random::<f64>() * total;
        for (t, l) in scored {
            let w = weight(l);
            if u < w {
                return Some(t);
            }
            u -= w;
        }
        // Rounding at the very end of the range.
        Some(best)
    }
}

/// The options of one choice slot as a trie over their token sequences.
#[derive(Debug)]
pub(crate) struct OptionTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// (token, child), sorted by token.
    children: Vec<(u32, usize)>,
    /// The option that ends here.
    option: Option<usize>,
}

impl OptionTrie {
    /// The trie of the options' tokenizations; an error when one is empty or the prefix of
    /// another (the slot could not tell where an option ends).
    pub(crate) fn new(options: &[Vec<u32>]) -> Result<Self, LlmError> {
        let mut nodes = vec![Node::default()];
        for (i, tokens) in options.iter().enumerate() {
            if tokens.is_empty() {
                return Err(LlmError::Config(format!("choice option {i} tokenizes to nothing")));
            }
            let mut at = 0;
            for &t in tokens {
                if nodes[at].option.is_some() {
                    return Err(LlmError::Config(format!("choice option {i} extends another option's tokens")));
                }
                at = match nodes[at].children.binary_search_by_key(&t, |c| c.0) {
                    Ok(k) => nodes[at].children[k].1,
                    Err(k) => {
                        nodes.push(Node::default());
                        let child = nodes.len() - 1;
                        nodes[at].children.insert(k, (t, child));
                        child
                    }
                };
            }
            if nodes[at].option.is_some() || !nodes[at].children.is_empty() {
                return Err(LlmError::Config(format!("choice option {i} is a token prefix of another option")));
            }
            nodes[at].option = Some(i);
        }
        Ok(OptionTrie { nodes })
    }

    /// The root.
    pub(crate) fn root(&self) -> usize {
        0
    }

    /// Tokens that continue at least one option from `node` that is not `excluded`, ascending.
    pub(crate) fn allowed_except(&self, node: usize, excluded: &[usize]) -> Vec<u32> {
        self.nodes[node]
            .children
            .iter()
            .filter(|&&(_, child)| self.reaches(child, excluded))
            .map(|c| c.0)
            .collect()
    }

    /// The node after `token` (which must be allowed).
    pub(crate) fn step(&self, node: usize, token: u32) -> usize {
        let children = &self.nodes[node].children;
        children[children.binary_search_by_key(&token, |c| c.0).expect("an allowed token")].1
    }

    /// Whether an option outside `excluded` ends at or below `node`.
    fn reaches(&self, node: usize, excluded: &[usize]) -> bool {
        self.nodes[node].option.is_some_and(|o| !excluded.contains(&o)) || self.nodes[node].children.iter().any(|&(_, c)| self.reaches(c, excluded))
    }

    /// The option complete at `node`.
    pub(crate) fn complete(&self, node: usize) -> Option<usize> {
        self.nodes[node].option
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_highest_allowed_logit() {
        let mut s = Sampler::new(0.0, Some(1)).unwrap();
        let logits = [0.0, 5.0, 1.0, 3.0];
        assert_eq!(s.pick(&logits), 1);
        assert_eq!(s.pick_from(&logits, &[0, 2, 3]), 3);
        assert_eq!(s.pick_from(&[f32::NAN, 1.0], &[0, 1]), 1);
    }

    #[test]
    fn sampling_follows_the_softmax_and_replays() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let draw = |seed| {
            let mut s = Sampler::new(1.0, Some(seed)).unwrap();
            (0..4000).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        assert!(!a.contains(&2));
    }

    #[test]
    fn trie_walks_options_and_rejects_prefixes() {
        let t = OptionTrie::new(&[vec![5, 1], vec![5, 2], vec![7]]).unwrap();
        assert_eq!(t.allowed_except(t.root(), &[]), [5, 7]);
        let n = t.step(t.root(), 5);
        assert_eq!(t.allowed_except(n, &[]), [1, 2]);
        assert_eq!(t.complete(t.step(n, 2)), Some(1));
        assert!(OptionTrie::new(&[vec![5], vec![5, 2]]).is_err());
        assert!(OptionTrie::new(&[vec![5, 2], vec![5]]).is_err());
        assert!(OptionTrie::new(&[vec![]]).is_err());
        // Excluding option 0 closes the branch that only it uses.
        assert_eq!(t.allowed_except(n, &[0]), [2]);
        assert_eq!(t.allowed_except(t.root(), &[0, 1]), [7]);
        assert_eq!(t.allowed_except(t.root(), &[2]), [5]);
    }
}
