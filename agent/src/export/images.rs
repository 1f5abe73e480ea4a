//! Predictions of a loaded model on image files (png, jpg, bmp, pgm, ppm, ...).

use std::path::{Path, PathBuf};

use autoagent_evaluator::data::Split;
use candle_core::Device;
use serde_json::json;

use super::folder::LoadedModel;
use super::predict::predict_split;
use super::{invalid, ExportError};
use crate::error_context::Context;

/// Image file extensions `predict --images` reads (case-insensitive).
const IMAGE_EXTENSIONS: [&str; 9] = ["png", "pgm", "ppm", "pbm", "pnm", "pam", "bmp", "jpg", "jpeg"];

/// The class predicted for one image file.
pub struct ImagePrediction {
    /// The file's name.
    pub file: String,
    /// The class index.
    pub class: usize,
    /// The class name (its index where none is known).
    pub label: String,
    /// Its softmax probability.
    pub probability: f32,
}

impl ImagePrediction {
    /// The line `predict` prints: a JSON object, or `file<TAB>label<TAB>probability`.
    pub fn line(&self, json: bool) -> String {
        if json {
            json!({"file": self.file, "class": self.class, "label": self.label, "probability": self.probability}).to_string()
        } else {
            format!("{}\t{}\t{:.4}", self.file, self.label, self.probability)
        }
    }
}

/// Classify the image file `path`, or every image file directly in the folder `path` (by
/// name); each image is converted to the model's channels and resized to its input size.
pub fn predict_images(m: &LoadedModel, path: &Path, batch_size: usize, device: &Device) -> Result<Vec<ImagePrediction>, ExportError> {
    let spec = &m.spec;
    let files = image_files(path)?;
    let (c, s) = (spec.in_channels, spec.input_size);
    let mut images = Vec::with_capacity(files.len() * c * s * s);
    for file in &files {
        images.extend(read_image(file, c, s)?);
    }
    let split = Split {
        images,
        labels: vec![0; files.len()],
        n: files.len(),
        c,
        h: s,
        w: s,
    };
    let preds = predict_split(m, &split, batch_size, device)?;
    Ok(files
        .iter()
        .zip(&preds)
        .map(|(file, &(class, probability))| ImagePrediction {
            file: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            class,
            label: spec.label(class),
            probability,
        })
        .collect())
}

/// `path` itself when it is a file, else the image files directly in the folder `path` (by
/// extension), sorted by name.
fn image_files(folder: &Path) -> Result<Vec<PathBuf>, ExportError> {
    if folder.is_file() {
        return Ok(vec![folder.to_path_buf()]);
    }
    if !folder.is_dir() {
        return invalid(format!("image file or folder {} does not exist", folder.display()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return invalid(format!("{} holds no image files ({})", folder.display(), IMAGE_EXTENSIONS.join(", ")));
    }
    Ok(files)
}

/// One image file as `c` planes of `side × side` bytes (grey for one channel, R, G, B for
/// three), resized (bilinear) when its size differs.
fn read_image(path: &Path, c: usize, side: usize) -> Result<Vec<u8>, ExportError> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("cannot decode the image {}", path.display()))?;
    let side32 = side as u32;
    let filter = image::imageops::FilterType::Triangle;
    match c {
        1 => {
            let mut g = img.to_luma8();
            if g.dimensions() != (side32, side32) {
                g = image::imageops::resize(&g, side32, side32, filter);
            }
            Ok(g.into_raw())
        }
        3 => {
            let mut rgb = img.to_rgb8();
            if rgb.dimensions() != (side32, side32) {
                rgb = image::imageops::resize(&rgb, side32, side32, filter);
            }
            Ok(planes(&rgb, side * side))
        }
        other => invalid(format!("the model takes images of {other} channels; only 1 (grey) and 3 (RGB) are supported")),
    }
}

/// Interleaved RGB pixels as three planes (R, G, B) of `plane` bytes.
fn planes(rgb: &image::RgbImage, plane: usize) -> Vec<u8> {
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for ch in 0..3 {
            chw[ch * plane + i] = px.0[ch];
        }
    }
    chw
}
