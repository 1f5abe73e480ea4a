//! What a network exposes so that every proxy works on it: the instrumentation trait.
//!
//! A search space implements [`Candidate`] (build a fresh network for a proxy, in the dtype and
//! mode it needs) and [`ProxyNet`] (a forward pass that can record what proxies look at). The
//! proxies never see the network's structure beyond this.

use candle_core::{DType, Device, Tensor, Var};

use crate::Result;

/// How BatchNorm behaves in an instrumented forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnHandling {
    /// Normalise with the batch's statistics, leave the running statistics alone (the
    /// reference harness: train mode on a copy of the network).
    Batch,
    /// Normalise with the batch's statistics and fold them into the running statistics (zen
    /// reads the running variances afterwards).
    Train,
    /// BatchNorm is the identity (synflow).
    Bypass,
}

/// What a forward pass records besides the logits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trace {
    /// The input of every ReLU, per module (NASWOT's binary codes).
    pub relu_inputs: bool,
    /// The output of every convolution and linear layer (before BatchNorm), with a way to read
    /// its gradient after a backward pass (fisher).
    pub layer_outputs: bool,
    /// For every convolution and linear layer, `Σ_hw z·∂L/∂z` per sample and channel after a
    /// backward pass (fisher's per-channel saliencies), without keeping `z` or its gradient:
    /// fused kernels compute it inside their backward pass.
    pub layer_dots: bool,
    /// The feature map before global average pooling (zen).
    pub features: bool,
}

/// A convolution or linear layer's output recorded by a traced forward pass.
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// The layer's output (detached).
    pub value: Tensor,
    /// Where the output's gradient will be after a backward pass through the recording.
    pub grad: GradSource,
    /// The layer's fan-in (see [`Weight::fan_in`]).
    pub fan_in: usize,
}

/// Where the gradient of a recorded layer output comes from.
#[derive(Debug, Clone)]
pub enum GradSource {
    /// A zero variable added to the output in the graph: its gradient is the output's.
    Probe(Var),
    /// A slot that a fused kernel fills during the backward pass.
    Slot(GradSlot),
}

/// A gradient filled in by a fused kernel's backward pass.
pub type GradSlot = std::sync::Arc<std::sync::Mutex<Option<Tensor>>>;

impl LayerOutput {
    /// The gradient of the loss with respect to this output, from the backward pass that
    /// produced `grads`; `None` when the output did not influence the loss.
    pub fn gradient(&self, grads: &candle_core::backprop::GradStore) -> Option<Tensor> {
        match &self.grad {
            GradSource::Probe(p) => grads.get(p.as_tensor()).cloned(),
            GradSource::Slot(s) => s.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// Per sample and channel, `Σ` over the spatial positions of a layer's output times its
/// gradient, recorded by a forward pass traced with [`Trace::layer_dots`].
#[derive(Debug, Clone)]
pub struct LayerDots {
    /// Where the sums come from after the backward pass.
    pub source: DotsSource,
    /// Output channels (`k`): the sums are `n × k`, row-major.
    pub channels: usize,
    /// The layer's fan-in (see [`Weight::fan_in`]).
    pub fan_in: usize,
}

/// Where a layer's output·gradient sums come from.
#[derive(Debug, Clone)]
pub enum DotsSource {
    /// A recorded output and its gradient: the sums are taken after the backward pass.
    Output(LayerOutput),
    /// A slot that a fused kernel fills during the backward pass.
    Slot(DotsSlot),
}

/// Output·gradient sums filled in by a fused kernel's backward pass (`n × k`, row-major).
pub type DotsSlot = std::sync::Arc<std::sync::Mutex<Option<Vec<f64>>>>;

impl LayerDots {
    /// The `n × k` sums (row-major) from the backward pass that produced `grads`; `None` when the
    /// output did not influence the loss.
    pub fn dots(&self, grads: &candle_core::backprop::GradStore) -> Result<Option<Vec<f64>>> {
        match &self.source {
            DotsSource::Output(out) => match out.gradient(grads) {
                Some(g) => Ok(Some(crate::channel_dots(&out.value, &g)?)),
                None => Ok(None),
            },
            DotsSource::Slot(s) => Ok(s.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        }
    }
}

/// What a traced forward pass returns.
#[derive(Debug, Clone)]
pub struct Recording {
    /// `(batch, classes)` logits.
    pub logits: Tensor,
    /// ReLU inputs (detached), one per ReLU module in forward order, when traced.
    pub relu_inputs: Vec<Tensor>,
    /// Convolution and linear outputs in forward order, when traced.
    pub layer_outputs: Vec<LayerOutput>,
    /// Output·gradient sums of convolution and linear layers in forward order, when traced.
    pub layer_dots: Vec<LayerDots>,
    /// The feature map before global average pooling, when traced.
    pub features: Option<Tensor>,
}

/// A scored weight: the weight of a convolution or linear layer (biases and BatchNorm
/// parameters are never scored).
#[derive(Debug, Clone)]
pub struct Weight {
    /// Its name in the network's parameter store.
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Inputs per output unit: `cin·kh·kw` for a convolution, `in_features` for a linear layer.
    pub fan_in: usize,
}

/// A network instrumented for zero-cost proxies.
pub trait ProxyNet {
    /// Forward an NCHW batch, recording what `trace` asks for.
    fn forward(&self, x: &Tensor, bn: BnHandling, trace: Trace) -> Result<Recording>;
    /// The convolution and linear weights, in forward order.
    fn weights(&self) -> Vec<Weight>;
    /// Every state tensor: weights, biases, BatchNorm parameters and running statistics.
    fn state(&self) -> Vec<(String, Var)>;
    /// The running variance of every BatchNorm, in forward order.
    fn bn_running_vars(&self) -> Vec<Tensor>;
    /// Forward with every ReLU replaced by a multiplication with the given mask (in forward
    /// order, the shapes of [`Recording::relu_inputs`]): the network linearised in its ReLUs at
    /// the point where the masks were taken, so that finite differences see no kinks.
    fn forward_masked(&self, x: &Tensor, bn: BnHandling, masks: &[Tensor]) -> Result<Recording>;
}

/// An architecture that proxies can score: it builds fresh, seeded networks on demand (each
/// proxy works on its own copy, as the reference harness does) and knows its closed-form cost.
pub trait Candidate: Sync {
    /// A stable key for caching that names the exact network [`Candidate::build`] builds: the
    /// architecture as written (not its isomorphism class: isomorphic cells are different
    /// networks, whose cut-off branches carry weights and ReLUs and shift the seeded
    /// initialisation) and every shape parameter that enters the network.
    fn key(&self) -> String;
    /// Build the network with PyTorch-default initialisation from `seed`, in `dtype`, on
    /// `device`. `higher_order` asks for operations whose gradients can be differentiated again
    /// (GraSP's Hessian-vector product).
    fn build(&self, dtype: DType, device: &Device, seed: u64, higher_order: bool) -> Result<Box<dyn ProxyNet>>;
    /// Trainable parameters.
    fn param_count(&self) -> usize;
    /// FLOPs of one forward pass, in the search space's own counting convention.
    fn flops(&self) -> f64;
    /// Input shape `(channels, height, width)` the network expects.
    fn input_shape(&self) -> (usize, usize, usize);
}
