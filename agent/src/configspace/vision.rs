//! The default space of an image-classification task: an NB201 cell in NB201's network (width
//! and depth free) and the training hyperparameters; and its typed view, [`VisionConfig`].

use autoagent_evaluator::nb201::Arch;

use super::config::Config;
use super::error::Error;
use super::param::{Kind, Param};
use super::space::Space;
use super::value::Value;

/// NB201's cell of median CIFAR-10 accuracy (90.71 %): the default gives no head start.
pub const MEDIAN_CELL: &str = "|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|";

/// The training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Augment {
    /// None.
    None,
    /// Random crops of the padded image and horizontal flips.
    CropFlip,
    /// Crops, flips and cutout (a random square set to zero).
    CropFlipCutout,
}

impl Augment {
    /// All, in the space's order.
    pub const ALL: [Augment; 3] = [Augment::None, Augment::CropFlip, Augment::CropFlipCutout];

    /// Its name in the space.
    pub fn name(self) -> &'static str {
        match self {
            Augment::None => "none",
            Augment::CropFlip => "crop_flip",
            Augment::CropFlipCutout => "crop_flip_cutout",
        }
    }

    /// The augmentation named `name`.
    pub fn from_name(name: &str) -> Option<Augment> {
        Augment::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The default space of an image-classification task.
pub fn vision_space() -> Space {
    let float = |low, high, log| Kind::Float { low, high, log };
    let params = vec![
        Param::new("cell", Kind::Cell, Value::Cell(median_cell()), "the NB201 cell repeated in every stage"),
        Param::new(
            "width",
            Kind::Ordinal { values: vec![8, 16, 32, 64] },
            Value::Int(16),
            "channels C of the first stage (doubled at each of the 2 reductions)",
        ),
        Param::new(
            "depth",
            Kind::Int { low: 1, high: 5, log: false },
            Value::Int(5),
            "cells N per stage (3 stages)",
        ),
        Param::new(
            "lr",
            float(1e-3, 0.5, true),
            Value::Float(0.1),
            "initial learning rate of SGD (cosine decay to 0)",
        ),
        Param::new("weight_decay", float(1e-5, 1e-2, true), Value::Float(5e-4), "L2 weight decay"),
        Param::new(
            "batch",
            Kind::Ordinal {
                values: vec![32, 64, 128, 256],
            },
            Value::Int(128),
            "training batch size",
        ),
        Param::new(
            "augment",
            choices(&Augment::ALL.map(Augment::name)),
            Value::Str("crop_flip".into()),
            "training augmentation",
        ),
        Param::new(
            "cutout_length",
            Kind::Int { low: 4, high: 16, log: false },
            Value::Int(8),
            "side in pixels of the cutout square",
        )
        .when("augment", &["crop_flip_cutout"]),
        Param::new(
            "label_smoothing",
            float(0.0, 0.2, false),
            Value::Float(0.0),
            "share of the target spread over the other classes",
        ),
    ];
    Space::new(params).expect("the vision space is valid")
}

/// The space of an NB201 table task: the cell alone (the table trained every cell in the same
/// network, C = 16, N = 5, with the same recipe).
pub fn cell_space() -> Space {
    let cell = Param::new("cell", Kind::Cell, Value::Cell(median_cell()), "the NB201 cell repeated in every stage");
    Space::new(vec![cell]).expect("the cell space is valid")
}

fn choices(names: &[&str]) -> Kind {
    Kind::Categorical {
        choices: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn median_cell() -> Arch {
    Arch::parse(MEDIAN_CELL).expect("the median cell parses")
}

/// A configuration of [`vision_space`], typed.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// The cell.
    pub arch: Arch,
    /// Channels of the first stage (C).
    pub width: usize,
    /// Cells per stage (N).
    pub depth: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Training batch size.
    pub batch: usize,
    /// Training augmentation.
    pub augment: Augment,
    /// Side of the cutout square, with [`Augment::CropFlipCutout`] only.
    pub cutout_length: Option<usize>,
    /// Label smoothing.
    pub label_smoothing: f64,
}

/// The space's defaults: NB201's own network (C = 16, N = 5) around its median cell.
impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            arch: median_cell(),
            width: 16,
            depth: 5,
            lr: 0.1,
            weight_decay: 5e-4,
            batch: 128,
            augment: Augment::CropFlip,
            cutout_length: None,
            label_smoothing: 0.0,
        }
    }
}

impl VisionConfig {
    /// The typed view of a configuration of a vision space or of a narrower one (an NB201
    /// table's, only a cell): values it lacks or holds of another type take the defaults, a
    /// cutout length only counts with cutout on.
    pub fn lenient(c: &Config) -> VisionConfig {
        let d = VisionConfig::default();
        let count = |name: &str, default: usize| c.int(name).filter(|&i| i > 0).map_or(default, |i| i as usize);
        let real = |name: &str, default: f64| c.float(name).unwrap_or(default);
        let augment = c.str("augment").and_then(Augment::from_name).unwrap_or(d.augment);
        VisionConfig {
            arch: c.cell("cell").unwrap_or(d.arch),
            width: count("width", d.width),
            depth: count("depth", d.depth),
            lr: real("lr", d.lr),
            weight_decay: real("weight_decay", d.weight_decay),
            batch: count("batch", d.batch),
            cutout_length: match augment {
                Augment::CropFlipCutout => Some(count("cutout_length", 8)),
                _ => None,
            },
            augment,
            label_smoothing: real("label_smoothing", d.label_smoothing),
        }
    }
}

/// A configuration that [`vision_space`] validates (a narrowed vision space's are).
impl TryFrom<&Config> for VisionConfig {
    type Error = Error;

    fn try_from(c: &Config) -> Result<Self, Error> {
        vision_space().validate(c)?;
        let count = |name: &str| c.int(name).map(|i| i as usize).ok_or_else(|| absent(name));
        let real = |name: &str| c.float(name).ok_or_else(|| absent(name));
        Ok(VisionConfig {
            arch: c.cell("cell").ok_or_else(|| absent("cell"))?,
            width: count("width")?,
            depth: count("depth")?,
            lr: real("lr")?,
            weight_decay: real("weight_decay")?,
            batch: count("batch")?,
            augment: c.str("augment").and_then(Augment::from_name).ok_or_else(|| absent("augment"))?,
            cutout_length: c.int("cutout_length").map(|i| i as usize),
            label_smoothing: real("label_smoothing")?,
        })
    }
}

/// Unreachable after validation; kept an error rather than a panic.
fn absent(name: &str) -> Error {
    Error::Missing {
        name: name.into(),
        when: String::new(),
    }
}

impl From<&VisionConfig> for Config {
    fn from(v: &VisionConfig) -> Config {
        let int = |n: usize| Value::Int(n as i64);
        let mut c = Config::new()
            .with("cell", Value::Cell(v.arch))
            .with("width", int(v.width))
            .with("depth", int(v.depth))
            .with("lr", Value::Float(v.lr))
            .with("weight_decay", Value::Float(v.weight_decay))
            .with("batch", int(v.batch))
            .with("augment", Value::Str(v.augment.name().into()))
            .with("label_smoothing", Value::Float(v.label_smoothing));
        if let Some(n) = v.cutout_length {
            c.set("cutout_length", int(n));
        }
        c
    }
}
