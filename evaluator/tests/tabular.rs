//! Tabular learners on the real fixtures (`shared/data/tabular`), on the fixed splits the peers
//! were measured on: each family fits the training rows through a preprocessing and is measured
//! once on the test rows, well above chance and near the peers' numbers.

use std::path::PathBuf;

use autoagent_evaluator::tabular::learn::gbm::{Boosting, GbmParams};
use autoagent_evaluator::tabular::learn::knn::KnnParams;
use autoagent_evaluator::tabular::learn::linear::LinearParams;
use autoagent_evaluator::tabular::learn::{target_numbers, Fit, Learner};
use autoagent_evaluator::tabular::{
    read_csv, Encode, Impute, Metric, Preprocess, Preprocessor, ReadOptions, Scale, SplitFile, TabularData, TargetValues, Truth,
};

fn shared() -> PathBuf {
    match std::env::var_os("AUTOAGENT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

/// The test metric of `learner` behind `spec` on split seed 0 of `name`.
fn measure(name: &str, spec: &Preprocess, learner: &Learner, metric: Metric) -> f64 {
    let dir = shared().join("tabular");
    let frame = read_csv(&dir.join(format!("{name}.csv")), &ReadOptions::default()).unwrap();
    let data = TabularData::from_frame(&frame, "target", None).unwrap();
    let split = SplitFile::read(&dir.join("splits").join(format!("{name}_seed0.json")), frame.rows).unwrap();
    let (p, x) = Preprocessor::fit_transform(spec, &data.features, &data.target.values, &split.train, 0);
    let test = p.transform(&data.features, &split.test);
    let classes = match &data.target.values {
        TargetValues::Classes { classes, .. } => classes.len(),
        TargetValues::Values(_) => 1,
    };
    let y = target_numbers(&data.target.values.take(&split.train));
    let fit = Fit {
        problem: data.target.problem,
        classes,
        threads: 1,
        seed: 0,
        valid: None,
        deadline: None,
    };
    let model = learner.fit(&x, &y, &fit).unwrap();
    let pred = model.predict(&test, 1).unwrap();
    let truth = data.target.values.take(&split.test);
    let value = match &truth {
        TargetValues::Classes { codes, .. } => metric.score(&Truth::Classes(codes), &pred),
        TargetValues::Values(v) => metric.score(&Truth::Values(v), &pred),
    };
    eprintln!("{name} {} {metric}: {value:.4}", learner.family());
    value
}

fn gbm() -> Learner {
    Learner::Gbm(GbmParams::default())
}

fn scaled() -> Preprocess {
    Preprocess {
        scale: Scale::Standard,
        ..Preprocess::default()
    }
}

#[test]
fn every_family_learns_a_binary_task() {
    // Peers on this split family: AUC 0.987-0.992 (shared/data/README.md).
    let keep = Preprocess {
        impute: Impute::Keep,
        ..Preprocess::default()
    };
    assert!(measure("breast_cancer_wisconsin", &keep, &gbm(), Metric::RocAuc) > 0.97);
    let forest = Learner::Gbm(GbmParams {
        boosting: Boosting::Forest,
        trees: 200,
        num_leaves: 64,
        min_child_samples: 2,
        feature_fraction: 0.5,
        bagging_fraction: 0.632,
        ..GbmParams::default()
    });
    assert!(measure("breast_cancer_wisconsin", &keep, &forest, Metric::RocAuc) > 0.97);
    let linear = Learner::Linear(LinearParams {
        alpha: 0.1,
        max_iterations: 300,
    });
    assert!(measure("breast_cancer_wisconsin", &scaled(), &linear, Metric::RocAuc) > 0.98);
    let knn = Learner::Knn(KnnParams {
        k: 15,
        distance_weighted: true,
    });
    assert!(measure("breast_cancer_wisconsin", &scaled(), &knn, Metric::RocAuc) > 0.95);
}

#[test]
fn categorical_columns_multiclass_and_regression() {
    // credit_g: 13 string columns; AUC of the peers 0.78-0.80.
    let target = Preprocess {
        encode: Encode::Target,
        ..Preprocess::default()
    };
    assert!(measure("credit_g", &target, &gbm(), Metric::RocAuc) > 0.70);
    assert!(measure("credit_g", &scaled(), &Learner::Linear(LinearParams::default()), Metric::RocAuc) > 0.72);
    // vehicle: 4 classes; accuracy of the peers 0.72-0.79.
    assert!(measure("vehicle", &Preprocess::default(), &gbm(), Metric::Accuracy) > 0.65);
    assert!(
        measure(
            "vehicle",
            &scaled(),
            &Learner::Linear(LinearParams {
                alpha: 0.01,
                max_iterations: 500
            }),
            Metric::LogLoss
        ) < 0.8
    );
    // concrete: RMSE of the peers 3.9-4.6 (ridge 10.5).
    assert!(measure("concrete", &Preprocess::default(), &gbm(), Metric::Rmse) < 6.0);
    assert!(
        measure(
            "concrete",
            &scaled(),
            &Learner::Linear(LinearParams {
                alpha: 0.01,
                max_iterations: 1000
            }),
            Metric::R2
        ) > 0.55
    );
    // auto_mpg: missing horsepower, a high-cardinality name.
    assert!(measure("auto_mpg", &Preprocess::default(), &gbm(), Metric::Rmse) < 3.5);
}

#[test]
fn pipelines_validate_out_of_fold_and_the_ensemble_is_at_least_the_best_of_them() {
    use autoagent_evaluator::tabular::ensemble;
    use autoagent_evaluator::tabular::split::folds;
    use autoagent_evaluator::tabular::{Pipeline, Validation};
    let dir = shared().join("tabular");
    let frame = read_csv(&dir.join("diabetes_pima.csv"), &ReadOptions::default()).unwrap();
    let data = TabularData::from_frame(&frame, "target", None).unwrap();
    let f = folds(&data.target.values, Validation::Cv { k: 5 }, 0).unwrap();
    let pipelines = [
        Pipeline {
            preprocess: Preprocess {
                impute: Impute::Keep,
                ..Preprocess::default()
            },
            learner: gbm(),
        },
        Pipeline {
            preprocess: scaled(),
            learner: Learner::Linear(LinearParams::default()),
        },
        Pipeline {
            preprocess: scaled(),
            learner: Learner::Knn(KnnParams {
                k: 25,
                distance_weighted: false,
            }),
        },
    ];
    let validated: Vec<_> = pipelines.iter().map(|p| p.validate(&data, &f, Metric::RocAuc, 1, 0).unwrap()).collect();
    for v in &validated {
        assert_eq!(v.fold_scores.len(), 5);
        assert!(v.oof.iter().all(|p| p.is_finite()), "every row is predicted once");
        assert!(v.score > 0.75, "{}", v.score);
    }
    // Boosting stopped early on each fold's validation rows.
    assert!(validated[0].rounds.iter().all(|t| (1..=100).contains(t)), "{:?}", validated[0].rounds);
    // A refit on every row grows the trees early stopping kept, by the rows the folds held out.
    let mean = validated[0].rounds.iter().sum::<usize>() as f64 / 5.0;
    assert_eq!(validated[0].refit_rounds(5), Some((mean * 1.25).round() as usize));
    assert_eq!(validated[1].refit_rounds(5), None);
    assert!(matches!(pipelines[0].with_rounds(Some(7)).learner, Learner::Gbm(ref g) if g.trees == 7));
    let rows: Vec<usize> = (0..data.len()).collect();
    let oofs: Vec<&[f64]> = validated.iter().map(|v| v.oof.as_slice()).collect();
    let e = ensemble::select(&oofs, &data.target.values, &rows, 2, Metric::RocAuc).unwrap();
    let best = validated.iter().map(|v| v.score).fold(0.0, f64::max);
    eprintln!(
        "diabetes 5-fold AUC: {:?}, ensemble {:.4} {:?}",
        validated.iter().map(|v| v.score).collect::<Vec<_>>(),
        e.score,
        e.weights
    );
    assert!(e.score >= best);
    // The refit pipeline predicts rows of a file read again.
    let fitted = pipelines[1].fit(&data, &rows, 1, 0).unwrap();
    let again = TabularData::from_frame(&read_csv(&dir.join("diabetes_pima.csv"), &ReadOptions::default()).unwrap(), "target", None).unwrap();
    let p = fitted.predict(&again.features, &[0, 1, 2], 1).unwrap();
    assert_eq!(p.len(), 6);
    assert!((p[0] + p[1] - 1.0).abs() < 1e-9);
}

fn mlp(epochs: usize) -> Learner {
    use autoagent_evaluator::tabular::learn::mlp::{Activation, MlpParams};
    Learner::Mlp(MlpParams {
        layers: 2,
        width: 64,
        activation: Activation::Relu,
        dropout: 0.1,
        batch_norm: true,
        learning_rate: 2e-3,
        weight_decay: 1e-4,
        batch_size: 64,
        epochs,
    })
}

#[test]
fn an_mlp_learns_each_problem_stops_early_and_predicts_from_its_saved_weights() {
    use autoagent_evaluator::tabular::split::folds;
    use autoagent_evaluator::tabular::{Pipeline, Validation};
    // Peers: breast cancer AUC 0.987-0.992, vehicle accuracy 0.72-0.79, concrete RMSE 3.9-4.6.
    assert!(measure("breast_cancer_wisconsin", &scaled(), &mlp(40), Metric::RocAuc) > 0.97);
    assert!(measure("vehicle", &scaled(), &mlp(60), Metric::Accuracy) > 0.75);
    assert!(measure("concrete", &scaled(), &mlp(150), Metric::Rmse) < 5.5);
    // Out of fold, the epochs are those of the best validation loss, and a refit trains for
    // their mean grown by the rows the folds held out.
    let dir = shared().join("tabular");
    let data = TabularData::from_frame(&read_csv(&dir.join("diabetes_pima.csv"), &ReadOptions::default()).unwrap(), "target", None).unwrap();
    let f = folds(&data.target.values, Validation::Cv { k: 3 }, 0).unwrap();
    let p = Pipeline {
        preprocess: scaled(),
        learner: mlp(300),
    };
    let v = p.validate(&data, &f, Metric::RocAuc, 1, 0).unwrap();
    assert!(v.score > 0.78, "{}", v.score);
    // A seeded training is repeatable (dropout's masks included): a resumed run depends on it.
    assert_eq!(p.validate(&data, &f, Metric::RocAuc, 1, 0).unwrap().oof, v.oof);
    assert!(
        v.rounds.len() == 3 && v.rounds.iter().all(|&e| (1..300).contains(&e)),
        "stopped early: {:?}",
        v.rounds
    );
    let refit = p.with_rounds(v.refit_rounds(3));
    assert!(matches!(refit.learner, Learner::Mlp(ref m) if m.epochs == v.refit_rounds(3).unwrap()));
    // The fitted network survives its serialisation: same predictions from the saved weights.
    let rows: Vec<usize> = (0..data.len()).collect();
    let fitted = refit.fit(&data, &rows, 1, 0).unwrap();
    let back: autoagent_evaluator::tabular::FittedPipeline = serde_json::from_str(&serde_json::to_string(&fitted).unwrap()).unwrap();
    let (a, b) = (
        fitted.predict(&data.features, &rows, 1).unwrap(),
        back.predict(&data.features, &rows, 2).unwrap(),
    );
    assert_eq!(a.len(), 2 * rows.len());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    assert!(a.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-5));
}
