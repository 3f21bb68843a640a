//! Text to token ids and back, for both model formats hearth reads, plus chat templates.
//!
//! - A Hugging Face folder brings a `tokenizer.json`, which the `tokenizers` crate runs as transformers would.
//! - A GGUF file embeds its vocabulary as metadata; [`vocab`] rebuilds a tokenizer from it that reproduces
//!   llama.cpp's (SentencePiece score merges or regex pre-tokenization plus byte-level BPE). It is separate
//!   from the `tokenizers` crate because exact agreement with llama.cpp is the goal for these files, decoding
//!   needs raw bytes for streaming, and a 262k-token vocabulary must load in milliseconds.
//!
//! Both sit behind one [`Tokenizer`] type, so the engine never asks which kind it has. [`Detokenizer`] turns a
//! stream of generated ids into text without ever emitting half a UTF-8 character; [`ChatTemplate`] renders
//! conversations the way transformers does.

pub(crate) mod bpe;
pub mod chat_template;
mod detok;
mod hf;
mod spm;
#[cfg(test)]
mod tests;
mod text_table;
mod vocab;

use std::path::Path;
use std::sync::OnceLock;

pub use chat_template::{ChatMessage, ChatTemplate, TemplateContext};
pub use detok::Detokenizer;

use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use vocab::GgufVocab;

enum Inner {
    Hf {
        tok: Box<tokenizers::Tokenizer>,
        /// The tokenizer.json post-processor already puts BOS first when asked for special tokens.
        post_adds_bos: bool,
    },
    Gguf(Box<GgufVocab>),
}

/// A model's tokenizer with the settings that go with it: BOS/EOS ids, whether encoding adds BOS, the special
/// token strings and the chat template.
///
/// BOS rule, the same for both formats: `encode(text, true)` starts with exactly one BOS when the model wants
/// one and never two. For `tokenizer.json` the post-processor is trusted as transformers trusts it, and
/// `add_bos_token` in tokenizer_config.json overrides it either way (adding or removing the leading BOS); for
/// GGUF, `tokenizer.ggml.add_bos_token` decides, defaulting as llama.cpp does. If the text itself begins with
/// the BOS string (a chat template that writes `{{ bos_token }}`), no second BOS is added.
pub struct Tokenizer {
    inner: Inner,
    name: String,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    special_tokens: Vec<String>,
    chat_template: Option<String>,
    compiled_template: OnceLock<std::result::Result<ChatTemplate, String>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn tk_err(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("tokenizer of {name}: {e}"))
}

impl Tokenizer {
    /// Loads the tokenizer of a Hugging Face model folder: `tokenizer.json` plus the settings in
    /// `tokenizer_config.json`, `chat_template.jinja`/`.json`, `generation_config.json` and `config.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let tj = dir.join("tokenizer.json");
        if !tj.exists() {
            return Err(Error::unsupported(
                dir,
                "no tokenizer.json (hearth does not read slow-tokenizer files such as tokenizer.model alone)",
            ));
        }
        let tok =
            tokenizers::Tokenizer::from_file(&tj).map_err(|e| Error::format(&tj, e.to_string()))?;
        let settings = hf::read_settings(dir)?;

        let bos_id = settings
            .bos_token
            .as_deref()
            .and_then(|t| tok.token_to_id(t))
            .or(settings.bos_id);
        let bos_token = settings
            .bos_token
            .clone()
            .or_else(|| bos_id.and_then(|id| tok.id_to_token(id)));

        let mut eos_ids = settings.eos_ids.clone();
        if let Some(id) = settings
            .eos_token
            .as_deref()
            .and_then(|t| tok.token_to_id(t))
        {
            eos_ids.push(id);
        }
        let eos_token = settings
            .eos_token
            .clone()
            .or_else(|| eos_ids.first().and_then(|&id| tok.id_to_token(id)));

        let mut added: Vec<(u32, String)> = tok
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        added.sort();
        // Chat tokens that end a turn stop generation even where generation_config forgot them.
        for (id, text) in &added {
            if END_OF_TURN.contains(&text.as_str()) {
                eos_ids.push(*id);
            }
        }
        dedup(&mut eos_ids);

        let post_adds_bos = match bos_id {
            Some(bos) => {
                let with = tok.encode("a", true).map_err(|e| tk_err(&name, e))?;
                let without = tok.encode("a", false).map_err(|e| tk_err(&name, e))?;
                with.get_ids().first() == Some(&bos)
                    && with.get_ids().len() > without.get_ids().len()
            }
            None => false,
        };
        let add_bos = bos_id.is_some() && settings.add_bos_token.unwrap_or(post_adds_bos);

        Ok(Tokenizer {
            inner: Inner::Hf {
                tok: Box::new(tok),
                post_adds_bos,
            },
            name,
            bos_id,
            eos_ids,
            add_bos,
            bos_token,
            eos_token,
            special_tokens: added.into_iter().map(|(_, t)| t).collect(),
            chat_template: settings.chat_template,
            compiled_template: OnceLock::new(),
        })
    }

    /// Builds the tokenizer embedded in a GGUF file (`tokenizer.ggml.*` keys and `tokenizer.chat_template`).
    pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer> {
        let v = GgufVocab::from_gguf(g)?;
        let name = g
            .get_str("general.name")
            .map(str::to_string)
            .unwrap_or_else(|| {
                g.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let text = |id: Option<u32>| id.and_then(|i| v.token_text(i)).map(str::to_string);
        Ok(Tokenizer {
            name,
            bos_id: v.bos,
            eos_ids: v.eog.clone(),
            add_bos: v.add_bos,
            bos_token: text(v.bos),
            eos_token: text(v.eos),
            special_tokens: v.special_token_texts(),
            chat_template: g.get_str("tokenizer.chat_template").map(str::to_string),
            compiled_template: OnceLock::new(),
            inner: Inner::Gguf(Box::new(v)),
        })
    }

    /// Token ids for `text`. Special and added tokens written in the text (`<|im_start|>`) become their ids.
    /// `add_special` adds BOS (and EOS where the model asks) by the model's settings; see the type's BOS rule.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Gguf(v) => Ok(v.encode(text, add_special)),
            Inner::Hf { tok, post_adds_bos } => {
                let enc = tok
                    .encode(text, add_special)
                    .map_err(|e| tk_err(&self.name, e))?;
                let mut ids = enc.get_ids().to_vec();
                if let (true, Some(bos)) = (add_special, self.bos_id) {
                    if self.add_bos && !post_adds_bos && ids.first() != Some(&bos) {
                        ids.insert(0, bos);
                    } else if !self.add_bos && *post_adds_bos && ids.first() == Some(&bos) {
                        ids.remove(0);
                    }
                    if self.add_bos && ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
                        ids.remove(0);
                    }
                }
                Ok(ids)
            }
        }
    }

    /// The text of `ids`, skipping control tokens (BOS, EOS, turn markers). Invalid UTF-8 (a character cut by
    /// the end of `ids`) shows as U+FFFD; stream with [`Detokenizer`] to avoid that.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, true)
    }

    /// Like [`Tokenizer::decode`], but with `skip_special == false` control tokens are written out as text.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner {
            Inner::Gguf(v) => {
                Ok(String::from_utf8_lossy(&v.decode_bytes(ids, !skip_special)).into_owned())
            }
            Inner::Hf { tok, .. } => tok
                .decode(ids, skip_special)
                .map_err(|e| tk_err(&self.name, e)),
        }
    }

    /// Number of token ids, added tokens included (the size of the embedding table at most).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Gguf(v) => v.len(),
            Inner::Hf { tok, .. } => tok.get_vocab_size(true),
        }
    }

    /// The BOS id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether `encode(text, true)` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Every id that ends a generation: EOS first, then end-of-turn tokens (generation_config lists, or known
    /// chat markers such as `<|im_end|>` and `<end_of_turn>`).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether generating `id` ends the generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// The vocabulary string of `id` (`"Ġthe"`, `"▁the"`, `"<|im_end|>"`), for debugging and logit-bias maps.
    pub fn token_str(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Gguf(v) => v.token_text(id).map(str::to_string),
            Inner::Hf { tok, .. } => tok.id_to_token(id),
        }
    }

    /// The id of a vocabulary string, the inverse of [`Tokenizer::token_str`].
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(v) => v.token_to_id(token),
            Inner::Hf { tok, .. } => tok.token_to_id(token),
        }
    }

    /// The BOS string that templates get as `bos_token`.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS string that templates get as `eos_token`.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Strings that `encode` turns into single special tokens wherever they appear.
    pub fn special_tokens(&self) -> &[String] {
        &self.special_tokens
    }

    /// The model's chat template source, if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// A short name for messages: the folder name or GGUF `general.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders `messages` with the model's chat template, as transformers' `apply_chat_template(...,
    /// tokenize=False)` does. A model without a template is a bad request: only raw completion works for it.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let Some(source) = self.chat_template.as_deref() else {
            return Err(Error::BadRequest(format!(
                "model {} has no chat template; use raw completion (--raw)",
                self.name
            )));
        };
        let compiled = self
            .compiled_template
            .get_or_init(|| ChatTemplate::new(source).map_err(|e| e.to_string()));
        let template = compiled
            .as_ref()
            .map_err(|e| Error::Other(format!("model {}: {e}", self.name)))?;
        template.render(
            messages,
            &TemplateContext {
                bos_token: self.bos_token.as_deref(),
                eos_token: self.eos_token.as_deref(),
                add_generation_prompt,
                tools,
            },
        )
    }
}

/// Special tokens that close a chat turn in common templates.
const END_OF_TURN: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eom_id|>",
];

fn dedup(ids: &mut Vec<u32>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
}
