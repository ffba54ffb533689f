//! Chat templates: the model's own `tokenizer.chat_template`, rendered as
//! Hugging Face's `apply_chat_template` renders it.
//!
//! Like transformers: a Jinja environment with `trim_blocks` and
//! `lstrip_blocks`, loop controls, Python string and dict methods
//! (`.strip()`, `.startswith()`, `.items()`... via minijinja-contrib's
//! pycompat), `raise_exception(msg)`, and a `tojson` that writes what Python's
//! `json.dumps(ensure_ascii=False)` writes. Variables: `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`; `tools` and the rest are
//! undefined, so templates take their no-tools branch.

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};

use crate::isolate::{self, IsolationError, Limits};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// The texts a template sees as `bos_token` and `eos_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokenTexts {
    pub bos_token: String,
    pub eos_token: String,
}

#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum ChatError {
    #[error("chat template does not compile (line {line}): {detail}")]
    Syntax { line: usize, detail: String },
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("chat template failed to render (line {line}): {detail}")]
    Render { line: usize, detail: String },
    #[error(
        "chat template ran past its budget of {budget} steps (a template loops far more than rendering a chat needs)"
    )]
    OutOfFuel { budget: u64 },
    #[error("chat template's output passed its cap of {limit} bytes for {input} bytes of messages")]
    TooLarge { limit: usize, input: usize },
    #[error("{0}")]
    ReservedCharacter(String),
    #[error("chat template's renderer {0}")]
    Isolation(String),
}

/// Steps (minijinja fuel) a render may take: a fixed allowance plus some per
/// message. Real templates take a few hundred steps a message; two nested
/// loops over `range(100000)` take ten billion.
const FUEL_BASE: u64 = 2_000_000;
const FUEL_PER_MESSAGE: u64 = 50_000;

/// Bytes a render may write: the messages a few times over (templates repeat
/// the system prompt, wrap each message in markup) plus room for the markup.
const OUTPUT_BASE: usize = 256 * 1024;
const OUTPUT_PER_INPUT_BYTE: usize = 8;

/// Marks errors that come from the template's own `raise_exception`.
const RAISED: &str = "raise_exception: ";

/// Renders `messages` with empty `bos_token` / `eos_token`; see [`render_with`].
pub fn render(template: &str, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
    render_with(template, messages, add_generation_prompt, &SpecialTokenTexts::default())
}

/// What an isolated render may use beyond the caller's own memory and time:
/// real templates take well under a megabyte and a millisecond.
const RENDER_LIMITS: Limits = Limits { extra_memory: 1 << 30, time: std::time::Duration::from_secs(20) };

/// Renders `messages` through `template`; with `add_generation_prompt` the
/// template appends the opening of the assistant's turn. The template comes
/// from a model file, so it runs in a child process ([`crate::isolate`]): a
/// template whose values hold themselves (a namespace assigned to its own
/// attribute overflows the renderer's stack when printed) or grow without
/// bound (a string doubled forty times) ends that child, not the caller.
pub fn render_with(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    special: &SpecialTokenTexts,
) -> Result<String, ChatError> {
    let render = || render_in_process(template, messages, add_generation_prompt, special);
    let encode = |r: &Result<String, ChatError>| serde_json::to_vec(r).unwrap_or_default();
    let decode = |bytes: &[u8]| serde_json::from_slice(bytes).ok();
    isolate::run(RENDER_LIMITS, render, encode, decode)
        .unwrap_or_else(|e: IsolationError| Err(ChatError::Isolation(e.to_string())))
}

/// [`render_with`] in this process, bounded only by fuel and the output cap:
/// for fuzzing the renderer itself, where a crash must be seen.
pub fn render_in_process(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    special: &SpecialTokenTexts,
) -> Result<String, ChatError> {
    let input: usize = messages.iter().map(|m| m.content.len() + m.role.len()).sum();
    let fuel = FUEL_BASE.saturating_add(FUEL_PER_MESSAGE.saturating_mul(messages.len() as u64));
    let mut env = environment();
    env.set_fuel(Some(fuel));
    env.add_template("chat", template).map_err(|e| syntax_error(&e))?;
    let compiled = env.get_template("chat").map_err(|e| syntax_error(&e))?;
    let ctx = context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => special.bos_token.as_str(),
        eos_token => special.eos_token.as_str(),
    };
    let limit = OUTPUT_BASE.saturating_add(OUTPUT_PER_INPUT_BYTE.saturating_mul(input));
    let mut out = CappedOutput { bytes: Vec::new(), limit, overflowed: false };
    let rendered = compiled.render_captured_to(ctx, &mut out).map(drop);
    match rendered {
        Ok(_) => String::from_utf8(out.bytes).map_err(|e| ChatError::Render { line: 0, detail: e.to_string() }),
        Err(_) if out.overflowed => Err(ChatError::TooLarge { limit, input }),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(ChatError::OutOfFuel { budget: fuel }),
        Err(e) => Err(render_error(&e)),
    }
}

/// The render's output, refusing to grow past `limit` bytes.
struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output cap reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Marks text typed by a user inside a message's content so that, after
/// rendering, the tokenizer can tell it from the template's own markup: the
/// two Unicode noncharacters never occur in real text.
pub const LITERAL_OPEN: char = '\u{FDD0}';
pub const LITERAL_CLOSE: char = '\u{FDD1}';

/// `text` wrapped in the literal markers.
pub fn mark_literal(text: &str, out: &mut String) {
    out.push(LITERAL_OPEN);
    out.push_str(text);
    out.push(LITERAL_CLOSE);
}

/// Refuses messages or a template that already hold the markers (they would
/// be mistaken for ours).
pub fn check_no_markers(template: &str, messages: &[ChatMessage]) -> Result<(), ChatError> {
    let has_marker = |s: &str| s.contains([LITERAL_OPEN, LITERAL_CLOSE]);
    if has_marker(template) {
        return Err(ChatError::ReservedCharacter(
            "chat template contains U+FDD0 or U+FDD1, noncharacters apr reserves to mark message text".into(),
        ));
    }
    if let Some(m) = messages.iter().find(|m| has_marker(&m.content)) {
        return Err(ChatError::ReservedCharacter(format!(
            "a {} message contains U+FDD0 or U+FDD1, noncharacters apr reserves to mark message text",
            m.role
        )));
    }
    Ok(())
}

/// Removes the literal markers from rendered text, returning the text and
/// the byte ranges (in the returned text) that were marked. A marker the
/// template cut off (an open without a close) marks to the end, erring on
/// the side of treating text as the user's.
pub fn take_literal_ranges(rendered: &str) -> (String, Vec<std::ops::Range<usize>>) {
    let mut text = String::with_capacity(rendered.len());
    let mut ranges = Vec::new();
    let mut open: Option<usize> = None;
    for c in rendered.chars() {
        match c {
            LITERAL_OPEN => open = open.or(Some(text.len())),
            LITERAL_CLOSE => {
                if let Some(start) = open.take() {
                    ranges.push(start..text.len());
                }
            }
            c => text.push(c),
        }
    }
    if let Some(start) = open {
        ranges.push(start..text.len());
    }
    (text, ranges)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(|state, value, method, args| {
        if let (Some(format), "format") = (value.as_str(), method) {
            check_format_keys(format, "[", ']')?;
            check_format_widths(format.split('{').skip(1).map(brace_spec))?;
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_filter("format", format);
    env
}

/// The `format` filter (printf style, `'%(key)s' | format(...)`), refusing
/// the keys that minijinja's parser cannot read (see [`check_format_keys`]).
fn format(state: &State, value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(format) = value.as_str() {
        check_format_keys(format, "%(", ')')?;
        check_format_widths(format.split('%').skip(1).map(printf_spec))?;
    }
    minijinja::filters::format(state, value, args)
}

/// minijinja 2.24's format-string parser reads a key (`%(key)` in the
/// `format` filter, `[key]` in `str.format`) one byte at a time and panics
/// (a string sliced inside a character) on a character of several bytes
/// before the closing delimiter. Such a key is refused before the parser
/// sees it: after every `open`, up to the next `close` (or the end, where the
/// parser stops too), the text must be ASCII. This also refuses a few formats
/// that would render (an escaped `%%(é)`, a literal `[é` in `str.format`):
/// an error, where the parser would have aborted the program.
fn check_format_keys(format: &str, open: &str, close: char) -> Result<(), Error> {
    for (at, _) in format.match_indices(open) {
        let key = format[at + open.len()..].split(close).next().unwrap_or_default();
        if !key.is_ascii() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("format key {open}{key:?} is not ASCII (minijinja's format parser cannot read it)"),
            ));
        }
    }
    Ok(())
}

/// Widths and precisions past this are refused: a template pads a column,
/// never to gigabytes (`'%8494901466033786425d' | format(1)` asks the
/// formatter for an exabyte; found by the `chat_template` fuzzer).
const MAX_FORMAT_WIDTH: u64 = 4096;

fn check_format_widths<'a>(specs: impl Iterator<Item = &'a str>) -> Result<(), Error> {
    for spec in specs {
        let numbers = spec.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty());
        if let Some(n) = numbers.map(|n| n.parse::<u64>().unwrap_or(u64::MAX)).find(|&n| n > MAX_FORMAT_WIDTH) {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("format width or precision {n} is past the limit of {MAX_FORMAT_WIDTH}"),
            ));
        }
    }
    Ok(())
}

/// The flags, width and precision after a `%` (and its `(key)`), up to the conversion letter.
fn printf_spec(after_percent: &str) -> &str {
    let rest = match after_percent.strip_prefix('(') {
        Some(keyed) => keyed.split_once(')').map_or("", |(_, r)| r),
        None => after_percent,
    };
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "-+ #0.*".contains(c))).unwrap_or(rest.len());
    &rest[..end]
}

/// The format spec of a `{field:spec}` replacement field (after its colon).
fn brace_spec(after_brace: &str) -> &str {
    let field = after_brace.split('}').next().unwrap_or_default();
    field.split_once(':').map_or("", |(_, spec)| spec)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{message}")))
}

fn syntax_error(e: &Error) -> ChatError {
    ChatError::Syntax { line: e.line().unwrap_or(0), detail: describe(e) }
}

fn render_error(e: &Error) -> ChatError {
    match e.detail().and_then(|d| d.strip_prefix(RAISED)) {
        Some(message) => ChatError::Raised(message.to_string()),
        None => ChatError::Render { line: e.line().unwrap_or(0), detail: describe(e) },
    }
}

fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// `value | tojson(indent=None)`: Python's `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(value)),
        ValueKind::String => write_json_string(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(('[', ']'), &items, indent, depth, out, |item, out| {
                write_json(item, indent, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            write_container(('{', '}'), &keys, indent, depth, out, |key, out| {
                write_json_string(&key.to_string(), out);
                out.push_str(": ");
                write_json(&value.get_item(key)?, indent, depth + 1, out)
            })?;
        }
        kind => {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson cannot write a value of kind {kind}")))
        }
    }
    Ok(())
}

/// Brackets around items: `[a, b]` on one line, or one item a line with `indent`.
fn write_container(
    (open, close): (char, char),
    items: &[Value],
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
    mut write_item: impl FnMut(&Value, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    for (i, item) in items.iter().enumerate() {
        match indent {
            Some(width) => {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&" ".repeat(width * (depth + 1)));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        write_item(item, out)?;
    }
    if let (Some(width), false) = (indent, items.is_empty()) {
        out.push('\n');
        out.push_str(&" ".repeat(width * depth));
    }
    out.push(close);
    Ok(())
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python's `repr` writes it: integers plainly, floats with a
/// `.0` when whole, in exponent form below 1e-4 or from 1e16 on.
fn python_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    let Ok(v) = f64::try_from(value.clone()) else {
        return value.to_string();
    };
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let formatted = format!("{v:e}");
        let (mantissa, exponent) = formatted.split_once('e').unwrap_or((&formatted, "0"));
        let (sign, digits) = exponent.strip_prefix('-').map_or(("+", exponent), |d| ("-", d));
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(template: &str) -> Result<String, ChatError> {
        render(template, &[ChatMessage::new("user", "  hi there  ")], true)
    }

    #[test]
    fn python_string_methods_work() {
        let out = one("{{ messages[0].content.strip().upper() }}|{{ messages[0]['role'].startswith('us') }}").unwrap();
        assert_eq!(out, "HI THERE|True");
        let out = one("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}").unwrap();
        assert_eq!(out, "a=1");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let template =
            "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}";
        assert_eq!(one(template).unwrap(), "[  hi there  ]\n");
    }

    #[test]
    fn raise_exception_is_reported_with_its_message() {
        let err =
            one("{% if messages[0].role != 'system' %}{{ raise_exception('System first!') }}{% endif %}").unwrap_err();
        assert!(matches!(&err, ChatError::Raised(m) if m == "System first!"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = one("ok\n{% if %}").unwrap_err();
        assert!(matches!(err, ChatError::Syntax { line: 2, .. }), "{err}");
    }

    #[test]
    fn tools_are_undefined_and_bos_eos_are_passed() {
        let special = SpecialTokenTexts { bos_token: "<s>".into(), eos_token: "</s>".into() };
        let out = render_with("{% if tools %}T{% endif %}{{ bos_token }}x{{ eos_token }}", &[], false, &special);
        assert_eq!(out.unwrap(), "<s>x</s>");
    }

    #[test]
    fn nested_huge_loops_run_out_of_fuel() {
        let template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = one(template).unwrap_err();
        assert!(matches!(err, ChatError::OutOfFuel { .. }), "{err}");
    }

    #[test]
    fn output_past_the_cap_is_refused() {
        let template = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}";
        let err = one(template).unwrap_err();
        assert!(matches!(err, ChatError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("cap"), "{err}");
    }

    /// Found by the `chat_template` fuzzer: a printf width of 19 digits made
    /// the formatter allocate an exabyte (an abort, not an error).
    #[test]
    fn huge_format_widths_are_an_error() {
        for template in [
            "{{ '%s-%00000000008494901466033786425d' | format('a', 3) }}",
            "{{ '%(k)5000s' | format(k='a') }}",
            "{{ '%.99999f' | format(1.5) }}",
            "{{ '{:>100000}'.format('a') }}",
        ] {
            let err = one(template).unwrap_err();
            assert!(err.to_string().contains("past the limit of 4096"), "{template}: {err}");
        }
        assert_eq!(one("{{ '%-6s|%05d|%.2f' | format('ab', 42, 1.5) }}").unwrap(), "ab    |00042|1.50");
        assert_eq!(one("{{ '{:>6}|{}'.format('ab', 1) }}").unwrap(), "    ab|1");
    }

    /// What no fuel or output cap sees, the child process's limits do. Found by
    /// the `chat_template` fuzzer (fuzz/known/): printing a namespace that holds
    /// itself recurses until the stack overflows. Written by hand: a value
    /// doubled forty times and never printed.
    #[cfg(unix)]
    #[test]
    fn what_kills_the_renderer_is_an_error_not_a_crash() {
        for (template, cause) in [
            (include_str!("../../../fuzz/known/chat_template-namespace-cycle-minimal.jinja"), "overflowed its stack"),
            (include_str!("../../../fuzz/known/chat_template-namespace-doubling-oom.jinja"), "memory allocation"),
        ] {
            let err = one(template).unwrap_err();
            assert!(matches!(err, ChatError::Isolation(_)) && err.to_string().contains(cause), "{err}");
        }
    }

    /// Found by the `chat_template` fuzzer: minijinja's format parser panics
    /// on a key holding a character of several bytes; it is an error now.
    #[test]
    fn format_keys_that_are_not_ascii_are_an_error() {
        for template in [
            "{{ '%(é)s' | format(x=1) }}",
            "{{ '%(aé' | format(1) }}",
            "{{ '{0[é]}'.format([1]) }}",
            "{{ '{0[a]}{0[é' .format({'a': 1}) }}",
        ] {
            let err = one(template).unwrap_err();
            assert!(
                matches!(&err, ChatError::Render { .. }) && err.to_string().contains("not ASCII"),
                "{template}: {err}"
            );
        }
        // ASCII keys, and characters of several bytes outside keys, still format.
        let out = one("{{ 'é %(k)s' | format({'k': 'ü'}) }}|{{ 'é{0[k]}é'.format({'k': 'ü'}) }}").unwrap();
        assert_eq!(out, "é ü|éüé");
    }

    #[test]
    fn literal_markers_become_ranges() {
        let marked = format!("<a>{LITERAL_OPEN}<b>{LITERAL_CLOSE}c{LITERAL_OPEN}d");
        let (text, ranges) = take_literal_ranges(&marked);
        assert_eq!(text, "<a><b>cd");
        assert_eq!(ranges, [3..6, 7..8]);
        let err = check_no_markers("x", &[ChatMessage::new("user", "a\u{FDD0}")]).unwrap_err();
        assert!(err.to_string().contains("user message"), "{err}");
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let out = one(r#"{{ {"a": [1, 2.5, 3.0, none, true], "s": "q\"<é>\n"} | tojson }}"#).unwrap();
        assert_eq!(out, r#"{"a": [1, 2.5, 3.0, null, true], "s": "q\"<é>\n"}"#);
        let out = one(r#"{{ {"k": [1]} | tojson(indent=2) }}"#).unwrap();
        assert_eq!(out, "{\n  \"k\": [\n    1\n  ]\n}");
        assert_eq!(
            one("{{ [] | tojson(indent=2) }}{{ 1e20 | tojson }} {{ 0.00001 | tojson }}").unwrap(),
            "[]1e+20 1e-05"
        );
    }
}
