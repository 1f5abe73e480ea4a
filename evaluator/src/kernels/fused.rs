//! ReLU → Conv → BatchNorm as one autograd node.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::bn::input_gradient_dots;
use super::bn::{bn_bwd, bn_fwd, BnStats};
use super::cell::ConvTap;
use super::conv::{conv_data, conv_filter, conv_fwd, ConvGeom};
use super::relu::{relu_fwd, relu_mask_into};
use super::{alloc_uninit, supports, Float};

/// What a fused ReLU→Conv→BatchNorm forward pass keeps for its backward pass.
struct ConvBnSaved<T> {
    /// ReLU output (the convolution's input), when the unit has a ReLU.
    r: Option<Vec<T>>,
    /// Convolution output (BatchNorm's input).
    y: Vec<T>,
    gamma: Vec<T>,
    stats: BnStats,
}

pub(crate) type Stash = Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>;

/// Fused `(x, w, [γ; β]) -> BN(conv(relu?(x), w))` with batch statistics: one graph node
/// instead of three, so candle's autograd allocates and accumulates one input gradient instead
/// of three.
#[derive(Clone)]
struct ConvBnOp {
    geom: ConvGeom,
    relu: bool,
    eps: f64,
    saved: Stash,
    /// What the backward pass reports about the convolution output, when traced.
    tap: Option<ConvTap>,
}

/// The gradient of [`ConvBnOp`]: `(x, w, gz) -> [gx | gw | gγ | gβ]` (flat; without `gx` when
/// the input takes no gradient).
#[derive(Clone)]
struct ConvBnBwdOp {
    geom: ConvGeom,
    relu: bool,
    /// Whether the input takes a gradient (it is a variable or computed from one); when not,
    /// the output has no `gx` part.
    need_x: bool,
    saved: Stash,
    tap: Option<ConvTap>,
}

impl ConvBnOp {
    fn run<T: Float>(&self, x: &[T], w: &[T], gb: &[T]) -> Vec<T> {
        let g = &self.geom;
        let r = self.relu.then(|| relu_fwd(x));
        let y = conv_fwd(g, r.as_deref().unwrap_or(x), w);
        let (z, stats) = bn_fwd(&y, &gb[..g.cout], &gb[g.cout..], (g.n, g.cout, g.p()), self.eps);
        let saved = ConvBnSaved {
            r,
            y,
            gamma: gb[..g.cout].to_vec(),
            stats,
        };
        *self.saved.lock().expect("conv-bn stash") = Some(Box::new(saved));
        z
    }
}

impl ConvBnBwdOp {
    fn run<T: Float>(&self, x: &[T], w: &[T], gz: &[T]) -> Result<Vec<T>> {
        let g = &self.geom;
        let guard = self.saved.lock().expect("conv-bn stash");
        let Some(saved) = guard.as_ref().and_then(|b| b.downcast_ref::<ConvBnSaved<T>>()) else {
            candle_core::bail!("fused conv-bn: backward without a matching forward pass")
        };
        let ylen = saved.y.len();
        let packed = bn_bwd(&saved.y, gz, &saved.gamma, (g.n, g.cout, g.p()), &saved.stats);
        let (gy, gparams) = packed.split_at(ylen);
        match &self.tap {
            None => {}
            Some(ConvTap::Grad(slot)) => {
                let t = Tensor::from_vec(gy.to_vec(), g.y_shape(), &candle_core::Device::Cpu)?;
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            }
            Some(ConvTap::Dots(slot)) => {
                let dots = input_gradient_dots(gy, &saved.y, &[[1.0, 0.0, 0.0]], g.p());
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(dots);
            }
        }
        let input = saved.r.as_deref().unwrap_or(x);
        let gw = conv_filter(g, input, gy);
        let tail = gw.len() + gparams.len();
        // [gx | gw | gγ | gβ], gx only when the input takes a gradient (not the stem's images);
        // the masked gradient is written in place, not appended to.
        let mut out = if !self.need_x {
            Vec::with_capacity(tail)
        } else if self.relu {
            let gr = conv_data(g, gy, w);
            let mut out = alloc_uninit::<T>(x.len() + tail);
            out.truncate(x.len());
            relu_mask_into(&mut out, &gr, x);
            out
        } else {
            let mut gx = conv_data(g, gy, w);
            gx.reserve(tail);
            gx
        };
        out.extend_from_slice(&gw);
        out.extend_from_slice(gparams);
        Ok(out)
    }
}

impl CustomOp3 for ConvBnOp {
    fn name(&self) -> &'static str {
        "autoagent-relu-conv-bn"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch!(self.name(); (s1, l1), (s2, l2), (s3, l3) => |x, w, gb| Ok::<_, candle_core::Error>(self.run(x, w, gb)));
        Ok((out, self.geom.y_shape()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, gb: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_x = x.track_op();
        let op = ConvBnBwdOp {
            geom: self.geom,
            relu: self.relu,
            need_x,
            saved: self.saved.clone(),
            tap: self.tap.clone(),
        };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (nw, ngb) = (w.elem_count(), gb.elem_count());
        let nx = if need_x { x.elem_count() } else { 0 };
        let gx = need_x.then(|| packed.narrow(0, 0, nx)?.reshape(x.shape())).transpose()?;
        let gw = packed.narrow(0, nx, nw)?.reshape(w.shape())?;
        let ggb = packed.narrow(0, nx + nw, ngb)?.reshape(gb.shape())?;
        Ok((gx, Some(gw), Some(ggb)))
    }
}

impl CustomOp3 for ConvBnBwdOp {
    fn name(&self) -> &'static str {
        "autoagent-relu-conv-bn-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch!(self.name(); (s1, l1), (s2, l2), (s3, l3) => |x, w, gz| self.run(x, w, gz));
        let len = out_len(&out);
        Ok((out, Shape::from(len)))
    }
}

fn out_len(s: &CpuStorage) -> usize {
    match s {
        CpuStorage::F32(v) => v.len(),
        CpuStorage::F64(v) => v.len(),
        _ => 0,
    }
}

/// Fused `[ReLU →] Conv (no bias) → BatchNorm with batch statistics` on CPU, with first-order
/// gradients; returns the output and the batch mean and biased variance of the convolution's
/// output. `gamma_beta` is `[γ; β]` concatenated (2·cout values).
pub fn relu_conv_bn(x: &Tensor, w: &Tensor, gamma_beta: &Tensor, stride: usize, pad: usize, relu: bool, eps: f64) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let (z, mean, var, _) = run(x, w, gamma_beta, stride, pad, relu, eps, None)?;
    Ok((z, mean, var))
}

/// [`relu_conv_bn`] with instrumentation for zero-cost proxies: the backward pass fills `tap`
/// (see [`ConvTap`]); with a gradient tap the convolution output is returned too, as a copy.
#[allow(clippy::too_many_arguments)]
pub fn relu_conv_bn_tapped(x: &Tensor, w: &Tensor, gamma_beta: &Tensor, stride: usize, pad: usize, relu: bool, eps: f64, tap: ConvTap) -> Result<ConvBnRun> {
    run(x, w, gamma_beta, stride, pad, relu, eps, Some(tap))
}

/// Output, batch mean, biased batch variance, and the convolution output when traced.
pub type ConvBnRun = (Tensor, Vec<f64>, Vec<f64>, Option<Tensor>);

#[allow(clippy::too_many_arguments)]
fn run(x: &Tensor, w: &Tensor, gamma_beta: &Tensor, stride: usize, pad: usize, relu: bool, eps: f64, tap: Option<ConvTap>) -> Result<ConvBnRun> {
    let geom = ConvGeom::new(x.dims(), w.dims(), stride, pad)?;
    if !x.device().is_cpu() || !supports(x.dtype()) || gamma_beta.elem_count() != 2 * geom.cout {
        candle_core::bail!("relu_conv_bn: needs f32/f64 CPU tensors and 2·cout BatchNorm parameters")
    }
    let traced = matches!(tap, Some(ConvTap::Grad(_)));
    let saved: Stash = Arc::new(Mutex::new(None));
    let op = ConvBnOp {
        geom,
        relu,
        eps,
        saved: saved.clone(),
        tap,
    };
    let z = x.contiguous()?.apply_op3(&w.contiguous()?, &gamma_beta.contiguous()?, op)?;
    let guard = saved.lock().expect("conv-bn stash");
    let any = guard.as_ref().expect("forward pass saved its buffers");
    fn read<T: Float>(s: &ConvBnSaved<T>, copy_y: bool, shape: Shape, dev: &candle_core::Device) -> Result<(BnStats, Option<Tensor>)> {
        let y = if copy_y { Some(Tensor::from_vec(s.y.clone(), shape, dev)?) } else { None };
        Ok((s.stats.clone(), y))
    }
    let (stats, y) = if let Some(s) = any.downcast_ref::<ConvBnSaved<f32>>() {
        read(s, traced, geom.y_shape(), x.device())?
    } else if let Some(s) = any.downcast_ref::<ConvBnSaved<f64>>() {
        read(s, traced, geom.y_shape(), x.device())?
    } else {
        candle_core::bail!("relu_conv_bn: unexpected saved buffers")
    };
    Ok((z, stats.mean, stats.var, y))
}
