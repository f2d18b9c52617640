//! What a run produces: the result model, and its renderings (terminal table, `.hgrm` files, JSON, plots).

pub mod hgrm;
pub mod model;
pub mod plot;
pub mod table;
pub mod write;

pub use model::{Report, SystemResult, SystemRun};
