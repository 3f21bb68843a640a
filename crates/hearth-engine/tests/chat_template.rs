//! Chat templates render as transformers renders them. The templates in tests/fixtures/tokenizer/templates/ are
//! the models' own (SmolLM2-Instruct from its GGUF, Gemma 3 IT, Llama 3.2 Instruct, Qwen 2.5 Instruct); the
//! expected strings are written out by hand from the templates and were checked against transformers'
//! `render_jinja_template` (jinja2 3.1) with the same inputs.

use std::path::{Path, PathBuf};

use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::tokenizer::{ChatMessage, ChatTemplate, TemplateContext, Tokenizer};
use hearth_engine::Error;

fn template(name: &str) -> ChatTemplate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizer/templates")
        .join(name);
    let source =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ChatTemplate::new(&source).unwrap()
}

fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
    list.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect()
}

fn ctx<'a>(
    bos: &'a str,
    eos: &'a str,
    gen: bool,
    tools: Option<&'a serde_json::Value>,
) -> TemplateContext<'a> {
    TemplateContext {
        bos_token: Some(bos),
        eos_token: Some(eos),
        add_generation_prompt: gen,
        tools,
    }
}

fn weather_tool() -> serde_json::Value {
    serde_json::from_str(
        r#"[{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#,
    )
    .unwrap()
}

#[test]
fn smollm2_chatml() {
    let t = template("smollm2-instruct.jinja");
    let c = ctx("<|im_start|>", "<|im_end|>", true, None);
    let out = t
        .render(
            &msgs(&[
                ("user", "Hello!"),
                ("assistant", "Hi! How can I help?"),
                ("user", "What is 2+2?"),
            ]),
            &c,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHello!<|im_end|>\n\
         <|im_start|>assistant\nHi! How can I help?<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let c = ctx("<|im_start|>", "<|im_end|>", false, None);
    let out = t
        .render(
            &msgs(&[("system", "You are terse."), ("user", "Hello!")]),
            &c,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
    );
}

#[test]
fn gemma3_turns_and_role_alternation() {
    let t = template("gemma3-it.jinja");
    let c = ctx("<bos>", "<eos>", true, None);
    let out = t
        .render(
            &msgs(&[
                ("system", "Be brief."),
                ("user", " Hi "),
                ("assistant", "Hello!"),
                ("user", "Bye"),
            ]),
            &c,
        )
        .unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
         <start_of_turn>model\nHello!<end_of_turn>\n\
         <start_of_turn>user\nBye<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    match t.render(&msgs(&[("user", "a"), ("user", "b")]), &c) {
        Err(Error::BadRequest(m)) => {
            assert!(
                m.contains("Conversation roles must alternate user/assistant/user/assistant/..."),
                "{m}"
            )
        }
        other => panic!("expected the template's exception as BadRequest, got {other:?}"),
    }
}

#[test]
fn llama3_system_date_and_tools() {
    let t = template("llama3.2-instruct.jinja");
    let today = chrono::Local::now().format("%d %b %Y").to_string();
    let c = ctx("<|begin_of_text|>", "<|eot_id|>", true, None);
    let out = t
        .render(&msgs(&[("system", "You are a bot. "), ("user", "Hi")]), &c)
        .unwrap();
    assert_eq!(
        out,
        format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Cutting Knowledge Date: December 2023\nToday Date: {today}\n\n\
             You are a bot.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    );

    // Tools go into the first user message as JSON indented by four, the way json.dumps(indent=4) writes it.
    let tools = weather_tool();
    let c = ctx("<|begin_of_text|>", "<|eot_id|>", true, Some(&tools));
    let out = t
        .render(&msgs(&[("user", "Weather in Paris?")]), &c)
        .unwrap();
    let tool_json = "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \
                     \"description\": \"Get the weather\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \
                     \"properties\": {\n                \"city\": {\n                    \"type\": \"string\"\n                }\n            \
                     },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}";
    assert_eq!(
        out,
        format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: {today}\n\n<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\n\
             Given the following functions, please respond with a JSON for a function call with its proper \
             arguments that best answers the given prompt.\n\n\
             Respond in the format {{\"name\": function name, \"parameters\": dictionary of argument name and its \
             value}}.Do not use variables.\n\n{tool_json}\n\nWeather in Paris?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    );
}

#[test]
fn qwen25_with_tools_and_tool_results() {
    let t = template("qwen2.5-instruct.jinja");
    let tools = weather_tool();
    let c = ctx("", "<|im_end|>", true, Some(&tools));
    let out = t
        .render(&msgs(&[("user", "What's the weather in Paris?")]), &c)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n\
         # Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
         {\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \
         \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \
         \"required\": [\"city\"]}}}\n</tools>\n\n\
         For each function call, return a json object with function name and arguments within \
         <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \
         \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n\
         <|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    );

    // Without tools: the default system prompt; tool results are wrapped into a user turn.
    let c = ctx("", "<|im_end|>", false, None);
    let out = t
        .render(
            &msgs(&[
                ("user", "Hi"),
                ("assistant", "Checking."),
                ("tool", "22°C"),
                ("tool", "sunny"),
            ]),
            &c,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nChecking.<|im_end|>\n\
         <|im_start|>user\n<tool_response>\n22°C\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
    );
}

/// Python string and dict methods, loop controls, namespaces and whitespace control behave as in jinja2.
#[test]
fn python_compatible_features() {
    let src = "{%- set ns = namespace(n=0) -%}\n\
               {%- for m in messages -%}\n\
                   {%- if m.content.startswith('skip') %}{% continue %}{% endif -%}\n\
                   {%- if m.role == 'stop' %}{% break %}{% endif -%}\n\
                   {%- set ns.n = ns.n + 1 -%}\n\
                   [{{ m.content.strip().upper() }}|{{ m.content.split(',') | length }}]\n\
               {%- endfor -%}\n\
               {{ ns.n }}{% for k, v in {'a': 1, 'b': [1, 'x']}.items() %} {{ k }}={{ v | tojson }}{% endfor %}\n";
    let t = ChatTemplate::new(src).unwrap();
    let out = t
        .render(
            &msgs(&[
                ("user", "  a,b  "),
                ("user", "skip me"),
                ("user", "c"),
                ("stop", "x"),
                ("user", "d"),
            ]),
            &TemplateContext::default(),
        )
        .unwrap();
    assert_eq!(out, "[A,B|2][C|1]2 a=1 b=[1, \"x\"]");

    // trim_blocks + lstrip_blocks: block tags on their own lines leave no blank lines or indentation behind.
    let t = ChatTemplate::new("{% for m in messages %}\n    {% if m.role %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}")
        .unwrap();
    let out = t
        .render(
            &msgs(&[("user", "one"), ("user", "two")]),
            &TemplateContext::default(),
        )
        .unwrap();
    assert_eq!(out, "one\ntwo\n");

    // `tools` is none, not undefined, when no tools are given (templates test `tools is not none`).
    let t = ChatTemplate::new("{{ tools is none }}|{{ strftime_now('%Y') | length }}").unwrap();
    assert_eq!(
        t.render(&[], &TemplateContext::default()).unwrap(),
        "True|4"
    );

    assert!(ChatTemplate::new("{% if %}").is_err());
}

fn models_dir() -> PathBuf {
    match std::env::var_os("HEARTH_MODELS_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => panic!("set HEARTH_MODELS_DIR to the folder made by scripts/fetch_models.sh"),
    }
}

/// End to end with a real GGUF: the embedded template renders, its special tokens encode as single ids, and
/// a model without a template refuses chat with a message that points at raw completion.
#[test]
fn gguf_models_apply_their_templates() {
    let dir = models_dir();
    let g = GgufFile::open(&dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let prompt = tok
        .apply_chat_template(&msgs(&[("user", "Hi!")]), true, None)
        .unwrap();
    assert!(
        prompt.ends_with("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"),
        "{prompt}"
    );
    let ids = tok.encode(&prompt, true).unwrap();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(ids[0], im_start);
    assert_eq!(ids.iter().filter(|&&i| i == im_start).count(), 3);
    assert!(tok.is_eos(tok.token_id("<|im_end|>").unwrap()));

    let g = GgufFile::open(&dir.join("gemma-3-270m-q4_k_m.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    assert!(tok.chat_template().is_none());
    match tok.apply_chat_template(&msgs(&[("user", "Hi!")]), true, None) {
        Err(Error::BadRequest(m)) => {
            assert!(m.contains("no chat template") && m.contains("--raw"), "{m}")
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    // Gemma's turn markers are control tokens: recognized in text, ending generation at <end_of_turn>.
    let ids = tok
        .encode("<start_of_turn>user\nHi<end_of_turn>\n", true)
        .unwrap();
    assert_eq!(ids[0], tok.bos_id().unwrap());
    assert_eq!(ids[1], tok.token_id("<start_of_turn>").unwrap());
    assert!(tok.is_eos(tok.token_id("<end_of_turn>").unwrap()));
    assert!(tok.is_eos(tok.token_id("<eos>").unwrap()));
}
