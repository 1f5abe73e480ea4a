//! Tabular tasks: a user's CSV with a target column.
//!
//! - [`read`]: the CSV into a [`Frame`] of numeric and categorical columns, missing tokens;
//! - [`dataset`]: the target (its [`Problem`], inferred by a documented rule) and the feature
//!   columns with their kinds, less identifiers, free text, empty and constant columns;
//! - [`metrics`]: ROC-AUC, log-loss, accuracy, RMSE, R², computed one way for every tool;
//! - [`split`]: fixed test splits, stratified k-fold cross-validation and hold-outs;
//! - [`preprocess`]: imputation, indicators, categorical encodings, scaling, selection;
//! - [`learn`]: the model families (LightGBM trees and forests, linear models, k-NN);
//! - [`schema`]: the columns a model was trained on, and a later file taken the same way;
//! - [`profile`]: the table as the LLM sees it (kinds, missing shares, the target);
//! - [`pipeline`]: preprocessing and a learner, validated out of fold and fitted;
//! - [`ensemble`]: greedy ensemble selection over the pipelines' out-of-fold predictions;
//! - [`cheap`]: the cheap signals of a pipeline: an MLP's zero-cost proxies, lower fidelities.

pub mod cheap;
pub mod dataset;
pub mod ensemble;
pub mod error;
pub mod frame;
pub mod learn;
pub mod matrix;
pub mod metrics;
pub mod pipeline;
pub mod preprocess;
pub mod problem;
pub mod profile;
pub mod read;
pub mod schema;
pub mod split;

pub use dataset::{Dropped, Feature, TabularData, Target, TargetValues};
pub use error::TabularError;
pub use frame::{Column, ColumnData, FeatureKind, Frame};
pub use matrix::Matrix;
pub use metrics::{Metric, Truth};
pub use pipeline::{FittedPipeline, Pipeline, Validated};
pub use preprocess::{Encode, Impute, Preprocess, Preprocessor, Scale};
pub use problem::Problem;
pub use read::{read_csv, ReadOptions};
pub use schema::{ColumnSchema, Schema, Taken, TargetSchema};
pub use split::{Fold, SplitFile, Validation};
