//! Compute backends. `cpu` runs everything today; a GPU backend implements the same operations.

pub mod cpu;
