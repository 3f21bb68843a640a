//! Chat templates: the Jinja programs models ship (in `tokenizer_config.json`, `chat_template.jinja` or GGUF's
//! `tokenizer.chat_template`) that turn a list of messages into the exact prompt text the model was trained on.
//!
//! They are written for Python's jinja2 as Hugging Face transformers sets it up, so the environment here
//! mirrors that one: `trim_blocks` and `lstrip_blocks` on, loop controls, Python string/dict methods
//! (`.strip()`, `.startswith()`, `.items()`, ...), a `raise_exception(msg)` function that templates use to
//! reject malformed conversations, `strftime_now(fmt)`, and a `tojson` filter that formats like Python's
//! `json.dumps` (`", "` and `": "` separators, non-ASCII kept) rather than minijinja's compact HTML-safe JSON,
//! because the model saw the Python formatting in training.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One message of a conversation, as the OpenAI and Anthropic APIs and the templates all know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant", "tool", ...; the template decides what it accepts.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What a template sees besides the messages.
#[derive(Clone, Debug, Default)]
pub struct TemplateContext<'a> {
    pub bos_token: Option<&'a str>,
    pub eos_token: Option<&'a str>,
    /// End the prompt with the header of an assistant turn, so that the model writes the reply.
    pub add_generation_prompt: bool,
    /// Tool definitions (a JSON array), passed as `tools`; absent tools are `none`, as transformers passes them.
    pub tools: Option<&'a serde_json::Value>,
}

const NAME: &str = "chat_template";

/// A compiled chat template. Compiling once per model keeps rendering per request cheap.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with minijinja's location.
    pub fn new(source: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| {
                Error::Other(format!("chat template does not compile: {}", describe(&e)))
            })?;
        Ok(ChatTemplate { env })
    }

    /// Renders the prompt for `messages`. A template that rejects the conversation (`raise_exception`) gives
    /// `Error::BadRequest` with the template's message: the request, not the server, is wrong.
    pub fn render(&self, messages: &[ChatMessage], ctx: &TemplateContext<'_>) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::Other(format!("chat template: {}", describe(&e))))?;
        let mut vars = std::collections::BTreeMap::<&str, Value>::new();
        vars.insert("messages", Value::from_serialize(messages));
        vars.insert(
            "add_generation_prompt",
            Value::from(ctx.add_generation_prompt),
        );
        vars.insert(
            "tools",
            ctx.tools.map_or(Value::from(()), Value::from_serialize),
        );
        vars.insert("documents", Value::from(()));
        if let Some(b) = ctx.bos_token {
            vars.insert("bos_token", Value::from(b));
        }
        if let Some(e) = ctx.eos_token {
            vars.insert("eos_token", Value::from(e));
        }
        tmpl.render(Value::from_serialize(&vars))
            .map_err(|e| Error::BadRequest(format!("chat template: {}", describe(&e))))
    }
}

/// The error's own message (what `raise_exception` was given), with minijinja's wording as a fallback.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) if e.kind() == ErrorKind::InvalidOperation => d.to_string(),
        _ => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                let _ = write!(s, ": {inner}");
                src = inner.source();
            }
            s
        }
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Python's `datetime.now().strftime(fmt)`, which Llama 3.x templates use for the current date.
fn strftime_now(fmt: String) -> std::result::Result<Value, minijinja::Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(&fmt).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format {fmt:?}"),
        ));
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "strftime_now: cannot format")
    })?;
    Ok(Value::from(out))
}

/// `tojson(indent=None, separators=None, sort_keys=False)` with Python's `json.dumps` output.
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent.or(kwargs.get::<Option<Value>>("indent")?) {
        Some(v) if v.is_integer() => Some(" ".repeat(v.as_i64().unwrap_or(0).max(0) as usize)),
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_string()),
        _ => None,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _ = kwargs.get::<Option<bool>>("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([a, b]) => (a.clone(), b.clone()),
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let dumper = PyJson {
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    dumper.write(&mut out, value, 0)?;
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl PyJson {
    fn newline(&self, out: &mut String, level: usize) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn write(
        &self,
        out: &mut String,
        v: &Value,
        level: usize,
    ) -> std::result::Result<(), minijinja::Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if v.is_integer() {
                    out.push_str(&v.to_string());
                } else {
                    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                    out.push_str(&py_float(f));
                }
            }
            ValueKind::String => py_string(out, v.as_str().unwrap_or("")),
            ValueKind::Bytes => {
                py_string(out, &String::from_utf8_lossy(v.as_bytes().unwrap_or(&[])))
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container(out, level, '[', ']', items.len(), |out, i| {
                    self.write(out, &items[i], level + 1)
                })?;
            }
            ValueKind::Map | ValueKind::Plain => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.container(out, level, '{', '}', keys.len(), |out, i| {
                    let k = &keys[i];
                    match k.as_str() {
                        Some(s) => py_string(out, s),
                        None => py_string(out, &k.to_string()),
                    }
                    out.push_str(&self.key_sep);
                    self.write(out, &v.get_item(k)?, level + 1)
                })?;
            }
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: cannot serialize a {} value", v.kind()),
                ))
            }
        }
        Ok(())
    }

    fn container(
        &self,
        out: &mut String,
        level: usize,
        open: char,
        close: char,
        n: usize,
        mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), minijinja::Error>,
    ) -> std::result::Result<(), minijinja::Error> {
        out.push(open);
        if n == 0 {
            out.push(close);
            return Ok(());
        }
        for i in 0..n {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            self.newline(out, level + 1);
            item(out, i)?;
        }
        self.newline(out, level);
        out.push(close);
        Ok(())
    }
}

fn py_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as `json.dumps` writes it: shortest round-trip digits, exponent form outside
/// [1e-4, 1e16), `NaN`/`Infinity` for the non-finite.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mant}e{sign}{digits:0>2}");
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
        assert_eq!(py_float(-2.25), "-2.25");
    }

    #[test]
    fn tojson_matches_json_dumps() {
        let mut env = Environment::new();
        env.add_filter("tojson", tojson);
        let x: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, 2.5, "é\n"], "a": {"k": null, "t": true}, "e": []}"#)
                .unwrap();
        let out = env
            .render_str(
                "{{ x | tojson }}",
                minijinja::context! { x => Value::from_serialize(&x) },
            )
            .unwrap();
        assert_eq!(
            out,
            r#"{"b": [1, 2.5, "é\n"], "a": {"k": null, "t": true}, "e": []}"#
        );
        let out = env
            .render_str(
                "{{ x | tojson(indent=2) }}",
                minijinja::context! { x => Value::from_serialize(&x) },
            )
            .unwrap();
        assert_eq!(
            out,
            "{\n  \"b\": [\n    1,\n    2.5,\n    \"é\\n\"\n  ],\n  \"a\": {\n    \"k\": null,\n    \"t\": true\n  },\n  \"e\": []\n}"
        );
    }
}
