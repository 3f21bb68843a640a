//! Tokenizers (being built).
