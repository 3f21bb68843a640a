//! Sampling (being built).
