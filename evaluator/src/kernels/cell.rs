//! A whole NB201 cell as one autograd node.
//!
//! Inside a cell every edge is a ReLU→Conv→BN, a 3×3 average pool or an identity, and every node
//! is a sum. Run through candle's autograd, each of those is a graph node whose input gradient
//! candle allocates as zeros and then accumulates with an extra add, which costs more than the
//! arithmetic of the small ops. As one node, the cell runs its forward and backward passes on
//! plain buffers with our kernels: candle sees one input gradient and one parameter gradient.
//!
//! The parameters of a cell travel as one flat tensor: for every convolution edge, in edge
//! order, its weight, then γ, then β of its BatchNorm.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn::{bn_bwd, bn_fwd, BnStats};
use super::conv::{conv_data, conv_filter, conv_fwd, ConvGeom};
use super::pool::PoolOp;
use super::relu::{relu_fwd, relu_mask};
use super::{supports, Float};

/// What an edge of the cell computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellEdge {
    /// Identity.
    Skip,
    /// 3×3 average pool, stride 1, padding 1, padding not counted.
    Pool,
    /// ReLU → Conv k×k (stride 1, padding k/2, no bias) → BatchNorm with batch statistics.
    Conv(usize),
}

/// The edges of a cell that are not `none`: `(target node, source node, edge)`, nodes 0..=3,
/// source < target.
#[derive(Debug, Clone)]
pub struct CellPlan {
    edges: Vec<(usize, usize, CellEdge)>,
    channels: usize,
}

impl CellPlan {
    /// A plan over `channels` channels.
    pub fn new(edges: Vec<(usize, usize, CellEdge)>, channels: usize) -> Self {
        CellPlan { edges, channels }
    }

    /// Length of the flat parameter tensor.
    pub fn param_len(&self) -> usize {
        let c = self.channels;
        self.edges
            .iter()
            .map(|e| match e.2 {
                CellEdge::Conv(k) => c * c * k * k + 2 * c,
                _ => 0,
            })
            .sum()
    }

    /// Whether some node that is read (or the output) has no incoming edge, i.e. is zero.
    fn has_empty_node(&self) -> bool {
        (1..4).any(|node| {
            let fed = self.edges.iter().any(|e| e.0 == node);
            let read = node == 3 || self.edges.iter().any(|e| e.1 == node);
            read && !fed
        })
    }

    /// `(offset, k)` into the flat parameters of every convolution edge, by edge index.
    fn conv_offsets(&self) -> Vec<Option<(usize, usize)>> {
        let c = self.channels;
        let mut off = 0;
        self.edges
            .iter()
            .map(|e| match e.2 {
                CellEdge::Conv(k) => {
                    let o = off;
                    off += c * c * k * k + 2 * c;
                    Some((o, k))
                }
                _ => None,
            })
            .collect()
    }
}

/// Buffers a forward pass keeps for the backward pass.
struct Saved<T> {
    /// Nodes 1 and 2 (node 0 is the op's input, node 3 its output); `None` for a node without
    /// incoming edges (zero).
    nodes: [Option<Vec<T>>; 2],
    /// For every convolution edge: its convolution output and BatchNorm statistics.
    convs: Vec<Option<(Vec<T>, BnStats)>>,
    /// The parameters the forward pass used.
    params: Vec<T>,
}

type Stash = Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>;

#[derive(Clone)]
struct CellOp {
    plan: Arc<CellPlan>,
    dims: (usize, usize, usize, usize),
    eps: f64,
    saved: Stash,
}

#[derive(Clone)]
struct CellBwdOp {
    op: CellOp,
}

fn add_into<T: Float>(acc: &mut Option<Vec<T>>, v: Vec<T>) {
    match acc {
        None => *acc = Some(v),
        Some(a) => a.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(a, v)| {
            for (x, y) in a.iter_mut().zip(v) {
                *x += *y;
            }
        }),
    }
}

fn add_ref_into<T: Float>(acc: &mut Option<Vec<T>>, v: &[T]) {
    match acc {
        None => *acc = Some(v.to_vec()),
        Some(a) => a.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(a, v)| {
            for (x, y) in a.iter_mut().zip(v) {
                *x += *y;
            }
        }),
    }
}

impl CellOp {
    fn geom(&self, k: usize) -> ConvGeom {
        let (n, c, h, w) = self.dims;
        ConvGeom { n, cin: c, h, w, cout: c, kh: k, kw: k, stride: 1, pad: k / 2, ho: h, wo: w }
    }

    fn pool(&self, adjoint: bool) -> PoolOp {
        let (n, c, h, w) = self.dims;
        PoolOp { n, c, h, w, k: 3, stride: 1, pad: 1, ho: h, wo: w, count_pad: false, adjoint }
    }

    fn forward<T: Float>(&self, x: &[T], params: &[T]) -> Vec<T> {
        let (n, c, h, w) = self.dims;
        let hw = h * w;
        let offsets = self.plan.conv_offsets();
        let zeros = if self.plan.has_empty_node() { vec![T::zero(); x.len()] } else { Vec::new() };
        let mut nodes: [Option<Vec<T>>; 3] = [None, None, None];
        // ReLU of each node, computed once however many convolutions read it.
        let mut relus: [Option<Vec<T>>; 3] = [None, None, None];
        let mut convs: Vec<Option<(Vec<T>, BnStats)>> = vec![None; 0];
        convs.resize_with(self.plan.edges.len(), || None);
        for target in 1..4 {
            let mut sum: Option<Vec<T>> = None;
            for (i, &(t, s, edge)) in self.plan.edges.iter().enumerate() {
                if t != target {
                    continue;
                }
                let input: &[T] = if s == 0 { x } else { nodes[s - 1].as_deref().unwrap_or(&zeros) };
                match edge {
                    CellEdge::Skip => add_ref_into(&mut sum, input),
                    CellEdge::Pool => add_into(&mut sum, self.pool(false).run(input).0),
                    CellEdge::Conv(k) => {
                        let (off, _) = offsets[i].expect("conv edge has parameters");
                        let wl = c * c * k * k;
                        let (wt, gamma, beta) = (&params[off..off + wl], &params[off + wl..off + wl + c], &params[off + wl + c..off + wl + 2 * c]);
                        let r = relus[s].get_or_insert_with(|| relu_fwd(input));
                        let y = conv_fwd(&self.geom(k), r, wt);
                        let (z, stats) = bn_fwd(&y, gamma, beta, (n, c, hw), self.eps);
                        add_into(&mut sum, z);
                        convs[i] = Some((y, stats));
                    }
                }
            }
            nodes[target - 1] = sum;
            relus[target - 1] = None; // no edge reads node target-1 any more
        }
        let out = nodes[2].take().unwrap_or_else(|| vec![T::zero(); x.len()]);
        let [n1, n2, _] = nodes;
        let saved = Saved { nodes: [n1, n2], convs, params: params.to_vec() };
        *self.saved.lock().expect("cell stash") = Some(Box::new(saved));
        out
    }

    fn backward<T: Float>(&self, x: &[T], gout: &[T]) -> Result<Vec<T>> {
        let (n, c, h, w) = self.dims;
        let hw = h * w;
        let guard = self.saved.lock().expect("cell stash");
        let Some(saved) = guard.as_ref().and_then(|b| b.downcast_ref::<Saved<T>>()) else {
            candle_core::bail!("cell: backward without a matching forward pass")
        };
        let params = &saved.params[..];
        let offsets = self.plan.conv_offsets();
        let zeros = if self.plan.has_empty_node() { vec![T::zero(); x.len()] } else { Vec::new() };
        let mut gparams = vec![T::zero(); params.len()];
        // Gradients of nodes 0..=2; node 3's is `gout`.
        let mut grads: [Option<Vec<T>>; 3] = [None, None, None];
        let mut relus: [Option<Vec<T>>; 3] = [None, None, None];
        for target in (1..4).rev() {
            let owned;
            let g: &[T] = if target == 3 {
                gout
            } else {
                match grads[target].take() {
                    Some(g) => {
                        owned = g;
                        &owned
                    }
                    None => continue,
                }
            };
            for (i, &(t, s, edge)) in self.plan.edges.iter().enumerate() {
                if t != target {
                    continue;
                }
                let input: &[T] = if s == 0 { x } else { saved.nodes[s - 1].as_deref().unwrap_or(&zeros) };
                match edge {
                    CellEdge::Skip => add_ref_into(&mut grads[s], g),
                    CellEdge::Pool => add_into(&mut grads[s], self.pool(true).run(g).0),
                    CellEdge::Conv(k) => {
                        let (off, _) = offsets[i].expect("conv edge has parameters");
                        let wl = c * c * k * k;
                        let (y, stats) = saved.convs[i].as_ref().expect("conv edge saved its output");
                        let packed = bn_bwd(y, g, &params[off + wl..off + wl + c], (n, c, hw), stats);
                        let (gy, gbn) = packed.split_at(y.len());
                        gparams[off + wl..off + wl + 2 * c].copy_from_slice(gbn);
                        let geom = self.geom(k);
                        let r = relus[s].get_or_insert_with(|| relu_fwd(input));
                        let gw = conv_filter(&geom, r, gy);
                        gparams[off..off + wl].copy_from_slice(&gw);
                        let gr = conv_data(&geom, gy, &params[off..off + wl]);
                        add_into(&mut grads[s], relu_mask(&gr, input));
                    }
                }
            }
        }
        let mut out = grads[0].take().unwrap_or_else(|| vec![T::zero(); x.len()]);
        out.extend_from_slice(&gparams);
        Ok(out)
    }
}

impl CustomOp2 for CellOp {
    fn name(&self) -> &'static str {
        "autoagent-nb201-cell"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch!(self.name(); (s1, l1), (s2, l2) => |x, p| Ok::<_, candle_core::Error>(self.forward(x, p)));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, params: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op2_no_bwd(&grad.contiguous()?, &CellBwdOp { op: self.clone() })?;
        let nx = x.elem_count();
        let gx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let gparams = packed.narrow(0, nx, params.elem_count())?;
        Ok((Some(gx), Some(gparams)))
    }
}

impl CustomOp2 for CellBwdOp {
    fn name(&self) -> &'static str {
        "autoagent-nb201-cell-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch!(self.name(); (s1, l1), (s2, l2) => |x, g| self.op.backward(x, g));
        let len = l1.shape().elem_count() + self.op.plan.param_len();
        Ok((out, Shape::from(len)))
    }
}

/// Per-channel batch mean and biased variance of one BatchNorm's input.
pub type ChannelStats = (Vec<f64>, Vec<f64>);

/// Run a cell on an NCHW batch `x` with its flat parameters (see the module docs), BatchNorm
/// with batch statistics. Returns the cell's output and, for every convolution edge in plan
/// order, the batch mean and biased variance of its convolution output (for running statistics).
/// First-order gradients flow to `x` and `params`.
pub fn nb201_cell(plan: &Arc<CellPlan>, x: &Tensor, params: &Tensor, eps: f64) -> Result<(Tensor, Vec<ChannelStats>)> {
    let (n, c, h, w) = x.dims4()?;
    if !x.device().is_cpu() || !supports(x.dtype()) || c != plan.channels || params.elem_count() != plan.param_len() {
        candle_core::bail!("nb201_cell: needs f32/f64 CPU tensors with {} channels and {} parameters", plan.channels, plan.param_len())
    }
    let saved: Stash = Arc::new(Mutex::new(None));
    let op = CellOp { plan: plan.clone(), dims: (n, c, h, w), eps, saved: saved.clone() };
    let out = x.contiguous()?.apply_op2(&params.contiguous()?, op)?;
    let guard = saved.lock().expect("cell stash");
    let stats = |convs: Vec<Option<(Vec<f64>, Vec<f64>)>>| convs.into_iter().flatten().collect::<Vec<_>>();
    let any = guard.as_ref().expect("forward pass saved its buffers");
    let per_edge = if let Some(s) = any.downcast_ref::<Saved<f32>>() {
        stats(s.convs.iter().map(|c| c.as_ref().map(|(_, st)| (st.mean.clone(), st.var.clone()))).collect())
    } else if let Some(s) = any.downcast_ref::<Saved<f64>>() {
        stats(s.convs.iter().map(|c| c.as_ref().map(|(_, st)| (st.mean.clone(), st.var.clone()))).collect())
    } else {
        candle_core::bail!("nb201_cell: unexpected saved buffers")
    };
    Ok((out, per_edge))
}
