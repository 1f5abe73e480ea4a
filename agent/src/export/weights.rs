//! A weights file (safetensors) and the NB201 network it fits.

use std::collections::BTreeSet;
use std::path::Path;

use autoagent_evaluator::net::{Model, Nb201Config};
use candle_core::{DType, Device};

use super::{invalid, ExportError};
use crate::error_context::Context;

/// C (the stem's output channels) and N (cells per stage: the index of the first reduction
/// block) of the network a weights file holds.
pub(crate) fn skeleton_of(path: &Path) -> Result<(usize, usize), ExportError> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("cannot read the weights {}", path.display()))?;
    let Some(stem) = tensors.get("stem.conv.weight") else {
        return invalid(format!("{} holds no NB201 network (no stem.conv.weight)", path.display()));
    };
    let channels = stem.dim(0)?;
    let first_reduction = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("cells.")?.strip_suffix(".shortcut.weight")?.parse::<usize>().ok())
        .min();
    let Some(first_reduction) = first_reduction else {
        return invalid(format!("{} holds no NB201 network (no reduction block)", path.display()));
    };
    Ok((channels, first_reduction))
}

/// Build the network of `cfg` on `device` with the weights of `path`: every variable of the
/// network must be in the file with its shape, and the file may hold nothing else.
pub(crate) fn load_model(cfg: &Nb201Config, path: &Path, device: &Device) -> Result<Model, ExportError> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("cannot read the weights {}", path.display()))?;
    let mut model = Model::new(cfg, DType::F32, device, 0)?;
    let expected: BTreeSet<String> = model.varmap.data().lock().expect("varmap lock").keys().cloned().collect();
    let found: BTreeSet<String> = tensors.keys().cloned().collect();
    if let Some(missing) = expected.difference(&found).next() {
        return invalid(format!("{} lacks the tensor {missing} of the network", path.display()));
    }
    if let Some(extra) = found.difference(&expected).next() {
        return invalid(format!("{} holds a tensor the network does not have: {extra}", path.display()));
    }
    drop(tensors);
    model.load(path).with_context(|| format!("cannot load {}", path.display()))?;
    Ok(model)
}
