//! Checkpoints of a training run: every variable of the model (weights and BatchNorm running
//! statistics), SGD's momentum buffers and the number of epochs done, in one safetensors file,
//! so that a run continues where an earlier one stopped (a trial promoted to a longer training
//! by a multi-fidelity scheduler) instead of starting again.
//!
//! Keys: the model's own variable names, `momentum.<name>` for the buffer of each trainable
//! variable that has one, and [`EPOCHS_KEY`] (a one-element u32 tensor).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::net::Model;
use crate::train::Sgd;

/// The key of the epochs done.
pub const EPOCHS_KEY: &str = "checkpoint.epochs";

const MOMENTUM: &str = "momentum.";

/// Save `model`, the momentum of `opt` (built over `model.trainable()`, in its order) and
/// `epochs` to `path`, through a temporary name renamed into place (a crash never leaves a
/// half-written checkpoint under that name).
pub fn save(model: &Model, opt: &Sgd, epochs: usize, path: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    {
        let data = model.varmap.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            tensors.insert(name.clone(), var.as_tensor().clone());
        }
    }
    for ((name, _), buf) in model.trainable().iter().zip(opt.buffers()) {
        if let Some(b) = buf {
            tensors.insert(format!("{MOMENTUM}{name}"), b);
        }
    }
    tensors.insert(EPOCHS_KEY.to_string(), Tensor::new(&[epochs as u32], &Device::Cpu)?);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// Load a checkpoint written by [`save`] into `model` and `opt` (of the same network);
/// returns the epochs it had done.
pub fn load(model: &mut Model, opt: &mut Sgd, path: &Path, device: &Device) -> Result<usize> {
    let bad = |why: String| Error::Config(format!("checkpoint {}: {why}", path.display()));
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let tensors = candle_core::safetensors::load(path, device)?;
    let epochs = tensors
        .get(EPOCHS_KEY)
        .ok_or_else(|| bad(format!("no {EPOCHS_KEY}")))?
        .to_device(&Device::Cpu)?
        .to_vec1::<u32>()?;
    let epochs = *epochs.first().ok_or_else(|| bad("empty epoch count".into()))? as usize;
    {
        let data = model.varmap.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            let t = tensors.get(name).ok_or_else(|| bad(format!("no variable {name} (another network?)")))?;
            if t.shape() != var.shape() {
                return Err(bad(format!("variable {name} has shape {:?}, the network {:?}", t.shape(), var.shape())));
            }
            var.set(t)?;
        }
    }
    let buffers = model
        .trainable()
        .iter()
        .map(|(name, _)| tensors.get(&format!("{MOMENTUM}{name}")).cloned())
        .collect();
    opt.set_buffers(buffers)?;
    Ok(epochs)
}
