//! Plausibility rules for GPS fixes.
