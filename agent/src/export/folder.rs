//! Reading a model folder: `model.json` of a known format version, the weights built into the
//! network it describes.

use std::path::Path;

use autoagent_evaluator::net::Model;
use candle_core::Device;
use serde_json::Value;

use super::spec::{ModelSpec, MODEL_FORMAT, MODEL_FORMAT_VERSION, MODEL_FORMAT_VERSION_NO_DATA, SPEC_FILE};
use super::weights::load_model;
use super::{invalid, ExportError};
use crate::error_context::Context;

/// A loaded model folder.
pub struct LoadedModel {
    /// Its `model.json`.
    pub spec: ModelSpec,
    /// The network with its weights.
    pub model: Model,
}

/// Read a model folder: `model.json` of a known format version, the weights built into the
/// network it describes.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<LoadedModel, ExportError> {
    if !dir.is_dir() {
        return invalid(format!("model folder {} does not exist", dir.display()));
    }
    let json_path = dir.join(SPEC_FILE);
    if !json_path.is_file() {
        return invalid(format!(
            "{} holds no {SPEC_FILE}: not a model folder (autoagent export writes one)",
            dir.display()
        ));
    }
    let spec = read_spec(&json_path)?;
    let cfg = spec.net_config().with_context(|| format!("{}", json_path.display()))?;
    let weights = dir.join(&spec.weights);
    if !weights.is_file() {
        return invalid(format!("{} is missing (the weights {SPEC_FILE} names)", weights.display()));
    }
    let model = load_model(&cfg, &weights, device)?;
    Ok(LoadedModel { spec, model })
}

/// `model.json` at `json_path`, of a format, version, space, type and normalisation this build
/// reads.
fn read_spec(json_path: &Path) -> Result<ModelSpec, ExportError> {
    let text = std::fs::read_to_string(json_path).with_context(|| format!("cannot read {}", json_path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", json_path.display()))?;
    if value["format"] != MODEL_FORMAT {
        return invalid(format!(
            "{} is not an autoagent model spec (format is {}, expected \"{MODEL_FORMAT}\")",
            json_path.display(),
            value["format"]
        ));
    }
    if value["format_version"] != MODEL_FORMAT_VERSION && value["format_version"] != MODEL_FORMAT_VERSION_NO_DATA {
        return invalid(format!(
            "{} has format version {}; this build reads versions {MODEL_FORMAT_VERSION_NO_DATA} and {MODEL_FORMAT_VERSION}",
            json_path.display(),
            value["format_version"]
        ));
    }
    let spec: ModelSpec = serde_json::from_value(value).with_context(|| format!("{} is not a valid model spec", json_path.display()))?;
    if spec.space != "nb201" {
        return invalid(format!(
            "{}: unknown search space '{}' (this build knows nb201)",
            json_path.display(),
            spec.space
        ));
    }
    if spec.dtype != "f32" {
        return invalid(format!("{}: weights of type {} are not supported (f32 only)", json_path.display(), spec.dtype));
    }
    let (m, s) = (&spec.normalization.mean, &spec.normalization.std);
    if m.len() != spec.in_channels || s.len() != spec.in_channels || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return invalid(format!(
            "{}: the normalisation needs one mean and one positive std per input channel ({})",
            json_path.display(),
            spec.in_channels
        ));
    }
    Ok(spec)
}
