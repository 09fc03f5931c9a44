pub mod hash;
pub mod plan;
pub mod snapshot;
pub mod validate;
