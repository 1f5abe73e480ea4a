//! The default space of a tabular task: a pipeline of preprocessing and a model family with its
//! hyperparameters, as data; and [`pipeline`], the configuration as the evaluator's
//! [`Pipeline`].
//!
//! Tree families (LightGBM's boosting, random forest, extra trees) take missing values and
//! unscaled columns as they are; imputation and scaling exist only for the linear model,
//! k-nearest neighbours and the MLP (whose shape the zero-cost proxies rank).

use autoagent_evaluator::tabular::learn::gbm::{Boosting, GbmParams};
use autoagent_evaluator::tabular::learn::knn::KnnParams;
use autoagent_evaluator::tabular::learn::linear::LinearParams;
use autoagent_evaluator::tabular::learn::mlp::{Activation, MlpParams};
use autoagent_evaluator::tabular::learn::Learner;
use autoagent_evaluator::tabular::{Encode, Impute, Pipeline, Preprocess, Scale};

use super::config::Config;
use super::param::{Kind, Param};
use super::space::Space;
use super::value::Value;

/// The model families, in the space's order.
pub const FAMILIES: [&str; 6] = ["gbm", "forest", "extra_trees", "linear", "knn", "mlp"];

const TREES: [&str; 3] = ["gbm", "forest", "extra_trees"];
const SCALED: [&str; 3] = ["linear", "knn", "mlp"];

fn choices(names: &[&str]) -> Kind {
    Kind::Categorical {
        choices: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn str_value(s: &str) -> Value {
    Value::Str(s.to_string())
}

/// The default space of a tabular task.
pub fn tabular_space() -> Space {
    let float = |low, high, log| Kind::Float { low, high, log };
    let int = |low, high, log| Kind::Int { low, high, log };
    let params = vec![
        Param::new("model", choices(&FAMILIES), str_value("gbm"), "model family: LightGBM boosting, random forest, extra trees, L2-regularised linear/logistic regression, k-nearest neighbours, multilayer perceptron"),
        Param::new("encode", choices(&["onehot", "ordinal", "target"]), str_value("onehot"), "categorical columns: one-hot, frequency rank, or out-of-fold target mean"),
        Param::new("max_onehot", Kind::Ordinal { values: vec![4, 8, 16, 32, 64] }, Value::Int(16), "one-hot columns of a categorical column at most (its rarer levels share one)").when("encode", &["onehot"]),
        Param::new("indicators", choices(&["yes", "no"]), str_value("yes"), "a 0/1 column for each numeric column with missing values"),
        Param::new("select", Kind::Ordinal { values: vec![25, 50, 75, 100] }, Value::Int(100), "percent of the encoded columns kept, by absolute correlation with the target"),
        Param::new("impute", choices(&["mean", "median", "most_frequent"]), str_value("median"), "fill of missing numbers").when("model", &SCALED),
        Param::new("scale", choices(&["standard", "minmax"]), str_value("standard"), "column scaling").when("model", &SCALED),
        Param::new("trees", int(50, 2000, true), Value::Int(300), "trees (boosting stops early on the validation rows)").when("model", &TREES),
        Param::new("learning_rate", float(0.005, 0.3, true), Value::Float(0.05), "boosting shrinkage").when("model", &["gbm"]),
        Param::new("num_leaves", int(4, 512, true), Value::Int(31), "leaves of a tree").when("model", &TREES),
        Param::new("min_child_samples", int(1, 100, true), Value::Int(20), "rows a leaf at least").when("model", &TREES),
        Param::new("feature_fraction", float(0.3, 1.0, false), Value::Float(0.8), "share of columns a tree").when("model", &TREES),
        Param::new("bagging_fraction", float(0.5, 1.0, false), Value::Float(0.8), "share of rows a tree").when("model", &["gbm"]),
        Param::new("lambda_l2", float(1e-3, 10.0, true), Value::Float(0.1), "L2 penalty of leaf values").when("model", &["gbm"]),
        Param::new("alpha", float(1e-4, 100.0, true), Value::Float(1.0), "L2 penalty of the weights").when("model", &["linear"]),
        Param::new("k", int(1, 100, true), Value::Int(15), "neighbours").when("model", &["knn"]),
        Param::new("weights", choices(&["uniform", "distance"]), str_value("distance"), "neighbours' weights").when("model", &["knn"]),
        Param::new("layers", int(1, 4, false), Value::Int(2), "hidden layers").when("model", &["mlp"]),
        Param::new("width", Kind::Ordinal { values: vec![32, 64, 128, 256, 512] }, Value::Int(128), "units a hidden layer").when("model", &["mlp"]),
        Param::new("activation", choices(&["relu", "gelu", "tanh"]), str_value("relu"), "hidden activation").when("model", &["mlp"]),
        Param::new("dropout", float(0.0, 0.5, false), Value::Float(0.1), "dropout after each hidden layer").when("model", &["mlp"]),
        Param::new("batch_norm", choices(&["yes", "no"]), str_value("yes"), "BatchNorm after each hidden linear layer").when("model", &["mlp"]),
        Param::new("lr", float(1e-4, 3e-2, true), Value::Float(2e-3), "AdamW step size").when("model", &["mlp"]),
        Param::new("weight_decay", float(1e-6, 1e-1, true), Value::Float(1e-4), "AdamW weight decay").when("model", &["mlp"]),
        Param::new("batch_size", Kind::Ordinal { values: vec![32, 64, 128, 256, 512] }, Value::Int(128), "rows a minibatch").when("model", &["mlp"]),
        Param::new("epochs", int(10, 300, true), Value::Int(100), "epochs at most (training stops early on the validation rows)").when("model", &["mlp"]),
    ];
    Space::new(params).expect("the tabular space is valid")
}

/// A configuration of (a narrowing of) [`tabular_space`] as a pipeline; values it lacks take
/// the space's defaults.
pub fn pipeline(c: &Config) -> Pipeline {
    let d = tabular_space().default_config();
    let s = |name: &str| c.str(name).or_else(|| d.str(name)).unwrap_or_default().to_string();
    let i = |name: &str| c.int(name).or_else(|| d.int(name)).unwrap_or(0).max(0) as usize;
    let f = |name: &str| c.float(name).or_else(|| d.float(name)).unwrap_or(0.0);
    let model = s("model");
    let scaled = SCALED.contains(&model.as_str());
    let preprocess = Preprocess {
        impute: match (scaled, s("impute").as_str()) {
            (false, _) => Impute::Keep,
            (true, "mean") => Impute::Mean,
            (true, "most_frequent") => Impute::MostFrequent,
            _ => Impute::Median,
        },
        indicators: s("indicators") == "yes",
        encode: match s("encode").as_str() {
            "ordinal" => Encode::Ordinal,
            "target" => Encode::Target,
            _ => Encode::OneHot,
        },
        max_onehot: i("max_onehot").max(1),
        scale: match (scaled, s("scale").as_str()) {
            (true, "standard") => Scale::Standard,
            (true, "minmax") => Scale::MinMax,
            _ => Scale::None,
        },
        select: i("select").clamp(1, 100) as f64 / 100.0,
    };
    let trees = |boosting, extra_trees| GbmParams {
        boosting,
        extra_trees,
        trees: i("trees").max(1),
        learning_rate: f("learning_rate"),
        num_leaves: i("num_leaves").max(2),
        min_child_samples: i("min_child_samples").max(1),
        feature_fraction: f("feature_fraction"),
        bagging_fraction: if boosting == Boosting::Forest { 0.632 } else { f("bagging_fraction") },
        lambda_l2: if boosting == Boosting::Forest { 0.0 } else { f("lambda_l2") },
    };
    let learner = match model.as_str() {
        "forest" => Learner::Gbm(trees(Boosting::Forest, false)),
        "extra_trees" => Learner::Gbm(trees(Boosting::Forest, true)),
        "linear" => Learner::Linear(LinearParams {
            alpha: f("alpha"),
            max_iterations: 300,
        }),
        "knn" => Learner::Knn(KnnParams {
            k: i("k").max(1),
            distance_weighted: s("weights") == "distance",
        }),
        "mlp" => Learner::Mlp(MlpParams {
            layers: i("layers"),
            width: i("width").max(1),
            activation: match s("activation").as_str() {
                "gelu" => Activation::Gelu,
                "tanh" => Activation::Tanh,
                _ => Activation::Relu,
            },
            dropout: f("dropout").clamp(0.0, 0.9),
            batch_norm: s("batch_norm") == "yes",
            learning_rate: f("lr"),
            weight_decay: f("weight_decay"),
            batch_size: i("batch_size").max(1),
            epochs: i("epochs").max(1),
        }),
        _ => Learner::Gbm(trees(Boosting::Gbdt, false)),
    };
    Pipeline { preprocess, learner }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_sampled_configuration_is_a_pipeline_of_its_family() {
        let space = tabular_space();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut families = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let c = space.sample(&mut rng);
            space.validate(&c).unwrap();
            let p = pipeline(&c);
            let model = c.str("model").unwrap();
            families.insert(model.to_string());
            match (model, &p.learner) {
                ("gbm", Learner::Gbm(g)) => assert_eq!(g.boosting, Boosting::Gbdt),
                ("forest" | "extra_trees", Learner::Gbm(g)) => assert_eq!((g.boosting, g.extra_trees), (Boosting::Forest, model == "extra_trees")),
                ("linear", Learner::Linear(_)) | ("knn", Learner::Knn(_)) | ("mlp", Learner::Mlp(_)) => assert_ne!(p.preprocess.impute, Impute::Keep),
                (m, l) => panic!("{m} gave {l:?}"),
            }
            if TREES.contains(&model) {
                assert_eq!((p.preprocess.impute, p.preprocess.scale), (Impute::Keep, Scale::None));
            }
        }
        assert_eq!(families.len(), FAMILIES.len());
        // The default is LightGBM's usual setting.
        let d = pipeline(&space.default_config());
        assert!(matches!(d.learner, Learner::Gbm(ref g) if g.num_leaves == 31));
    }
}
