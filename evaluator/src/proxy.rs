//! NB201 networks as zero-cost proxy candidates: the evaluator's side of the instrumentation
//! trait of `autoagent-proxies`.

use autoagent_proxies::{BnHandling, Candidate, ProxyNet, Recording, Trace, Weight};
use candle_core::{DType, Device, Tensor, Var};

use crate::net::{is_running_stat, BnMode, Kernels, Model, Nb201Config, Recorded, Recorder};

fn proxy_err(e: crate::Error) -> autoagent_proxies::Error {
    match e {
        crate::Error::Candle(e) => autoagent_proxies::Error::Candle(e),
        other => autoagent_proxies::Error::Msg(other.to_string()),
    }
}

/// The BatchNorm mode of a proxy's forward pass (NB201 networks and tabular MLPs alike).
pub(crate) fn bn_mode(bn: BnHandling) -> BnMode {
    match bn {
        BnHandling::Batch => BnMode::Batch,
        BnHandling::Train => BnMode::Train,
        BnHandling::Bypass => BnMode::Bypass,
    }
}

/// A proxy's recording of a traced forward pass: its logits and what was recorded.
pub(crate) fn recording(logits: Tensor, r: Recorded) -> Recording {
    Recording {
        logits,
        relu_inputs: r.relu_inputs,
        layer_outputs: r.layer_outputs,
        layer_dots: r.layer_dots,
        features: r.features,
    }
}

fn run(model: &Model, x: &Tensor, bn: BnHandling, rec: Recorder) -> autoagent_proxies::Result<Recording> {
    let logits = model.net.forward_traced(x, bn_mode(bn), Some(&rec)).map_err(proxy_err)?;
    Ok(recording(logits, rec.finish()))
}

impl ProxyNet for Model {
    fn forward(&self, x: &Tensor, bn: BnHandling, trace: Trace) -> autoagent_proxies::Result<Recording> {
        run(self, x, bn, Recorder::new(trace))
    }

    fn forward_masked(&self, x: &Tensor, bn: BnHandling, masks: &[Tensor]) -> autoagent_proxies::Result<Recording> {
        run(self, x, bn, Recorder::with_masks(Trace::default(), masks))
    }

    fn weights(&self) -> Vec<Weight> {
        self.trainable()
            .into_iter()
            .filter(|(name, var)| name.ends_with("weight") && matches!(var.rank(), 2 | 4))
            .map(|(name, var)| {
                let fan_in = var.dims()[1..].iter().product();
                Weight { name, var, fan_in }
            })
            .collect()
    }

    fn state(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn bn_running_vars(&self) -> Vec<Tensor> {
        self.state()
            .into_iter()
            .filter(|(n, _)| is_running_stat(n) && n.ends_with("running_var"))
            .map(|(_, v)| v.as_tensor().clone())
            .collect()
    }
}

/// An NB201 architecture (with its network shape) as a proxy candidate.
#[derive(Debug, Clone)]
pub struct Nb201Candidate {
    /// The network to build.
    pub config: Nb201Config,
}

impl Nb201Candidate {
    /// The benchmark's CIFAR-10 network for `config`.
    pub fn new(config: Nb201Config) -> Self {
        Nb201Candidate { config }
    }
}

impl Candidate for Nb201Candidate {
    fn key(&self) -> String {
        let c = &self.config;
        format!(
            "nb201:{}:C{}N{}K{}I{}S{}",
            c.arch, c.channels, c.cells_per_stage, c.num_classes, c.in_channels, c.input_size
        )
    }

    fn build(&self, dtype: DType, device: &Device, seed: u64, higher_order: bool) -> autoagent_proxies::Result<Box<dyn ProxyNet>> {
        let mut model = Model::new(&self.config, dtype, device, seed).map_err(proxy_err)?;
        if higher_order {
            model.net.set_kernels(Kernels::Composite);
        }
        Ok(Box::new(model))
    }

    fn param_count(&self) -> usize {
        self.config.param_count()
    }

    fn flops(&self) -> f64 {
        self.config.flops()
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (self.config.in_channels, self.config.input_size, self.config.input_size)
    }
}

/// The proxies' minibatch: `batch_size` training images drawn with `seed` (without
/// replacement), with the training augmentation (random crop with 4-pixel padding, horizontal
/// flip on CIFAR) and the dataset's normalisation, as the reference harness's `dataload='random'`.
pub fn proxy_batch(data: &crate::data::Dataset, batch_size: usize, seed: u64, device: &Device) -> crate::Result<autoagent_proxies::Batch> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    if batch_size == 0 || batch_size > data.train.n {
        return Err(crate::Error::Config(format!(
            "proxy batch size {batch_size} must be between 1 and the {} training images",
            data.train.n
        )));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..data.train.n).collect();
    idx.shuffle(&mut rng);
    idx.truncate(batch_size);
    let (mean, std) = data.kind.mean_std();
    let hflip = matches!(data.kind, crate::data::DatasetKind::Cifar10 | crate::data::DatasetKind::Cifar100);
    let (images, labels) = crate::train::Batcher::new(mean, std).batch(&data.train, &idx, Some((4, hflip, &mut rng)), device)?;
    Ok(autoagent_proxies::Batch { images, labels })
}

/// The id of a proxy batch in the score cache (`autoagent_proxies::cache`): the dataset, the batch
/// size, the seed and the first 16 hex digits of a SHA-256 over the batch's shape, its images as
/// the proxies see them (augmented and normalised) and its labels, e.g.
/// `cifar10:b64:s0:05dae5024d683ca9` (the CIFAR-10 fixture, seed 0). Batches of different images
/// (the mini fixture and the full CIFAR-10, another folder, another part of a split) never share an
/// id, so scores computed on one are never served for another.
pub fn batch_id(kind: crate::data::DatasetKind, batch: &autoagent_proxies::Batch, seed: u64) -> crate::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for d in batch.images.dims() {
        hash.update((*d as u64).to_le_bytes());
    }
    for v in batch.images.flatten_all()?.to_vec1::<f32>()? {
        hash.update(v.to_le_bytes());
    }
    for l in batch.labels.to_dtype(DType::U32)?.to_vec1::<u32>()? {
        hash.update(l.to_le_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}:b{}:s{seed}:{hex}", kind.name(), batch.labels.dims1()?))
}
