//! Reading the JSON files of a Hugging Face model folder that say how to use its tokenizer: which strings are
//! BOS/EOS, whether BOS is added, the chat template, and which ids end a generation.
//!
//! Each setting can live in several files, which transformers consults in a fixed order; the same order is
//! followed here: a dedicated `chat_template.jinja`/`chat_template.json` beats `tokenizer_config.json`, and
//! `generation_config.json` decides the end-of-generation ids, with `config.json` as the last resort.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// What the folder's JSON files say, before ids are resolved against the vocabulary.
#[derive(Debug, Default)]
pub(crate) struct HfSettings {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub add_bos_token: Option<bool>,
    pub chat_template: Option<String>,
    /// From generation_config.json, else config.json.
    pub eos_ids: Vec<u32>,
    pub bos_id: Option<u32>,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// A special token as tokenizer_config.json writes it: a plain string or an `AddedToken` object.
fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A chat template as a string, or a list of named templates of which "default" is the chat one.
fn template_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter().find_map(|t| {
                    (t.get("name").and_then(Value::as_str) == Some(name))
                        .then(|| t.get("template").and_then(Value::as_str))
                        .flatten()
                })
            };
            named("default")
                .or_else(|| {
                    list.first()
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str)
                })
                .map(str::to_string)
        }
        _ => None,
    }
}

/// Token ids as config files write them: one integer or a list.
fn id_list(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads tokenizer_config.json, chat_template.{jinja,json}, generation_config.json and config.json of `dir`.
pub(crate) fn read_settings(dir: &Path) -> Result<HfSettings> {
    let mut s = HfSettings::default();
    if let Some(cfg) = read_json(&dir.join("tokenizer_config.json"))? {
        s.bos_token = cfg.get("bos_token").and_then(token_string);
        s.eos_token = cfg.get("eos_token").and_then(token_string);
        s.add_bos_token = cfg.get("add_bos_token").and_then(Value::as_bool);
        s.chat_template = cfg.get("chat_template").and_then(template_value);
    }
    let jinja = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&jinja) {
        Ok(t) => s.chat_template = Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(v) = read_json(&dir.join("chat_template.json"))? {
                if let Some(t) = v.get("chat_template").and_then(template_value) {
                    s.chat_template = Some(t);
                }
            }
        }
        Err(e) => return Err(Error::io(&jinja, e)),
    }

    let config = read_json(&dir.join("config.json"))?;
    // Multimodal configs (Gemma 3) keep the language model's ids under text_config.
    let config_get = |key: &str| {
        config.as_ref().and_then(|c| {
            c.get(key)
                .filter(|v| !v.is_null())
                .or_else(|| c.get("text_config").and_then(|t| t.get(key)))
                .cloned()
        })
    };
    let generation = read_json(&dir.join("generation_config.json"))?;
    let gen_get = |key: &str| {
        generation
            .as_ref()
            .and_then(|g| g.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    };

    s.eos_ids = id_list(gen_get("eos_token_id").as_ref());
    if s.eos_ids.is_empty() {
        s.eos_ids = id_list(config_get("eos_token_id").as_ref());
    }
    s.bos_id = id_list(gen_get("bos_token_id").as_ref())
        .first()
        .copied()
        .or_else(|| {
            id_list(config_get("bos_token_id").as_ref())
                .first()
                .copied()
        });
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_strings_and_templates() {
        assert_eq!(token_string(&json!("<s>")).as_deref(), Some("<s>"));
        assert_eq!(
            token_string(&json!({"content": "</s>", "lstrip": false})).as_deref(),
            Some("</s>")
        );
        assert_eq!(token_string(&json!(null)), None);
        let list =
            json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]);
        assert_eq!(template_value(&list).as_deref(), Some("D"));
        assert_eq!(id_list(Some(&json!([1, 2]))), vec![1, 2]);
        assert_eq!(id_list(Some(&json!(7))), vec![7]);
    }
}
