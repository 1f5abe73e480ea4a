//! Search spaces as data (after ConfigSpace and Optuna's distributions): a [`Space`] is an
//! ordered list of named, typed parameters — categorical, ordinal, integer and float (optionally
//! log-scaled) and NB201 cells — each with a default, a meaning and an optional condition; a
//! [`Config`] maps parameter names to [`Value`]s and validates against its space with errors
//! naming the parameter ([`Error`]).
//!
//! Every strategy's operations are here, deterministic given the generator: `sample`, `mutate`,
//! `crossover`, `neighbours`, `encode`; so are the user's narrowing (`Space::narrow`), the
//! prompt's rendering (`Space::describe`, `Space::table`), the JSON Schema of an LLM reply
//! (`Space::json_schema`) and the reading of its candidates (`Space::parse_candidate`).
//! [`vision_space`] is the default space of an image-classification task, [`VisionConfig`] its
//! typed view.

mod config;
mod describe;
mod encode;
mod error;
mod grid;
mod narrow;
mod neighbours;
mod numeric;
mod param;
mod random;
mod schema;
mod space;
mod tabular;
mod value;
mod vision;

pub use config::Config;
pub use describe::{ParamInfo, CELL_FORMAT};
pub use error::Error;
pub use param::{Condition, Kind, Param};
pub use schema::{cell_pattern, REASON_MAX_CHARS};
pub use space::Space;
pub use tabular::{pipeline, tabular_space, FAMILIES};
pub use value::Value;
pub use vision::{cell_space, vision_space, Augment, VisionConfig, MEDIAN_CELL};

#[cfg(test)]
mod tests;
