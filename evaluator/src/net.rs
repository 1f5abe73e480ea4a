//! The NAS-Bench-201 network (Dong & Yang, ICLR 2020), built candle-style from a `VarBuilder`.
//!
//! Macro skeleton with `C` channels and `N` cells per stage: stem Conv3×3(in→C)→BN; `N` cells
//! at C; a residual reduction block C→2C (main path ReLU→Conv3×3 s2→BN→ReLU→Conv3×3→BN,
//! shortcut AvgPool2×2 s2→Conv1×1 without BN); `N` cells at 2C; a block 2C→4C; `N` cells at 4C;
//! head BN→ReLU→global average pool→Linear(4C→classes). Convolutions have no bias; BatchNorm is
//! affine and tracks running statistics (momentum 0.1, ε 1e-5), as in the benchmark.
//!
//! Parameter names follow the structure: `stem.conv.weight`, `cells.{i}.e{t}{s}.conv.weight`
//! (edge from node `s` to node `t` of cell `i`), `cells.{i}.conv_a.bn.weight`,
//! `cells.{i}.shortcut.weight`, `lastact.bn.running_var`, `classifier.weight`, ….

use std::cell::RefCell;
use std::sync::Arc;

use autoagent_proxies::{DotsSource, GradSource, LayerDots, LayerOutput, Trace};
use kernels::{ConvTap, DotsSlot, GradSlot};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::kernels;
use crate::nb201::{Arch, Op, EDGES};

/// The shape of a NB201 network. [`Nb201Config::new`] gives the benchmark's CIFAR-10 network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nb201Config {
    /// The cell, repeated in every stage.
    pub arch: Arch,
    /// Channels of the first stage (C); the stages run at C, 2C, 4C.
    pub channels: usize,
    /// Cells per stage (N).
    pub cells_per_stage: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Input image channels.
    pub in_channels: usize,
    /// Input image side (square images).
    pub input_size: usize,
}

impl Nb201Config {
    /// The benchmark's network for `arch`: C=16, N=5, 10 classes, 3×32×32 input.
    pub fn new(arch: Arch) -> Self {
        Nb201Config {
            arch,
            channels: 16,
            cells_per_stage: 5,
            num_classes: 10,
            in_channels: 3,
            input_size: 32,
        }
    }

    /// Check the configuration before building.
    pub fn validate(&self) -> Result<()> {
        if self.channels == 0 || self.cells_per_stage == 0 || self.num_classes == 0 || self.in_channels == 0 {
            return Err(Error::Config(format!("network dimensions must be positive: {self:?}")));
        }
        if self.input_size < 4 {
            return Err(Error::Config(format!(
                "input size {} is too small for two stride-2 reductions",
                self.input_size
            )));
        }
        Ok(())
    }

    /// The layers in order: `(stage channels, spatial side, is_reduction)`.
    fn layout(&self) -> Vec<(usize, usize, bool)> {
        let mut v = Vec::new();
        let (mut c, mut s) = (self.channels, self.input_size);
        for stage in 0..3 {
            if stage > 0 {
                c *= 2;
                s = s.div_ceil(2);
                v.push((c, s, true));
            }
            for _ in 0..self.cells_per_stage {
                v.push((c, s, false));
            }
        }
        v
    }

    /// Number of trainable parameters (conv and linear weights, linear bias, BN affine).
    pub fn param_count(&self) -> usize {
        let c = self.channels;
        let relu_conv_bn = |cin: usize, cout: usize, k: usize| cin * cout * k * k + 2 * cout;
        let mut p = self.in_channels * c * 9 + 2 * c; // stem
        for (ch, _, reduction) in self.layout() {
            if reduction {
                let cin = ch / 2;
                p += relu_conv_bn(cin, ch, 3) + relu_conv_bn(ch, ch, 3) + cin * ch;
            } else {
                for op in self.arch.ops {
                    p += match op {
                        Op::NorConv1x1 => relu_conv_bn(ch, ch, 1),
                        Op::NorConv3x3 => relu_conv_bn(ch, ch, 3),
                        _ => 0,
                    };
                }
            }
        }
        let last = 4 * c;
        p + 2 * last + last * self.num_classes + self.num_classes
    }

    /// Multiply-accumulates per image of the convolutions and the classifier (the arithmetic
    /// that dominates the cost; 2 × this is the FLOP count used for GFLOP/s figures).
    pub fn macs(&self) -> f64 {
        let c = self.channels;
        let s0 = self.input_size;
        let mut f = (self.in_channels * c * 9 * s0 * s0) as f64;
        for (ch, s, reduction) in self.layout() {
            let (area, chf) = ((s * s) as f64, ch as f64);
            if reduction {
                let cin = (ch / 2) as f64;
                f += cin * chf * 9.0 * area + chf * chf * 9.0 * area + cin * chf * area;
            } else {
                for op in self.arch.ops {
                    f += match op {
                        Op::NorConv1x1 => chf * chf * area,
                        Op::NorConv3x3 => 9.0 * chf * chf * area,
                        _ => 0.0,
                    };
                }
            }
        }
        f + (4 * c * self.num_classes) as f64
    }

    /// Forward FLOPs per image, in NAS-Bench-201's counting convention (its `flops_M` column is
    /// this value / 1e6 for the benchmark network).
    ///
    /// Convolutions and the classifier count their multiply-accumulates (plus one per output
    /// for the classifier's bias); a cell's 3×3 average pool counts 9 per output element; a
    /// cell's ReLU-Conv-BN counts 3 more per output element (BN and ReLU work). For the
    /// benchmark's fixed skeleton (stem, reduction blocks, head), NB201's counter adds 160,822
    /// FLOPs beyond the convolution and classifier MACs, which we could not attribute layer by
    /// layer; we add that measured constant for the benchmark shape and scale it with the
    /// stage-1 activation size otherwise (an approximation, documented as such).
    pub fn flops(&self) -> f64 {
        let mut f = self.macs() + self.num_classes as f64; // + classifier bias
        for (ch, s, reduction) in self.layout() {
            if reduction {
                continue;
            }
            let elems = (ch * s * s) as f64;
            for op in self.arch.ops {
                f += match op {
                    Op::NorConv1x1 | Op::NorConv3x3 => 3.0 * elems,
                    Op::AvgPool3x3 => 9.0 * elems,
                    Op::None | Op::SkipConnect => 0.0,
                };
            }
        }
        // The skeleton's unattributed BN/ReLU/pool charge, measured on the benchmark network
        // (16 channels at 32×32), scaled by the first stage's activation size.
        let (c, s0) = (self.channels, self.input_size);
        f + 160_822.0 * ((c * s0 * s0) as f64 / (16.0 * 32.0 * 32.0))
    }
}

/// How BatchNorm behaves in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Normalise with the batch's statistics and update the running statistics (training).
    Train,
    /// Normalise with the batch's statistics without touching the running statistics (the mode
    /// zero-cost proxies use: train mode on a copy of the network).
    Batch,
    /// Normalise with the running statistics (inference).
    Eval,
    /// Skip BatchNorm entirely (identity), as synflow requires.
    Bypass,
}

/// Which implementation of the network's operations runs on CPU (other devices always use
/// candle's own operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// Fastest: each cell is one autograd node, each ReLU-Conv-BN of the skeleton another
    /// (first-order gradients).
    #[default]
    Fused,
    /// One autograd node per operation (convolution, BatchNorm, ReLU, pool, sum), with our
    /// kernels (first-order gradients through BatchNorm).
    PerOp,
    /// Our convolution, pooling and ReLU with BatchNorm from candle's primitives: gradients of
    /// any order (GraSP's Hessian-vector product), slowest.
    Composite,
}

/// What an instrumented forward pass records for the zero-cost proxies (see
/// [`autoagent_proxies::ProxyNet`]). Fused cells and ReLU-Conv-BN units report their ReLU
/// inputs and their convolution outputs with gradient slots themselves; while ReLU masks are
/// replayed they run op by op instead.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    trace: Trace,
    /// ReLU masks to apply instead of the ReLUs, in forward order (a frozen linearisation).
    masks: RefCell<std::collections::VecDeque<Tensor>>,
    relu_inputs: RefCell<Vec<Tensor>>,
    layer_outputs: RefCell<Vec<LayerOutput>>,
    layer_dots: RefCell<Vec<LayerDots>>,
    features: RefCell<Option<Tensor>>,
}

impl Recorder {
    pub(crate) fn new(trace: Trace) -> Self {
        Recorder { trace, ..Recorder::default() }
    }

    /// A recorder that replaces the ReLUs, in forward order, by multiplications with `masks`.
    pub(crate) fn with_masks(trace: Trace, masks: &[Tensor]) -> Self {
        Recorder {
            trace,
            masks: RefCell::new(masks.iter().cloned().collect()),
            ..Recorder::default()
        }
    }

    /// Whether cells and ReLU-Conv-BN units must run op by op: mask replay needs that; ReLU
    /// inputs and layer outputs with their gradients come from the fused kernels' own
    /// instrumentation.
    fn needs_units(rec: Option<&Recorder>) -> bool {
        rec.is_some_and(|r| !r.masks.borrow().is_empty())
    }

    fn relu_input(rec: Option<&Recorder>, x: &Tensor) {
        if let Some(r) = rec.filter(|r| r.trace.relu_inputs) {
            r.relu_inputs.borrow_mut().push(x.detach());
        }
    }

    /// The ReLU of `x`, recording its input when traced, or `x ⊙ mask` when masks are replayed.
    fn relu(rec: Option<&Recorder>, x: &Tensor) -> Result<Tensor> {
        Recorder::relu_input(rec, x);
        match rec.and_then(|r| r.masks.borrow_mut().pop_front()) {
            Some(mask) => {
                if mask.shape() != x.shape() {
                    return Err(Error::Config(format!(
                        "ReLU mask of shape {:?} replayed on an input of shape {:?}",
                        mask.dims(),
                        x.dims()
                    )));
                }
                Ok((x * mask.to_dtype(x.dtype())?)?)
            }
            None => Ok(kernels::relu(x)?),
        }
    }

    /// `z`, or `z + probe` with a recorded zero probe when layer outputs or their
    /// output·gradient sums are traced.
    fn layer_output(rec: Option<&Recorder>, z: Tensor, fan_in: usize) -> Result<Tensor> {
        match rec.filter(|r| r.trace.layer_outputs || r.trace.layer_dots) {
            None => Ok(z),
            Some(r) => {
                let probe = Var::zeros(z.shape(), z.dtype(), z.device())?;
                let out = (&z + probe.as_tensor())?;
                r.record_output(LayerOutput {
                    value: z.detach(),
                    grad: GradSource::Probe(probe),
                    fan_in,
                })?;
                Ok(out)
            }
        }
    }

    /// Record a layer's output, with where its gradient comes from, for the traces that ask for
    /// it: the output itself, and its output·gradient sums taken from it.
    fn record_output(&self, out: LayerOutput) -> Result<()> {
        if self.trace.layer_dots {
            self.layer_dots.borrow_mut().push(LayerDots {
                channels: out.value.dim(1)?,
                fan_in: out.fan_in,
                source: DotsSource::Output(out.clone()),
            });
        }
        if self.trace.layer_outputs {
            self.layer_outputs.borrow_mut().push(out);
        }
        Ok(())
    }

    /// What a fused kernel reports about a traced convolution output of `channels` channels:
    /// its gradient when the outputs themselves are traced (recorded with
    /// [`Recorder::record_tapped`] once the kernel returns the output), otherwise only its
    /// output·gradient sums, recorded at once.
    fn conv_tap(&self, channels: usize, fan_in: usize) -> ConvTap {
        if self.trace.layer_outputs {
            return ConvTap::Grad(GradSlot::default());
        }
        let slot = DotsSlot::default();
        self.layer_dots.borrow_mut().push(LayerDots {
            source: DotsSource::Slot(slot.clone()),
            channels,
            fan_in,
        });
        ConvTap::Dots(slot)
    }

    /// Record the convolution output that a fused kernel returned for a [`ConvTap::Grad`] tap
    /// (a sums tap was recorded by [`Recorder::conv_tap`]).
    fn record_tapped(&self, tap: ConvTap, value: Option<Tensor>, fan_in: usize) -> Result<()> {
        match (tap, value) {
            (ConvTap::Grad(slot), Some(value)) => self.record_output(LayerOutput {
                value,
                grad: GradSource::Slot(slot),
                fan_in,
            }),
            _ => Ok(()),
        }
    }

    fn features(rec: Option<&Recorder>, x: &Tensor) {
        if let Some(r) = rec.filter(|r| r.trace.features) {
            *r.features.borrow_mut() = Some(x.detach());
        }
    }

    /// The recorded ReLU inputs, layer outputs, output·gradient sums and features.
    pub(crate) fn finish(self) -> Recorded {
        Recorded {
            relu_inputs: self.relu_inputs.into_inner(),
            layer_outputs: self.layer_outputs.into_inner(),
            layer_dots: self.layer_dots.into_inner(),
            features: self.features.into_inner(),
        }
    }
}

/// What a [`Recorder`] (or a traced MLP) collected.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub(crate) relu_inputs: Vec<Tensor>,
    pub(crate) layer_outputs: Vec<LayerOutput>,
    pub(crate) layer_dots: Vec<LayerDots>,
    pub(crate) features: Option<Tensor>,
}

/// BatchNorm over the channels of an NCHW tensor.
#[derive(Debug, Clone)]
struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?;
        let rm = vb.get_with_hints(c, "running_mean", candle_nn::Init::Const(0.0))?;
        let rv = vb.get_with_hints(c, "running_var", candle_nn::Init::Const(1.0))?;
        // The running statistics live in the VarMap (so they are saved with the weights) but are
        // updated by hand, never by the optimiser: keep them as `Var`s over the same storage.
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: Var::from_tensor(&rm)?,
            running_var: Var::from_tensor(&rv)?,
        })
    }

    /// Fold one batch's statistics of `xs` (biased variance) into the running statistics.
    fn update_running(&self, xs: &Tensor, mean: Vec<f64>, var: Vec<f64>) -> Result<()> {
        let (n, c, h, w) = xs.dims4()?;
        let count = (n * h * w) as f64;
        let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
        let dev = xs.device();
        let dtype = self.running_mean.dtype();
        let m = Tensor::from_vec(mean, c, dev)?.to_dtype(dtype)?;
        let v = (Tensor::from_vec(var, c, dev)?.to_dtype(dtype)? * unbiased)?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
        self.running_mean.set(&rm.detach())?;
        self.running_var.set(&rv.detach())?;
        Ok(())
    }

    fn forward(&self, xs: &Tensor, mode: BnMode, k: Kernels) -> Result<Tensor> {
        let c = xs.dim(1)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = match mode {
            BnMode::Bypass => return Ok(xs.clone()),
            BnMode::Eval => (self.running_mean.as_tensor().reshape(shape)?, self.running_var.as_tensor().reshape(shape)?),
            BnMode::Train | BnMode::Batch => {
                let (y, mean, var) = if k == Kernels::Composite {
                    kernels::batch_norm_composite(xs, &self.weight, &self.bias, BN_EPS)?
                } else {
                    kernels::batch_norm(xs, &self.weight, &self.bias, BN_EPS)?
                };
                if mode == BnMode::Train {
                    self.update_running(xs, mean, var)?;
                }
                return Ok(y);
            }
        };
        let scale = (var + BN_EPS)?.sqrt()?.recip()?.broadcast_mul(&self.weight.reshape(shape)?)?;
        let shift = (self.bias.reshape(shape)? - mean.broadcast_mul(&scale)?)?;
        Ok(xs.broadcast_mul(&scale)?.broadcast_add(&shift)?)
    }
}

/// Optional ReLU → Conv (no bias) → optional BatchNorm.
#[derive(Debug, Clone)]
struct ConvUnit {
    relu: bool,
    weight: Tensor,
    stride: usize,
    pad: usize,
    bn: Option<BatchNorm>,
}

impl ConvUnit {
    #[allow(clippy::too_many_arguments)]
    fn new(cin: usize, cout: usize, k: usize, stride: usize, relu: bool, bn: bool, vb: VarBuilder) -> Result<Self> {
        let (weight, bn) = if bn {
            (vb.pp("conv").get((cout, cin, k, k), "weight")?, Some(BatchNorm::new(cout, vb.pp("bn"))?))
        } else {
            (vb.get((cout, cin, k, k), "weight")?, None)
        };
        Ok(ConvUnit {
            relu,
            weight,
            stride,
            pad: k / 2,
            bn,
        })
    }

    fn forward(&self, xs: &Tensor, mode: BnMode, k: Kernels, rec: Option<&Recorder>) -> Result<Tensor> {
        if let (Some(bn), BnMode::Train | BnMode::Batch, Kernels::Fused) = (&self.bn, mode, k) {
            if xs.device().is_cpu() && kernels::supports(xs.dtype()) && !Recorder::needs_units(rec) {
                // One fused node for ReLU, convolution and BatchNorm.
                let gb = Tensor::cat(&[&bn.weight, &bn.bias], 0)?;
                if self.relu {
                    Recorder::relu_input(rec, xs);
                }
                let fan_in: usize = self.weight.dims()[1..].iter().product();
                let (z, mean, var) = match rec.filter(|r| r.trace.layer_outputs || r.trace.layer_dots) {
                    None => kernels::relu_conv_bn(xs, &self.weight, &gb, self.stride, self.pad, self.relu, BN_EPS)?,
                    Some(r) => {
                        let tap = r.conv_tap(self.weight.dim(0)?, fan_in);
                        let (z, mean, var, y) = kernels::relu_conv_bn_tapped(xs, &self.weight, &gb, self.stride, self.pad, self.relu, BN_EPS, tap.clone())?;
                        r.record_tapped(tap, y, fan_in)?;
                        (z, mean, var)
                    }
                };
                if mode == BnMode::Train {
                    bn.update_running(&z, mean, var)?;
                }
                return Ok(z);
            }
        }
        let xs = if self.relu { Recorder::relu(rec, xs)? } else { xs.clone() };
        let ys = kernels::conv2d(&xs, &self.weight, self.stride, self.pad)?;
        let fan_in = self.weight.dims()[1..].iter().product();
        let ys = Recorder::layer_output(rec, ys, fan_in)?;
        match &self.bn {
            Some(bn) => bn.forward(&ys, mode, k),
            None => Ok(ys),
        }
    }
}

#[derive(Debug, Clone)]
enum Edge {
    Skip,
    Pool,
    Conv(ConvUnit),
}

#[derive(Debug, Clone)]
struct Cell {
    /// `(target, source, op)` for every edge that is not `none`.
    edges: Vec<(usize, usize, Edge)>,
    /// The same edges for the fused cell kernel.
    plan: Arc<kernels::CellPlan>,
}

impl Cell {
    fn new(arch: &Arch, c: usize, vb: VarBuilder) -> Result<Self> {
        let mut edges = Vec::new();
        for (i, &(t, s)) in EDGES.iter().enumerate() {
            let vb = vb.pp(format!("e{t}{s}"));
            let edge = match arch.ops[i] {
                Op::None => continue,
                Op::SkipConnect => Edge::Skip,
                Op::AvgPool3x3 => Edge::Pool,
                Op::NorConv1x1 => Edge::Conv(ConvUnit::new(c, c, 1, 1, true, true, vb)?),
                Op::NorConv3x3 => Edge::Conv(ConvUnit::new(c, c, 3, 1, true, true, vb)?),
            };
            edges.push((t, s, edge));
        }
        let plan_edges = edges
            .iter()
            .map(|(t, s, e)| {
                let kind = match e {
                    Edge::Skip => kernels::CellEdge::Skip,
                    Edge::Pool => kernels::CellEdge::Pool,
                    Edge::Conv(u) => kernels::CellEdge::Conv(u.weight.dim(2).unwrap_or(1)),
                };
                (*t, *s, kind)
            })
            .collect();
        Ok(Cell {
            edges,
            plan: Arc::new(kernels::CellPlan::new(plan_edges, c)),
        })
    }

    /// The cell as one fused node: parameters packed in plan order, running statistics updated
    /// in training mode.
    fn forward_fused(&self, xs: &Tensor, mode: BnMode, rec: Option<&Recorder>) -> Result<Tensor> {
        let mut parts: Vec<Tensor> = Vec::new();
        let mut bns: Vec<&BatchNorm> = Vec::new();
        for (_, _, e) in &self.edges {
            if let Edge::Conv(u) = e {
                let bn = u.bn.as_ref().expect("cell convolutions have BatchNorm");
                parts.push(u.weight.flatten_all()?);
                parts.push(bn.weight.clone());
                parts.push(bn.bias.clone());
                bns.push(bn);
            }
        }
        let params = if parts.is_empty() {
            Tensor::zeros(0, xs.dtype(), xs.device())?
        } else {
            Tensor::cat(&parts, 0)?
        };
        let traced = rec.filter(|r| r.trace.relu_inputs || r.trace.layer_outputs || r.trace.layer_dots);
        let (out, stats) = match traced {
            None => kernels::nb201_cell(&self.plan, xs, &params, BN_EPS)?,
            Some(r) => {
                let convs: Vec<&ConvUnit> = self
                    .edges
                    .iter()
                    .filter_map(|(_, _, e)| if let Edge::Conv(u) = e { Some(u) } else { None })
                    .collect();
                let fan_in = |u: &ConvUnit| -> usize { u.weight.dims()[1..].iter().product() };
                let ch = xs.dim(1)?;
                let taps: Option<Vec<ConvTap>> =
                    (r.trace.layer_outputs || r.trace.layer_dots).then(|| convs.iter().map(|u| r.conv_tap(ch, fan_in(u))).collect());
                let trace = kernels::CellTrace {
                    nodes: r.trace.relu_inputs,
                    conv_taps: taps.clone(),
                };
                let t = kernels::nb201_cell_traced(&self.plan, xs, &params, BN_EPS, &trace)?;
                if let Some(nodes) = &t.nodes {
                    // The ReLU input of a convolution edge is its source node.
                    for (_, s, e) in &self.edges {
                        if matches!(e, Edge::Conv(_)) {
                            Recorder::relu_input(rec, if *s == 0 { xs } else { &nodes[*s - 1] });
                        }
                    }
                }
                let mut outputs = t.conv_outputs.into_iter();
                for (unit, tap) in convs.iter().zip(taps.into_iter().flatten()) {
                    let value = if matches!(tap, ConvTap::Grad(_)) { outputs.next() } else { None };
                    r.record_tapped(tap, value, fan_in(unit))?;
                }
                (t.out, t.stats)
            }
        };
        if mode == BnMode::Train {
            for (bn, (mean, var)) in bns.into_iter().zip(stats) {
                bn.update_running(xs, mean, var)?;
            }
        }
        Ok(out)
    }

    fn forward(&self, xs: &Tensor, mode: BnMode, k: Kernels, rec: Option<&Recorder>) -> Result<Tensor> {
        if k == Kernels::Fused
            && matches!(mode, BnMode::Train | BnMode::Batch)
            && xs.device().is_cpu()
            && kernels::supports(xs.dtype())
            && !Recorder::needs_units(rec)
        {
            return self.forward_fused(xs, mode, rec);
        }
        let mut nodes: Vec<Option<Tensor>> = vec![Some(xs.clone()), None, None, None];
        for target in 1..4 {
            let mut sum: Option<Tensor> = None;
            for (t, s, edge) in &self.edges {
                if *t != target {
                    continue;
                }
                // A node without incoming edges is zero; ops on it still run (BN's shift makes
                // a convolution of zeros non-zero once trained), exactly as in the benchmark.
                let input = match &nodes[*s] {
                    Some(x) => x.clone(),
                    None => xs.zeros_like()?,
                };
                let y = match edge {
                    Edge::Skip => input,
                    Edge::Pool => kernels::avg_pool2d(&input, 3, 1, 1, false)?,
                    Edge::Conv(unit) => unit.forward(&input, mode, k, rec)?,
                };
                sum = Some(match sum {
                    None => y,
                    Some(acc) => (acc + y)?,
                });
            }
            nodes[target] = sum;
        }
        match nodes.pop().flatten() {
            Some(out) => Ok(out),
            None => Ok(xs.zeros_like()?),
        }
    }
}

#[derive(Debug, Clone)]
struct Reduction {
    conv_a: ConvUnit,
    conv_b: ConvUnit,
    shortcut: ConvUnit,
}

impl Reduction {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Reduction {
            conv_a: ConvUnit::new(cin, cout, 3, 2, true, true, vb.pp("conv_a"))?,
            conv_b: ConvUnit::new(cout, cout, 3, 1, true, true, vb.pp("conv_b"))?,
            shortcut: ConvUnit::new(cin, cout, 1, 1, false, false, vb.pp("shortcut"))?,
        })
    }

    fn forward(&self, xs: &Tensor, mode: BnMode, k: Kernels, rec: Option<&Recorder>) -> Result<Tensor> {
        let main = self.conv_b.forward(&self.conv_a.forward(xs, mode, k, rec)?, mode, k, rec)?;
        let short = self.shortcut.forward(&kernels::avg_pool2d(xs, 2, 2, 0, true)?, mode, k, rec)?;
        Ok((main + short)?)
    }
}

#[derive(Debug, Clone)]
enum Layer {
    Cell(Cell),
    Reduction(Reduction),
}

/// A NAS-Bench-201 network.
#[derive(Debug, Clone)]
pub struct Nb201Net {
    config: Nb201Config,
    stem: ConvUnit,
    layers: Vec<Layer>,
    lastact: BatchNorm,
    classifier_w: Tensor,
    classifier_b: Tensor,
    kernels: Kernels,
}

impl Nb201Net {
    /// Build the network, taking its parameters from `vb`.
    pub fn new(config: &Nb201Config, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let c = config.channels;
        let stem = ConvUnit::new(config.in_channels, c, 3, 1, false, true, vb.pp("stem"))?;
        let mut layers = Vec::new();
        for (i, (ch, _, reduction)) in config.layout().into_iter().enumerate() {
            let vb = vb.pp("cells").pp(i);
            layers.push(if reduction {
                Layer::Reduction(Reduction::new(ch / 2, ch, vb)?)
            } else {
                Layer::Cell(Cell::new(&config.arch, ch, vb)?)
            });
        }
        let last = 4 * c;
        let lastact = BatchNorm::new(last, vb.pp("lastact").pp("bn"))?;
        let classifier_w = vb.pp("classifier").get((config.num_classes, last), "weight")?;
        let classifier_b = vb.pp("classifier").get(config.num_classes, "bias")?;
        Ok(Nb201Net {
            config: config.clone(),
            stem,
            layers,
            lastact,
            classifier_w,
            classifier_b,
            kernels: Kernels::Fused,
        })
    }

    /// Choose the CPU implementation of the operations (see [`Kernels`]).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &Nb201Config {
        &self.config
    }

    /// Logits `(batch, classes)` for an NCHW batch. `train` selects batch statistics and running
    /// statistic updates in BatchNorm (training) versus running statistics (inference).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_mode(xs, if train { BnMode::Train } else { BnMode::Eval })
    }

    /// Logits with an explicit BatchNorm mode.
    pub fn forward_mode(&self, xs: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_traced(xs, mode, None)
    }

    /// [`Nb201Net::forward_mode`], recording what `rec` traces.
    pub(crate) fn forward_traced(&self, xs: &Tensor, mode: BnMode, rec: Option<&Recorder>) -> Result<Tensor> {
        let k = self.kernels;
        let mut x = self.stem.forward(xs, mode, k, rec)?;
        for layer in &self.layers {
            x = match layer {
                Layer::Cell(cell) => cell.forward(&x, mode, k, rec)?,
                Layer::Reduction(r) => r.forward(&x, mode, k, rec)?,
            };
        }
        let x = self.lastact.forward(&x, mode, k)?;
        let x = Recorder::relu(rec, &x)?;
        Recorder::features(rec, &x);
        let pooled = x.mean((2, 3))?; // global average pool: (batch, channels)
        let logits = pooled.matmul(&self.classifier_w.t()?)?.broadcast_add(&self.classifier_b)?;
        Recorder::layer_output(rec, logits, self.classifier_w.dim(1)?)
    }
}

impl candle_nn::ModuleT for Nb201Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Nb201Net::forward_t(self, xs, train).map_err(|e| match e {
            Error::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
}

/// Whether a parameter name is a BatchNorm running statistic (state, not a trainable weight).
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// A network together with the variables that hold its state.
pub struct Model {
    /// The network.
    pub net: Nb201Net,
    /// All of its variables, trainable weights and BatchNorm running statistics.
    pub varmap: VarMap,
}

impl Model {
    /// Build a network on `device` in `dtype`, initialised deterministically from `seed`:
    /// PyTorch's defaults, i.e. Kaiming-uniform (a = √5, bound 1/√fan_in) for conv and linear
    /// weights, uniform(±1/√fan_in) for the linear bias, BN γ = 1, β = 0, running mean 0 and
    /// variance 1.
    pub fn new(config: &Nb201Config, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let net = Nb201Net::new(config, vb)?;
        let model = Model { net, varmap };
        model.reinitialise(seed)?;
        Ok(model)
    }

    /// Draw every weight again from `seed` (see [`Model::new`]).
    pub fn reinitialise(&self, seed: u64) -> Result<()> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for name in names {
            let var = &data[name];
            let dims = var.dims().to_vec();
            let numel: usize = dims.iter().product();
            let values: Vec<f64> = if name.ends_with("running_var") || name.ends_with("bn.weight") {
                vec![1.0; numel]
            } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
                vec![0.0; numel]
            } else {
                // conv/linear weights: fan_in = product of all but the first dimension; the
                // classifier bias uses the classifier's fan_in.
                let fan_in = if name == "classifier.bias" {
                    4 * self.net.config.channels
                } else {
                    dims[1..].iter().product()
                };
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..numel).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// The trainable variables (everything but BN running statistics), sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().filter(|(n, _)| !is_running_stat(n)).map(|(n, v)| (n.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Number of trainable parameters actually allocated.
    pub fn param_count(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Save every variable (weights and running statistics) as safetensors.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.varmap.save(path).map_err(Error::from)
    }

    /// Load variables saved by [`Model::save`] into this (identically shaped) model.
    pub fn load(&mut self, path: &std::path::Path) -> Result<()> {
        self.varmap.load(path).map_err(Error::from)
    }
}

/// Top-1 predictions of a batch of logits.
pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
}
