//! MLP shapes as zero-cost proxy candidates: every proxy of `autoagent-proxies` scores an MLP
//! on a batch of the pipeline's rows (as `(rows, columns, 1, 1)` "images") before it is trained.
//! A regression's network has one output, so the proxies that take a classification loss
//! (snip, grasp, fisher, grad_norm) say nothing about it; the label-free ones do.

use autoagent_proxies::{Batch, BnHandling, Candidate, ProxyNet, Recording, Trace, Weight};
use candle_core::{DType, Device, Tensor, Var};

use super::net::{MlpNet, MlpShape, Pass};
use crate::proxy::{bn_mode, recording};
use crate::tabular::matrix::Matrix;

fn proxy_err(e: candle_core::Error) -> autoagent_proxies::Error {
    autoagent_proxies::Error::Candle(e)
}

fn traced(net: &MlpNet, x: &Tensor, bn: BnHandling, pass: Pass) -> autoagent_proxies::Result<Recording> {
    let (logits, r) = net.forward_pass(x, bn_mode(bn), pass).map_err(proxy_err)?;
    Ok(recording(logits, r))
}

impl ProxyNet for MlpNet {
    fn forward(&self, x: &Tensor, bn: BnHandling, trace: Trace) -> autoagent_proxies::Result<Recording> {
        traced(self, x, bn, Pass { trace, ..Pass::default() })
    }

    fn forward_masked(&self, x: &Tensor, bn: BnHandling, masks: &[Tensor]) -> autoagent_proxies::Result<Recording> {
        traced(
            self,
            x,
            bn,
            Pass {
                masks: Some(masks),
                ..Pass::default()
            },
        )
    }

    fn weights(&self) -> Vec<Weight> {
        self.named()
            .into_iter()
            .filter(|(name, var)| name.ends_with("weight") && !name.ends_with("bn.weight") && var.rank() == 2)
            .map(|(name, var)| {
                let fan_in = var.dims()[1];
                Weight { name, var, fan_in }
            })
            .collect()
    }

    fn state(&self) -> Vec<(String, Var)> {
        self.named()
    }

    fn bn_running_vars(&self) -> Vec<Tensor> {
        self.hidden
            .iter()
            .filter_map(|h| h.bn.as_ref())
            .map(|bn| bn.running_var.as_tensor().clone())
            .collect()
    }
}

/// An MLP shape that the proxies score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlpCandidate(pub MlpShape);

impl Candidate for MlpCandidate {
    fn key(&self) -> String {
        let s = &self.0;
        format!("mlp-{}x{}-{}x{}-{:?}-bn{}", s.inputs, s.outputs, s.layers, s.width, s.activation, s.batch_norm)
    }

    fn build(&self, dtype: DType, device: &Device, seed: u64, _higher_order: bool) -> autoagent_proxies::Result<Box<dyn ProxyNet>> {
        Ok(Box::new(MlpNet::new(self.0, dtype, device, seed).map_err(proxy_err)?))
    }

    fn param_count(&self) -> usize {
        self.0.param_count()
    }

    fn flops(&self) -> f64 {
        self.0.flops()
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (self.0.inputs, 1, 1)
    }
}

/// A proxy batch of `x`'s rows (missing values as 0) with their class indices as labels (`None`,
/// a regression: all 0).
pub fn batch(x: &Matrix, classes: Option<&[f64]>) -> autoagent_proxies::Result<Batch> {
    let xs: Vec<f32> = super::finite(x).into_iter().map(|v| v as f32).collect();
    let images = Tensor::from_vec(xs, (x.rows, x.cols, 1, 1), &Device::Cpu).map_err(proxy_err)?;
    let y: Vec<u32> = match classes {
        Some(c) => c.iter().map(|&c| if c.is_finite() && c >= 0.0 { c as u32 } else { 0 }).collect(),
        None => vec![0; x.rows],
    };
    Ok(Batch {
        images,
        labels: Tensor::from_vec(y, x.rows, &Device::Cpu).map_err(proxy_err)?,
    })
}
