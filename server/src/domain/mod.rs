//! Pure rules of the product: geodesy and datums, roster patterns and gaps, compliance
//! marks. No axum, no database: everything here is tested on its own.

pub mod alerts;
pub mod compliance;
pub mod coverage;
pub mod datum;
pub mod geodesy;
pub mod geometry;
pub mod plausibility;
pub mod roster;
