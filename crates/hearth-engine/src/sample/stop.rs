//! Stop strings over streamed text.
//!
//! Generation produces text a token at a time, and a stop string can span several tokens ("\n\nUser:" may come
//! as "\n", "\nUser", ":"). A streaming server must therefore never emit text that might turn out to be the
//! beginning of a stop string, yet must not delay anything else. [`StopMatcher`] holds back exactly the longest
//! tail of the text that is still a prefix of some stop string, and releases it as soon as it is decided.

/// What one [`StopMatcher::push`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text that is now safe to emit. Never contains any part of a matched stop string.
    pub text: String,
    /// The index (into the list given to [`StopMatcher::new`]) of the stop string that was hit, if any.
    /// Once set, generation should end; the matcher ignores further input.
    pub stop: Option<usize>,
}

/// Incremental stop-string matcher.
///
/// Semantics, identical however the text is split into pieces: generation stops at the stop string occurrence
/// that *ends* first in the text (that is the one a streaming decoder sees complete first); if several end at
/// the same byte, the one starting earliest (the longest) wins, then the one listed first. The output is the
/// text before that occurrence. Matching is on bytes of valid UTF-8, and text is only ever split at char
/// boundaries, so emitted pieces are always valid `str`. Empty stop strings are ignored; with no stop strings
/// every piece is passed through unchanged and nothing is held.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    /// The stop strings as given, so that the reported index refers to the caller's list.
    stops: Vec<String>,
    /// Indices of the non-empty stop strings, the only ones matched.
    active: Vec<usize>,
    /// Length in bytes of the longest stop string.
    max_len: usize,
    /// Text received but not yet emitted: always a proper prefix of some stop string.
    held: String,
    /// The stop that ended generation.
    stopped: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops` (any order; duplicates and empty strings are harmless).
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Self {
        let stops: Vec<String> = stops.iter().map(|s| s.as_ref().to_owned()).collect();
        let active: Vec<usize> = (0..stops.len()).filter(|&i| !stops[i].is_empty()).collect();
        let max_len = active.iter().map(|&i| stops[i].len()).max().unwrap_or(0);
        StopMatcher {
            held: String::with_capacity(max_len * 2),
            stops,
            active,
            max_len,
            stopped: None,
        }
    }

    /// The stop strings, as given.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// The index of the stop string that was hit, if generation has stopped.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Text currently held back because it could still begin a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Feeds the next piece of generated text; returns what can be emitted now and whether a stop was hit.
    ///
    /// After a stop has been hit, further pieces are dropped and an empty output is returned.
    pub fn push(&mut self, piece: &str) -> StopOutput {
        if self.stopped.is_some() {
            return StopOutput::default();
        }
        if self.active.is_empty() {
            return StopOutput {
                text: piece.to_owned(),
                stop: None,
            };
        }
        self.held.push_str(piece);

        // Any occurrence lies entirely inside `held`: text emitted earlier never ended with a stop prefix.
        // For one stop string its first occurrence is also the one ending first.
        let mut best: Option<(usize, usize, usize)> = None; // (end, start, stop index)
        for &i in &self.active {
            let s = &self.stops[i];
            if let Some(start) = self.held.find(s.as_str()) {
                let end = start + s.len();
                let better = match best {
                    None => true,
                    Some((be, bs, _)) => end < be || (end == be && start < bs),
                };
                if better {
                    best = Some((end, start, i));
                }
            }
        }
        if let Some((_, start, i)) = best {
            self.held.truncate(start);
            self.stopped = Some(i);
            return StopOutput {
                text: std::mem::take(&mut self.held),
                stop: Some(i),
            };
        }

        let keep = self.holdback_start();
        let text = self.held[..keep].to_owned();
        self.held.drain(..keep);
        StopOutput { text, stop: None }
    }

    /// Ends generation without a stop: returns the held-back text, which turned out not to be a stop string.
    /// Returns an empty string if a stop was hit.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The byte offset in `held` from which the text must be held: the start of the longest suffix that is a
    /// proper prefix of some stop string (`held.len()` if none).
    fn holdback_start(&self) -> usize {
        let len = self.held.len();
        let mut i = len.saturating_sub(self.max_len.saturating_sub(1));
        while i < len {
            if self.held.is_char_boundary(i) {
                let tail = &self.held[i..];
                if self.active.iter().any(|&s| self.stops[s].starts_with(tail)) {
                    return i;
                }
            }
            i += 1;
        }
        len
    }
}
