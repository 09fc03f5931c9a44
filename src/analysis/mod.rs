//! Analysis: AnalysisRuns measured by providers (web, job, prometheus) and
//! judged by expr conditions, as upstream. `run` is the pure state machine.

pub mod args;
pub mod condition;
pub mod controller;
pub mod plan;
pub mod providers;
pub mod run;
pub mod template;
