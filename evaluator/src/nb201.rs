//! The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020).
//!
//! A cell is a DAG of 4 nodes; node `j` is the sum over `i < j` of `op(i→j)(node i)`, which gives
//! 6 edges, each carrying one of 5 operations: 5⁶ = 15,625 cells. Architectures are written in the
//! benchmark's official string format, nodes 1, 2, 3 separated by `+`, each edge as `op~source`:
//!
//! ```text
//! |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|
//! ```

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::error::{Error, Result};

/// The number of edges of a cell.
pub const NUM_EDGES: usize = 6;
/// The number of cells in the space (5⁶).
pub const NUM_ARCHS: usize = 15_625;

/// `(target, source)` node of each edge, in the order of the arch string:
/// `(1←0) + (2←0)(2←1) + (3←0)(3←1)(3←2)`.
pub const EDGES: [(usize, usize); NUM_EDGES] = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)];

/// One candidate operation of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Zeros of the input's shape: the edge is absent.
    None,
    /// Identity.
    SkipConnect,
    /// ReLU → Conv 1×1 (no bias) → BatchNorm.
    NorConv1x1,
    /// ReLU → Conv 3×3, padding 1 (no bias) → BatchNorm.
    NorConv3x3,
    /// Average pool 3×3, stride 1, padding 1, padding not counted.
    AvgPool3x3,
}

impl Op {
    /// All operations, in the benchmark's canonical order.
    pub const ALL: [Op; 5] = [Op::None, Op::SkipConnect, Op::NorConv1x1, Op::NorConv3x3, Op::AvgPool3x3];

    /// The benchmark's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Op::None => "none",
            Op::SkipConnect => "skip_connect",
            Op::NorConv1x1 => "nor_conv_1x1",
            Op::NorConv3x3 => "nor_conv_3x3",
            Op::AvgPool3x3 => "avg_pool_3x3",
        }
    }

    /// The operation with this benchmark name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether the operation holds a convolution (and so parameters).
    pub fn is_conv(self) -> bool {
        matches!(self, Op::NorConv1x1 | Op::NorConv3x3)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cell of the NB201 space: the operation of each edge, in arch-string order (see [`EDGES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// Operations of the 6 edges, in the order of [`EDGES`].
    pub ops: [Op; NUM_EDGES],
}

impl Arch {
    /// A cell from its 6 operations in arch-string edge order.
    pub fn new(ops: [Op; NUM_EDGES]) -> Self {
        Arch { ops }
    }

    /// Parse an official arch string; see [`Arch::to_string`] for the inverse.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidArch { arch: s.to_string(), reason };
        let nodes: Vec<&str> = s.trim().split('+').collect();
        if nodes.len() != 3 {
            return Err(bad(format!("expected 3 node groups separated by '+', found {}", nodes.len())));
        }
        let mut ops = [Op::None; NUM_EDGES];
        let mut edge = 0;
        for (n, group) in nodes.iter().enumerate() {
            let target = n + 1;
            let inner = group
                .strip_prefix('|')
                .and_then(|g| g.strip_suffix('|'))
                .ok_or_else(|| bad(format!("node {target} group '{group}' must be enclosed in '|'")))?;
            let items: Vec<&str> = inner.split('|').collect();
            if items.len() != target {
                return Err(bad(format!("node {target} must have {target} input edge(s), found {}", items.len())));
            }
            for (source, item) in items.iter().enumerate() {
                let (name, src) = item.split_once('~').ok_or_else(|| bad(format!("edge '{item}' is not of the form op~source")))?;
                let op =
                    Op::from_name(name).ok_or_else(|| bad(format!("unknown operation '{name}' (expected one of {})", Op::ALL.map(Op::name).join(", "))))?;
                if src != source.to_string() {
                    return Err(bad(format!("edge '{item}' of node {target} must come from node {source}")));
                }
                ops[edge] = op;
                edge += 1;
            }
        }
        Ok(Arch { ops })
    }

    /// A uniformly random cell.
    pub fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut ops = [Op::None; NUM_EDGES];
        for op in ops.iter_mut() {
            *op = Op::ALL[rng.random_range(0..Op::ALL.len())];
        }
        Arch { ops }
    }

    /// The cell with one uniformly chosen edge changed to a different, uniformly chosen operation
    /// (the mutation of regularized evolution).
    pub fn mutate<R: Rng + ?Sized>(&self, rng: &mut R) -> Self {
        let edge = rng.random_range(0..NUM_EDGES);
        let current = self.ops[edge];
        let others: Vec<Op> = Op::ALL.into_iter().filter(|&op| op != current).collect();
        let mut ops = self.ops;
        ops[edge] = others[rng.random_range(0..others.len())];
        Arch { ops }
    }

    /// The cell's number in `0..15625` when edges are read as base-5 digits (first edge most
    /// significant, ops in [`Op::ALL`] order). This is *not* the benchmark's index, whose order
    /// has no closed form; use the NB201 table for that.
    pub fn ordinal(&self) -> usize {
        self.ops.iter().fold(0, |acc, op| acc * 5 + Op::ALL.iter().position(|o| o == op).unwrap())
    }

    /// The inverse of [`Arch::ordinal`].
    pub fn from_ordinal(mut ordinal: usize) -> Self {
        let mut ops = [Op::None; NUM_EDGES];
        for op in ops.iter_mut().rev() {
            *op = Op::ALL[ordinal % 5];
            ordinal /= 5;
        }
        Arch { ops }
    }

    /// Every cell of the space, in ordinal order.
    pub fn all() -> impl Iterator<Item = Arch> {
        (0..NUM_ARCHS).map(Arch::from_ordinal)
    }

    /// The operation on edge `source → target`.
    pub fn op(&self, target: usize, source: usize) -> Op {
        let i = EDGES.iter().position(|&e| e == (target, source)).expect("edge of the NB201 cell");
        self.ops[i]
    }

    /// Canonical form of the cell, equal for isomorphic cells: the benchmark's "unique string".
    ///
    /// Node 0 is `0`; every other node is the sorted, `+`-joined list of its incoming terms, where
    /// a `none` edge or an edge from a node written `#` gives `#`, `skip_connect` gives its input
    /// node's string unchanged, and any other operation gives `(input)@op`. The output node's
    /// string is the canonical form. This reproduces NB201's isomorphism classes exactly (6,466
    /// classes over the 15,625 cells, checked against the benchmark's `iso_group` in the tests).
    pub fn canonical(&self) -> String {
        let mut nodes: Vec<String> = vec!["0".to_string()];
        for target in 1..4 {
            let mut terms: Vec<String> = (0..target)
                .map(|source| {
                    let input = &nodes[source];
                    match self.op(target, source) {
                        _ if input == "#" => "#".to_string(),
                        Op::None => "#".to_string(),
                        Op::SkipConnect => input.clone(),
                        op => format!("({input})@{}", op.name()),
                    }
                })
                .collect();
            terms.sort();
            nodes.push(terms.join("+"));
        }
        nodes.pop().unwrap()
    }

    /// Whether some input→output path crosses no `none` edge (otherwise the output is zero and
    /// the network sits at chance accuracy).
    pub fn has_path(&self) -> bool {
        let mut reach = [true, false, false, false];
        for (i, &(target, source)) in EDGES.iter().enumerate() {
            if reach[source] && self.ops[i] != Op::None {
                reach[target] = true;
            }
        }
        reach[3]
    }

    /// The number of convolution edges of each kind: `(conv1x1, conv3x3)`.
    pub fn conv_counts(&self) -> (usize, usize) {
        let c1 = self.ops.iter().filter(|&&o| o == Op::NorConv1x1).count();
        let c3 = self.ops.iter().filter(|&&o| o == Op::NorConv3x3).count();
        (c1, c3)
    }
}

impl fmt::Display for Arch {
    /// The official arch string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut edge = 0;
        for target in 1..4 {
            if target > 1 {
                f.write_str("+")?;
            }
            f.write_str("|")?;
            for source in 0..target {
                write!(f, "{}~{}|", self.ops[edge].name(), source)?;
                edge += 1;
            }
        }
        Ok(())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Arch::parse(s)
    }
}

/// Serialised as the official arch string.
impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Arch::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const BEST: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";

    #[test]
    fn parse_and_print_round_trip() {
        let a = Arch::parse(BEST).unwrap();
        assert_eq!(a.to_string(), BEST);
        assert_eq!(a.op(3, 0), Op::SkipConnect);
        assert_eq!(a.op(2, 1), Op::NorConv3x3);
        for arch in Arch::all() {
            assert_eq!(Arch::parse(&arch.to_string()).unwrap(), arch);
            assert_eq!(Arch::from_ordinal(arch.ordinal()), arch);
        }
    }

    #[test]
    fn malformed_strings_are_rejected_with_a_reason() {
        for bad in [
            "",
            "|nor_conv_3x3~0|",
            "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none~0|+|none~0|+|none~0|none~1|none~2|",
            "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|",
        ] {
            let err = Arch::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid architecture"), "{bad}: {err}");
        }
    }

    #[test]
    fn sampling_is_seeded_and_covers_every_op() {
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let a: Vec<Arch> = (0..500).map(|_| Arch::sample(&mut r1)).collect();
        let b: Vec<Arch> = (0..500).map(|_| Arch::sample(&mut r2)).collect();
        assert_eq!(a, b);
        for edge in 0..NUM_EDGES {
            for op in Op::ALL {
                assert!(a.iter().any(|x| x.ops[edge] == op), "edge {edge} never {op}");
            }
        }
    }

    #[test]
    fn mutation_changes_exactly_one_edge() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut a = Arch::sample(&mut rng);
        for _ in 0..1000 {
            let b = a.mutate(&mut rng);
            let diff = (0..NUM_EDGES).filter(|&i| a.ops[i] != b.ops[i]).count();
            assert_eq!(diff, 1);
            a = b;
        }
    }

    #[test]
    fn canonical_form_of_simple_cells() {
        let zero = Arch::new([Op::None; 6]);
        assert!(!zero.has_path());
        assert!(Arch::parse(BEST).unwrap().has_path());
        // The order of the terms of a node does not matter: conv on 0->2 and pool on 1->2 versus
        // the two swapped between otherwise identical branches.
        let a = Arch::parse("|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|").unwrap();
        let b = Arch::parse("|skip_connect~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|").unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), Arch::parse(BEST).unwrap().canonical());
        // Different operations on the path give different forms.
        let c = Arch::parse("|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|").unwrap();
        assert_ne!(a.canonical(), c.canonical());
    }
}
