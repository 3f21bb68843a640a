//! Streaming detokenization: generated ids arrive one at a time and the client should see text as soon as it
//! is final, but a token can end in the middle of a UTF-8 character (byte-fallback and byte-level BPE
//! tokens), and a token's text can depend on its neighbours (SentencePiece decoders drop the leading space of
//! a sequence).
//!
//! The approach is the one Hugging Face's streamers use: decode a short window of recent ids twice, with and
//! without the newest, and emit the difference once it no longer ends in U+FFFD (an incomplete character).
//! Both decodes see the same leading context, so context-dependent spacing cancels out.

use std::ops::Deref;

use super::Tokenizer;
use crate::error::Result;

/// Incremental decoder over any handle to a [`Tokenizer`] (`&Tokenizer`, `Arc<Tokenizer>`, ...).
pub struct Detokenizer<T: Deref<Target = Tokenizer>> {
    tokenizer: T,
    /// Ids from the start of the current window; earlier ones are already emitted and dropped.
    ids: Vec<u32>,
    /// `ids[..read]` has been emitted as text; `ids[read..]` is pending.
    read: usize,
    skip_special: bool,
}

impl<T: Deref<Target = Tokenizer>> Detokenizer<T> {
    /// A detokenizer for a fresh generation; control tokens are not shown.
    pub fn new(tokenizer: T) -> Self {
        Detokenizer {
            tokenizer,
            ids: Vec::new(),
            read: 0,
            skip_special: true,
        }
    }

    /// Shows control tokens (`<|im_end|>`) as text too, for raw output modes.
    pub fn with_special_tokens(mut self) -> Self {
        self.skip_special = false;
        self
    }

    /// Adds one generated id and returns the text that became final with it (often empty, e.g. while a
    /// multi-byte character is still incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = self
            .tokenizer
            .decode_with(&self.ids[..self.read], self.skip_special)?;
        let full = self.tokenizer.decode_with(&self.ids, self.skip_special)?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = match full.get(prefix.len()..) {
            Some(tail) if full.starts_with(prefix.as_str()) => tail.to_string(),
            // The window decoded differently with the new id (rare decoder context effects): emit what is new
            // after the longest common prefix, on a character boundary.
            _ => {
                let common = full
                    .char_indices()
                    .zip(prefix.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, c), _)| i + c.len_utf8());
                full[common..].to_string()
            }
        };
        // Keep the last emitted id as context for the next window and drop the rest.
        let keep_from = self.ids.len() - 1;
        self.ids.drain(..keep_from);
        self.read = self.ids.len();
        Ok(new)
    }

    /// Returns whatever is still pending (an incomplete character comes out as U+FFFD) and resets the stream.
    pub fn flush(&mut self) -> Result<String> {
        let out = if self.read < self.ids.len() {
            let prefix = self
                .tokenizer
                .decode_with(&self.ids[..self.read], self.skip_special)?;
            let full = self.tokenizer.decode_with(&self.ids, self.skip_special)?;
            full.get(prefix.len()..).unwrap_or(&full).to_string()
        } else {
            String::new()
        };
        self.ids.clear();
        self.read = 0;
        Ok(out)
    }

    /// The tokenizer this stream decodes with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
