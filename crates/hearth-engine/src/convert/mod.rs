//! `hearth convert`: moving a model between the formats hearth reads, without a round trip through Python.
//!
//! Every conversion reads its source through the same loaders the engine uses (so a file hearth cannot run is
//! never silently converted), streams tensors one at a time (a model never sits in memory twice), and writes
//! into a staging path that is renamed over the target only when everything is written ([`output`]).
//!
//! - [`output`]: the staging file or folder, `--force`, and the cleanup of a failed conversion.

pub mod output;
pub mod to_gguf;

/// Reports progress of a long step: `(done, total)` in the step's own unit (bytes or tensors). The CLI draws a
/// progress bar from it; tests pass a no-op.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);
