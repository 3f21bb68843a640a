//! Shared by the convert tests: strings that exercise a tokenizer.

/// A few hundred strings mixing words, numbers, punctuation, whitespace runs, accents, CJK, emoji, code
/// and special-token text.
pub fn sample_strings() -> Vec<String> {
    let parts = [
        "Hello",
        " world",
        "the",
        " quick brown fox",
        "don't",
        "I'm",
        " we'll",
        "THE",
        "Ünïcödé",
        "naïve café",
        "日本語のテキスト",
        "中文",
        "한국어",
        "Привет мир",
        "مرحبا",
        "🙂",
        "👍🏽",
        "🚀🚀",
        " ",
        "  ",
        "\t",
        "\n",
        "\n\n",
        " \n ",
        "   leading",
        "trailing   ",
        "12345",
        "3.14159",
        "1,000,000",
        "2024-01-01",
        "$99.99",
        "#hashtag",
        "@user",
        "fn main() { println!(\"hi\"); }",
        "<div class=\"x\">",
        "a+b=c",
        "x^2",
        "100%",
        "...",
        "!?",
        "—",
        "«quote»",
        "'single'",
        "\"double\"",
        "<|im_start|>",
        "<|im_end|>",
        "user",
        "\r\n",
        "e.g.",
        "U.S.A.",
        "ABCdefGHI",
        "snake_case_name",
        "CamelCaseName",
        "http://example.com/a?b=c",
        "0x1F",
        "   ",
        "a",
        "zz",
        "ß",
        "ﬁ",
        "İstanbul",
        "\u{0301}",
        "é",
    ];
    let mut out: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while out.len() < 300 {
        let n = 1 + (next() % 6) as usize;
        let s: String = (0..n)
            .map(|_| parts[(next() % parts.len() as u64) as usize])
            .collect();
        out.push(s);
    }
    out
}
