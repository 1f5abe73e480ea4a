//! A whole NB201 cell as one autograd node.
//!
//! Inside a cell every edge is a ReLU→Conv→BN, a 3×3 average pool or an identity, and every node
//! is a sum. Run through candle's autograd, each of those is a graph node whose input gradient
//! candle allocates as zeros and then accumulates with an extra add, which costs more than the
//! arithmetic of the small ops. As one node, the cell runs its forward and backward passes on
//! plain buffers with our kernels: candle sees one input gradient and one parameter gradient.
//!
//! A convolution edge works sample by sample (each thread one contiguous share of the batch),
//! so that its intermediates stay in cache:
//!
//! - forward: im2col of the source node with the ReLU fused in, the GEMM, and the per-channel
//!   moments of the sample's output while it is hot; the BatchNorm is then applied inside the
//!   target node's sum (no normalised copy is stored);
//! - backward: one pass for the per-channel sums of the BatchNorm gradient, then per sample the
//!   BatchNorm input gradient `gyb`, one im2col of `gyb` that serves both the input gradient
//!   (a convolution of `gyb` with the flipped weight: a GEMM shaped like the forward one, no
//!   col2im scatter) and the weight gradient (against `relu(x)`, no second im2col), and the ReLU
//!   mask applied while adding into the source node's gradient.
//!
//! In f32 on CPUs with AVX-512 the k×k convolutions (k > 1) skip im2col: the forward
//! convolution and the input gradient are implicit GEMMs ([`super::implicit`]) that read the
//! shifted windows of `relu(x)` and of `gyb` in place, and the weight gradients of all the edges
//! leaving a node are one implicit GEMM against `relu(x)` transposed and zero-padded per sample
//! (with channels a multiple of 16; otherwise against one im2col of `relu(x)` per sample). A
//! cell of 6111 went from six im2cols per sample to none.
//!
//! The parameters of a cell travel as one flat tensor: for every convolution edge, in edge
//! order, its weight, then γ, then β of its BatchNorm.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn::{bwd_coefficients, grad_sums, input_gradient_dots, input_gradient_into, input_gradient_par, plane_moments, stats_from_planes, BnStats};
use super::conv::{flip_weight, im2col_map, inner_threads, per_thread, ConvGeom};
use super::implicit::{self, PackedFilter, PaddedT};
use super::pool::PoolOp;
use super::{alloc_uninit, f32s, f32s_mut, supports, Float};

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

    /// The convolution edges leaving node `source`, grouped by kernel size: `(k, edge indices in
    /// plan order)`, the sizes in order of first appearance. A group runs together, sharing the
    /// node's im2col (implicit path: its ReLU copy) forward and its ReLU backward.
    fn conv_groups(&self, source: usize) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, &(_, s, edge)) in self.edges.iter().enumerate() {
            if let (true, CellEdge::Conv(k)) = (s == source, edge) {
                match groups.iter_mut().find(|(gk, _)| *gk == k) {
                    Some((_, group)) => group.push(i),
                    None => groups.push((k, vec![i])),
                }
            }
        }
        groups
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
    /// Per convolution edge (in plan order), what the backward pass reports about the edge's
    /// convolution output.
    conv_taps: Option<Arc<Vec<ConvTap>>>,
}

/// A place for a tensor that a backward pass fills in.
pub type GradSlot = Arc<Mutex<Option<Tensor>>>;

/// A place for per-`(sample, channel)` sums that a backward pass fills in (`n × k`, row-major).
pub type DotsSlot = Arc<Mutex<Option<Vec<f64>>>>;

/// What a fused kernel's backward pass reports about a convolution output `y` (before
/// BatchNorm): instrumentation for zero-cost proxies.
#[derive(Debug, Clone)]
pub enum ConvTap {
    /// `∂L/∂y` as a tensor of `y`'s shape; the forward pass also returns a copy of `y`.
    Grad(GradSlot),
    /// `Σ_hw y·∂L/∂y` per sample and channel, without materialising `y`'s copy or its gradient.
    Dots(DotsSlot),
}

/// What [`nb201_cell_traced`] records besides the output.
#[derive(Debug, Clone, Default)]
pub struct CellTrace {
    /// Return the values of nodes 1 and 2.
    pub nodes: bool,
    /// One tap per convolution edge (plan order), filled during the backward pass; with
    /// [`ConvTap::Grad`] taps the convolution outputs are returned too.
    pub conv_taps: Option<Vec<ConvTap>>,
}

/// What [`nb201_cell_traced`] returns.
#[derive(Debug)]
pub struct CellTraced {
    /// The cell's output.
    pub out: Tensor,
    /// Batch mean and biased variance of every convolution output (plan order).
    pub stats: Vec<ChannelStats>,
    /// Nodes 1 and 2 (copies without gradients; zeros for a node without incoming edges), when
    /// asked for.
    pub nodes: Option<[Tensor; 2]>,
    /// The convolution outputs before BatchNorm (copies, plan order), when gradient taps were
    /// given.
    pub conv_outputs: Vec<Tensor>,
}

#[derive(Clone)]
struct CellBwdOp {
    op: CellOp,
}

/// A vector of `len` unspecified elements with room for `room` more (the backward pass appends
/// the parameter gradients to node 0's gradient without moving it).
fn alloc_room<T: Float>(len: usize, room: usize) -> Vec<T> {
    let mut v = alloc_uninit(len + room);
    v.truncate(len);
    v
}

/// A copy of `v` made in parallel, with `room` spare capacity.
fn par_copy<T: Float>(v: &[T], room: usize) -> Vec<T> {
    let mut a = alloc_room(v.len(), room);
    a.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(a, v)| a.copy_from_slice(v));
    a
}

/// `acc += v` (`acc = v` when empty, with `room` spare capacity).
fn add_into<T: Float>(acc: &mut Option<Vec<T>>, v: Vec<T>, room: usize) {
    match acc {
        None if room == 0 => *acc = Some(v),
        None => *acc = Some(par_copy(&v, room)),
        Some(a) => a.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(a, v)| {
            for (x, y) in a.iter_mut().zip(v) {
                *x += *y;
            }
        }),
    }
}

/// `gx (+)= gr · [x > 0]`: the ReLU's input gradient, written when `fresh`, else added.
fn mask_accumulate<T: Float>(gx: &mut [T], gr: &[T], x: &[T], fresh: bool) {
    if fresh {
        for ((o, gv), xv) in gx.iter_mut().zip(gr).zip(x) {
            *o = if *xv > T::zero() { *gv } else { T::zero() };
        }
    } else {
        for ((o, gv), xv) in gx.iter_mut().zip(gr).zip(x) {
            if *xv > T::zero() {
                *o += *gv;
            }
        }
    }
}

/// `acc += v` (a copy of `v` when empty, with `room` spare capacity).
fn add_ref_into<T: Float>(acc: &mut Option<Vec<T>>, v: &[T], room: usize) {
    match acc {
        None => *acc = Some(par_copy(v, room)),
        Some(a) => a.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(a, v)| {
            for (x, y) in a.iter_mut().zip(v) {
                *x += *y;
            }
        }),
    }
}

/// `acc += scale[ch]·y + shift[ch]` per `(sample, channel)` plane of `hw` elements (the
/// BatchNorm of a convolution edge, fused into the node's sum); the first term initialises.
fn add_affine_into<T: Float>(acc: &mut Option<Vec<T>>, y: &[T], affine: &[(T, T)], hw: usize) {
    let c = affine.len();
    let fresh = acc.is_none();
    let out = acc.get_or_insert_with(|| alloc_uninit(y.len()));
    out.par_chunks_mut(hw).zip(y.par_chunks(hw)).enumerate().for_each(|(plane, (o, yp))| {
        let (scale, shift) = affine[plane % c];
        if fresh {
            for (o, v) in o.iter_mut().zip(yp) {
                *o = *v * scale + shift;
            }
        } else {
            for (o, v) in o.iter_mut().zip(yp) {
                *o += *v * scale + shift;
            }
        }
    });
}

/// One convolution edge's share of a grouped backward pass ([`CellOp::conv_group_bwd`]).
struct EdgeBwd<'a, T> {
    /// Gradient of the edge's BatchNorm output (its target node's gradient).
    g: &'a [T],
    /// The edge's convolution output.
    y: &'a [T],
    /// The edge's weight.
    w: &'a [T],
    /// Its BatchNorm input-gradient coefficients ([`bwd_coefficients`]).
    coef: Vec<[f64; 3]>,
}

impl CellOp {
    fn geom(&self, k: usize) -> ConvGeom {
        let (n, c, h, w) = self.dims;
        ConvGeom::same(n, c, c, h, w, k)
    }

    fn pool(&self, adjoint: bool) -> PoolOp {
        let (n, c, h, w) = self.dims;
        PoolOp {
            n,
            c,
            h,
            w,
            k: 3,
            stride: 1,
            pad: 1,
            ho: h,
            wo: w,
            count_pad: false,
            adjoint,
        }
    }

    /// ReLU → Conv of the edges that leave one node with the same kernel size, over the batch:
    /// each edge's convolution output and its BatchNorm statistics. Per sample (one contiguous
    /// share of the batch per thread), the ReLU is fused into im2col, which all the edges share,
    /// and the per-channel moments are taken while the sample's outputs are in cache.
    fn conv_group_fwd<T: Float>(&self, k: usize, input: &[T], wts: &[&[T]]) -> Vec<(Vec<T>, BnStats)> {
        let (n, c, h, w) = self.dims;
        let (hw, xs) = (h * w, c * h * w);
        let g = self.geom(k);
        let threads = inner_threads(n);
        let per = per_thread(n);
        let mut ys: Vec<Vec<T>> = wts.iter().map(|_| alloc_uninit::<T>(n * xs)).collect();
        let mut parts: Vec<Vec<(f64, f64)>> = wts.iter().map(|_| vec![(0.0, 0.0); n * c]).collect();
        {
            // One job per share of samples, holding that share of every edge's output.
            let mut y_shares: Vec<_> = ys.iter_mut().map(|y| y.chunks_mut(per * xs)).collect();
            let mut p_shares: Vec<_> = parts.iter_mut().map(|p| p.chunks_mut(per * c)).collect();
            let mut jobs = Vec::new();
            for share in 0..n.div_ceil(per) {
                let yj: Vec<&mut [T]> = y_shares.iter_mut().map(|it| it.next().expect("one share per job")).collect();
                let pj: Vec<&mut [(f64, f64)]> = p_shares.iter_mut().map(|it| it.next().expect("one share per job")).collect();
                jobs.push((share, yj, pj));
            }
            // f32 "same" convolutions on AVX-512 run as implicit GEMMs on `relu(x)` (copied at a
            // channel pitch that spreads the planes over the cache sets); the rest through im2col.
            let kk = k * k;
            let packed: Option<Vec<PackedFilter>> = (k > 1 && implicit::available())
                .then(|| {
                    wts.iter()
                        .map(|wt| f32s(wt).map(|wt| PackedFilter::new(c, c, kk, |i, ch, t| wt[(i * c + ch) * kk + t])))
                        .collect()
                })
                .flatten();
            let pitch = implicit::pitch(hw);
            jobs.into_par_iter().for_each(|(share, mut yj, mut pj)| {
                let mut col = alloc_uninit::<T>(if packed.is_some() { c * pitch } else { g.k() * hw });
                let samples = yj[0].len() / xs;
                for j in 0..samples {
                    let i = share * per + j;
                    let xi = &input[i * xs..(i + 1) * xs];
                    if packed.is_some() {
                        implicit::copy_pitched(xi, hw, pitch, &mut col, true);
                    } else {
                        im2col_map::<T, true>(&g, xi, &mut col);
                    }
                    for (e, (ye, pe)) in yj.iter_mut().zip(pj.iter_mut()).enumerate() {
                        let yi = &mut ye[j * xs..(j + 1) * xs];
                        match (&packed, f32s(&col), f32s_mut(yi)) {
                            (Some(packed), Some(rx), Some(y32)) => implicit::conv_same_f32(&g, &packed[e], rx, pitch, y32, false),
                            _ => T::matmul(c, hw, g.k(), yi, hw, false, wts[e], (g.k(), 1), &col, (hw, 1), threads),
                        }
                        for (ch, p) in pe[j * c..(j + 1) * c].iter_mut().enumerate() {
                            *p = plane_moments(&yi[ch * hw..(ch + 1) * hw]);
                        }
                    }
                }
            });
        }
        ys.into_iter().zip(parts).map(|(y, p)| (y, stats_from_planes(&p, c, hw, self.eps))).collect()
    }

    /// The convolution edges leaving node `source`, grouped by kernel size (in plan order), run
    /// on the node's value; their outputs and statistics go to `convs`.
    fn convs_from<T: Float>(&self, source: usize, input: &[T], params: &[T], convs: &mut [Option<(Vec<T>, BnStats)>]) {
        let c = self.dims.1;
        let offsets = self.plan.conv_offsets();
        for (k, group) in self.plan.conv_groups(source) {
            let wts: Vec<&[T]> = group
                .iter()
                .map(|&i| {
                    let (off, _) = offsets[i].expect("conv edge has parameters");
                    &params[off..off + c * c * k * k]
                })
                .collect();
            for (i, out) in group.iter().zip(self.conv_group_fwd(k, input, &wts)) {
                convs[*i] = Some(out);
            }
        }
    }

    fn forward<T: Float>(&self, x: &[T], params: &[T]) -> Vec<T> {
        let (_, c, h, w) = self.dims;
        let hw = h * w;
        let offsets = self.plan.conv_offsets();
        let zeros = if self.plan.has_empty_node() { vec![T::zero(); x.len()] } else { Vec::new() };
        let mut nodes: [Option<Vec<T>>; 3] = [None, None, None];
        let mut convs: Vec<Option<(Vec<T>, BnStats)>> = vec![None; 0];
        convs.resize_with(self.plan.edges.len(), || None);
        // A node's outgoing convolutions run as soon as the node is complete, so that edges
        // leaving it share one im2col (implicit path: one ReLU copy).
        self.convs_from(0, x, params, &mut convs);
        for target in 1..4 {
            let mut sum: Option<Vec<T>> = None;
            for (i, &(t, s, edge)) in self.plan.edges.iter().enumerate() {
                if t != target {
                    continue;
                }
                let input: &[T] = if s == 0 { x } else { nodes[s - 1].as_deref().unwrap_or(&zeros) };
                match edge {
                    CellEdge::Skip => add_ref_into(&mut sum, input, 0),
                    CellEdge::Pool => add_into(&mut sum, self.pool(false).run(input).0, 0),
                    CellEdge::Conv(k) => {
                        let (off, _) = offsets[i].expect("conv edge has parameters");
                        let wl = c * c * k * k;
                        let (gamma, beta) = (&params[off + wl..off + wl + c], &params[off + wl + c..off + wl + 2 * c]);
                        let (y, stats) = convs[i].as_ref().expect("the source's convolutions ran");
                        let affine: Vec<(T, T)> = (0..c)
                            .map(|ch| {
                                let scale = gamma[ch].to_f64() * stats.invstd[ch];
                                (T::from_f64(scale), T::from_f64(beta[ch].to_f64() - stats.mean[ch] * scale))
                            })
                            .collect();
                        add_affine_into(&mut sum, y, &affine, hw);
                    }
                }
            }
            nodes[target - 1] = sum;
            if target < 3 {
                let node = nodes[target - 1].as_deref().unwrap_or(&zeros);
                self.convs_from(target, node, params, &mut convs);
            }
        }
        let out = nodes[2].take().unwrap_or_else(|| vec![T::zero(); x.len()]);
        let [n1, n2, _] = nodes;
        let saved = Saved {
            nodes: [n1, n2],
            convs,
            params: params.to_vec(),
        };
        *self.saved.lock().expect("cell stash") = Some(Box::new(saved));
        out
    }

    /// Backward pass of the ReLU → Conv → BN edges that leave one node with the same kernel
    /// size, from `input` (the node, before the ReLU), given for each edge the gradient `g` of
    /// its BatchNorm output, its convolution output `y`, weight and BatchNorm coefficients.
    /// Accumulates the node's gradient into `gin` (created with `room` spare capacity when
    /// empty) and returns the edges' weight gradients. Per
    /// sample, in cache: the ReLU of the input once; per edge the BatchNorm input gradient, the
    /// weight gradient's GEMM against it, the input gradient as a convolution of it with the
    /// flipped weight (summed over the edges by the GEMMs themselves); then the ReLU mask once.
    fn conv_group_bwd<T: Float>(&self, k: usize, input: &[T], edges: &[EdgeBwd<'_, T>], gin: &mut Option<Vec<T>>, room: usize) -> Vec<Vec<T>> {
        let (n, c, h, w) = self.dims;
        let (hw, xs) = (h * w, c * h * w);
        let geom = self.geom(k);
        let pointwise = self.geom(1);
        let ck = geom.k();
        let threads = inner_threads(n);
        let coefs: Vec<Vec<[T; 3]>> = edges.iter().map(|e| e.coef.iter().map(|a| a.map(T::from_f64)).collect()).collect();
        let kk = k * k;
        // f32 "same" convolutions on AVX-512: the input gradient is one implicit GEMM of the
        // flipped weights over the edges' `gyb` stacked as channels (at a cache-friendly pitch);
        // the weight gradients are set up below.
        let packed: Option<PackedFilter> = (k > 1 && implicit::available())
            .then(|| {
                let ws: Option<Vec<&[f32]>> = edges.iter().map(|e| f32s(e.w)).collect();
                ws.map(|ws| PackedFilter::stacked(c, edges.len(), c, kk, |e, ci, co, t| ws[e][(co * c + ci) * kk + kk - 1 - t]))
            })
            .flatten();
        let pitch = implicit::pitch(hw);
        let flipped: Vec<Vec<T>> = edges
            .iter()
            .map(|e| if k > 1 && packed.is_none() { flip_weight(e.w, c, c, kk) } else { Vec::new() })
            .collect();
        let fresh = gin.is_none();
        let gx = gin.get_or_insert_with(|| alloc_room(n * xs, room));
        let per = per_thread(n);
        let partials: Vec<Vec<Vec<T>>> = gx
            .par_chunks_mut(per * xs)
            .enumerate()
            .map(|(chunk, gx)| {
                // per edge, k = 1: gw (co×ci); k > 1: gwᵀ by tap, [ci][co·k² + t'] (see below)
                let mut gws: Vec<Vec<T>> = edges.iter().map(|_| vec![T::zero(); c * ck]).collect();
                let mut gyb = if packed.is_some() { Vec::new() } else { alloc_uninit::<T>(xs) };
                let mut rx = if packed.is_some() { Vec::new() } else { alloc_uninit::<T>(xs) };
                // With 16·j channels the weight gradients are implicit GEMMs too, against relu(x)
                // transposed and padded once per sample; otherwise against its im2col.
                let mut xt = (packed.is_some() && c.is_multiple_of(16)).then(|| PaddedT::new(c, h, w, k / 2));
                let mut gwt = if xt.is_some() { vec![0f32; edges.len() * c * ck] } else { Vec::new() };
                let mut col = if k > 1 && xt.is_none() { alloc_uninit::<T>(ck * hw) } else { Vec::new() };
                let mut gr = alloc_uninit::<T>(xs);
                let mut gys = if packed.is_some() {
                    alloc_uninit::<T>(edges.len() * c * pitch)
                } else {
                    Vec::new()
                };
                for (j, gxi) in gx.chunks_mut(xs).enumerate() {
                    let i = chunk * per + j;
                    let xi = &input[i * xs..(i + 1) * xs];
                    if let Some(packed) = &packed {
                        match &mut xt {
                            Some(xt) => xt.fill(f32s(xi).expect("packed filters are f32"), true),
                            // col = im2col(relu(x))
                            None => im2col_map::<T, true>(&geom, xi, &mut col),
                        }
                        for (e, edge) in edges.iter().enumerate() {
                            let (gi, yi) = (&edge.g[i * xs..(i + 1) * xs], &edge.y[i * xs..(i + 1) * xs]);
                            let ge = &mut gys[e * c * pitch..(e + 1) * c * pitch];
                            for (ch, plane) in ge.chunks_mut(pitch).enumerate() {
                                let at = ch * hw..(ch + 1) * hw;
                                input_gradient_into(&mut plane[..hw], &gi[at.clone()], &yi[at], &coefs[e][ch..ch + 1], hw);
                            }
                            if xt.is_none() {
                                // gw[co][ci·k² + t] += gyb · colᵀ
                                T::matmul(c, ck, hw, &mut gws[e], ck, true, ge, (pitch, 1), &col, (1, hw), threads);
                            }
                        }
                        let (Some(g32), Some(r32)) = (f32s(&gys), f32s_mut(&mut gr)) else {
                            unreachable!("packed filters are f32")
                        };
                        if let Some(xt) = &xt {
                            // gwt[e·c + co][t·c + ci] += Σ_q gyb_e[co][q] · relu(x)[ci][q + shift(t)]
                            implicit::filter_grad_f32(k, xt, edges.len() * c, g32, pitch, &mut gwt, true);
                        }
                        // gr = Σ_e w'_e ⊛ gyb_e
                        implicit::conv_same_f32(&geom, packed, g32, pitch, r32, false);
                        mask_accumulate(gxi, &gr, xi, fresh);
                        continue;
                    }
                    // relu(x): the im2col of a pointwise convolution is a copy through the ReLU
                    im2col_map::<T, true>(&pointwise, xi, &mut rx);
                    for (e, edge) in edges.iter().enumerate() {
                        let (gi, yi) = (&edge.g[i * xs..(i + 1) * xs], &edge.y[i * xs..(i + 1) * xs]);
                        // gyb: the gradient of the convolution output (BatchNorm backward)
                        input_gradient_into(&mut gyb, gi, yi, &coefs[e], hw);
                        // gr (+)= this edge's input gradient (before the ReLU mask)
                        let acc = e > 0;
                        if k == 1 {
                            // gw += gyb (c×hw) · relu(x)ᵀ ; gr (+)= wᵀ · gyb
                            T::matmul(c, c, hw, &mut gws[e], c, true, &gyb, (hw, 1), &rx, (1, hw), threads);
                            T::matmul(c, hw, c, &mut gr, hw, acc, edge.w, (1, c), &gyb, (hw, 1), threads);
                        } else {
                            // col = im2col(gyb): its row (co, t') is gyb shifted by the offset of tap t',
                            // which is minus the offset of tap t = k²−1−t'. It serves both gradients:
                            //   gr (+)= w' · col                       (w' = the flipped weight)
                            //   gwᵀ[ci][co·k² + t'] += relu(x) · colᵀ   (= gw[co][ci][t])
                            im2col_map::<T, false>(&geom, &gyb, &mut col);
                            T::matmul(c, hw, ck, &mut gr, hw, acc, &flipped[e], (ck, 1), &col, (hw, 1), threads);
                            T::matmul(c, ck, hw, &mut gws[e], ck, true, &rx, (hw, 1), &col, (1, hw), threads);
                        }
                    }
                    mask_accumulate(gxi, &gr, xi, fresh);
                }
                if xt.is_some() {
                    // [e·c + co][t][ci] → per edge [co][ci][t]
                    for (e, gw) in gws.iter_mut().enumerate() {
                        for co in 0..c {
                            let src = &gwt[(e * c + co) * ck..(e * c + co + 1) * ck];
                            for ci in 0..c {
                                for t in 0..kk {
                                    gw[(co * c + ci) * kk + t] = T::from_f64(src[t * c + ci] as f64);
                                }
                            }
                        }
                    }
                }
                gws
            })
            .collect();
        (0..edges.len())
            .map(|e| {
                let mut acc = partials[0][e].clone();
                for part in &partials[1..] {
                    for (o, v) in acc.iter_mut().zip(&part[e]) {
                        *o += *v;
                    }
                }
                if k == 1 || packed.is_some() {
                    return acc;
                }
                let mut gw = alloc_uninit(acc.len());
                for ci in 0..c {
                    for co in 0..c {
                        for t in 0..kk {
                            gw[(co * c + ci) * kk + t] = acc[ci * ck + co * kk + (kk - 1 - t)];
                        }
                    }
                }
                gw
            })
            .collect()
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
        // Gradients of nodes 0..=2; node 3's is `gout`. A node's gradient is complete once the
        // edges leaving it are done, so the nodes are taken from the last to the first, each with
        // all of its outgoing edges (convolutions of one kernel size together, sharing the
        // node's ReLU and its masked accumulation).
        let mut grads: [Option<Vec<T>>; 3] = [None, None, None];
        for source in (0..3).rev() {
            let input: &[T] = if source == 0 {
                x
            } else {
                saved.nodes[source - 1].as_deref().unwrap_or(&zeros)
            };
            let mut gin: Option<Vec<T>> = None;
            // Node 0's gradient gets room for the parameter gradients appended after it.
            let room = if source == 0 { params.len() } else { 0 };
            // The gradient of an edge's target: `gout` for the output, `None` for a node that
            // reaches no output.
            let target_grad = |t: usize| -> Option<&[T]> {
                if t == 3 {
                    Some(gout)
                } else {
                    grads[t].as_deref()
                }
            };
            for &(t, s, edge) in &self.plan.edges {
                match (s == source, edge, target_grad(t)) {
                    (true, CellEdge::Skip, Some(g)) => add_ref_into(&mut gin, g, room),
                    (true, CellEdge::Pool, Some(g)) => add_into(&mut gin, self.pool(true).run(g).0, room),
                    _ => {}
                }
            }
            for (k, group) in self.plan.conv_groups(source) {
                let mut idx = Vec::new();
                let mut eds = Vec::new();
                for i in group {
                    let Some(g) = target_grad(self.plan.edges[i].0) else { continue };
                    let (off, _) = offsets[i].expect("conv edge has parameters");
                    let wl = c * c * k * k;
                    let (y, stats) = saved.convs[i].as_ref().expect("conv edge saved its output");
                    let gamma: Vec<f64> = params[off + wl..off + wl + c].iter().map(|v| v.to_f64()).collect();
                    let sums = grad_sums(y, g, (c, hw), stats);
                    for (ch, &(sg, sgx)) in sums.iter().enumerate() {
                        gparams[off + wl + ch] = T::from_f64(sgx);
                        gparams[off + wl + c + ch] = T::from_f64(sg);
                    }
                    let coef = bwd_coefficients(&gamma, &sums, stats, (n * hw) as f64);
                    if let Some(taps) = &self.conv_taps {
                        let ordinal = offsets[..i].iter().filter(|o| o.is_some()).count();
                        match &taps[ordinal] {
                            ConvTap::Grad(slot) => {
                                let mut gy = alloc_uninit::<T>(y.len());
                                input_gradient_par(&mut gy, g, y, &coef, hw);
                                let t = Tensor::from_vec(gy, (n, c, h, w), &candle_core::Device::Cpu)?;
                                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                            }
                            ConvTap::Dots(slot) => {
                                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(input_gradient_dots(g, y, &coef, hw));
                            }
                        }
                    }
                    idx.push(i);
                    eds.push(EdgeBwd {
                        g,
                        y,
                        w: &params[off..off + wl],
                        coef,
                    });
                }
                if eds.is_empty() {
                    continue;
                }
                for (i, gw) in idx.into_iter().zip(self.conv_group_bwd(k, input, &eds, &mut gin, room)) {
                    let (off, _) = offsets[i].expect("conv edge has parameters");
                    gparams[off..off + gw.len()].copy_from_slice(&gw);
                }
            }
            grads[source] = gin;
        }
        let mut out = grads[0].take().unwrap_or_else(|| {
            let mut z = alloc_room(x.len(), params.len());
            z.fill(T::zero());
            z
        });
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
    let (out, stats, _, _) = run_cell(plan, x, params, eps, &CellTrace::default())?;
    Ok((out, stats))
}

/// [`nb201_cell`] with instrumentation (see [`CellTrace`]).
pub fn nb201_cell_traced(plan: &Arc<CellPlan>, x: &Tensor, params: &Tensor, eps: f64, trace: &CellTrace) -> Result<CellTraced> {
    if let Some(taps) = &trace.conv_taps {
        let convs = plan.conv_offsets().iter().filter(|o| o.is_some()).count();
        if taps.len() != convs {
            candle_core::bail!("nb201_cell_traced: {} taps for {convs} convolution edges", taps.len())
        }
    }
    let (out, stats, nodes, conv_outputs) = run_cell(plan, x, params, eps, trace)?;
    Ok(CellTraced {
        out,
        stats,
        nodes,
        conv_outputs,
    })
}

type CellRun = (Tensor, Vec<ChannelStats>, Option<[Tensor; 2]>, Vec<Tensor>);

fn run_cell(plan: &Arc<CellPlan>, x: &Tensor, params: &Tensor, eps: f64, trace: &CellTrace) -> Result<CellRun> {
    let (n, c, h, w) = x.dims4()?;
    if !x.device().is_cpu() || !supports(x.dtype()) || c != plan.channels || params.elem_count() != plan.param_len() {
        candle_core::bail!(
            "nb201_cell: needs f32/f64 CPU tensors with {} channels and {} parameters",
            plan.channels,
            plan.param_len()
        )
    }
    let saved: Stash = Arc::new(Mutex::new(None));
    let op = CellOp {
        plan: plan.clone(),
        dims: (n, c, h, w),
        eps,
        saved: saved.clone(),
        conv_taps: trace.conv_taps.clone().map(Arc::new),
    };
    let out = x.contiguous()?.apply_op2(&params.contiguous()?, op)?;
    let guard = saved.lock().expect("cell stash");
    let any = guard.as_ref().expect("forward pass saved its buffers");
    fn read<T: Float>(s: &Saved<T>, trace: &CellTrace, x: &Tensor) -> Result<CellRun> {
        let stats = s.convs.iter().flatten().map(|(_, st)| (st.mean.clone(), st.var.clone())).collect();
        let copy = |v: &Option<Vec<T>>| -> Result<Tensor> {
            match v {
                Some(v) => Tensor::from_vec(v.clone(), x.shape(), x.device()),
                None => x.zeros_like(),
            }
        };
        let nodes = if trace.nodes { Some([copy(&s.nodes[0])?, copy(&s.nodes[1])?]) } else { None };
        let conv_outputs = match &trace.conv_taps {
            Some(taps) if taps.iter().any(|t| matches!(t, ConvTap::Grad(_))) => s
                .convs
                .iter()
                .flatten()
                .map(|(y, _)| Tensor::from_vec(y.clone(), x.shape(), x.device()))
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        Ok((x.clone(), stats, nodes, conv_outputs))
    }
    let (_, stats, nodes, conv_outputs) = if let Some(s) = any.downcast_ref::<Saved<f32>>() {
        read(s, trace, x)?
    } else if let Some(s) = any.downcast_ref::<Saved<f64>>() {
        read(s, trace, x)?
    } else {
        candle_core::bail!("nb201_cell: unexpected saved buffers")
    };
    Ok((out, stats, nodes, conv_outputs))
}
