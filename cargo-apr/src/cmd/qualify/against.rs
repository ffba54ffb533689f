//! Parity with a running OpenAI-compatible server (`--against URL`: llama.cpp's
//! `llama-server`, Ollama, or `cargo apr serve`): the same prompts greedily
//! through its chat (or, raw, completions) endpoint, the text compared with
//! apr's A1 answers, and the decode speed ratio.

use super::prompts::Prompt;
use super::report::{Parity, TextDifference};
use super::server::{chat_body, model_id, Http};

/// apr must decode at least half as fast as the server (within 2x).
pub const MIN_SPEED_RATIO: f64 = 0.5;

/// One answer of the server.
struct ServerAnswer {
    text: String,
    tokens: usize,
    /// The server's own decode rate (llama-server's `timings.predicted_per_second`).
    own_tok_s: Option<f64>,
    wall_s: f64,
}

fn ask(http: &Http, url: &str, model: &str, prompt: &Prompt, max_tokens: usize) -> anyhow::Result<ServerAnswer> {
    let base = url.trim_end_matches('/');
    let (endpoint, body) = if prompt.raw {
        let body = serde_json::json!({"model": model, "prompt": prompt.question, "max_tokens": max_tokens, "temperature": 0.0});
        (format!("{base}/v1/completions"), body)
    } else {
        (
            format!("{base}/v1/chat/completions"),
            chat_body(model, &prompt.question, prompt.system.as_deref(), max_tokens),
        )
    };
    let reply = http.post_json(&endpoint, &[], &body)?;
    if reply.status != 200 {
        anyhow::bail!("{endpoint}: status {}: {}", reply.status, reply.body);
    }
    let json = reply.json();
    let choice = &json["choices"][0];
    let text = choice["message"]["content"].as_str().or_else(|| choice["text"].as_str());
    let text = text.ok_or_else(|| anyhow::anyhow!("{endpoint}: no text in the answer: {}", reply.body))?;
    Ok(ServerAnswer {
        text: text.to_string(),
        tokens: json["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize,
        own_tok_s: json["timings"]["predicted_per_second"].as_f64(),
        wall_s: reply.elapsed.as_secs_f64(),
    })
}

/// Asks the server every prompt and compares with apr's answers (`apr_texts`,
/// in prompt order) and decode rate.
pub fn check(
    url: &str,
    prompts: &[Prompt],
    apr_texts: &[String],
    apr_tok_s: f64,
    max_tokens: usize,
) -> anyhow::Result<Parity> {
    let http = Http::new()?;
    let model = model_id(&http, url)?;
    let mut differences = Vec::new();
    let (mut own_rates, mut tokens, mut wall_s) = (Vec::new(), 0usize, 0.0f64);
    for (prompt, apr_text) in prompts.iter().zip(apr_texts) {
        let answer = ask(&http, url, &model, prompt, max_tokens)?;
        if answer.text != *apr_text {
            differences.push(TextDifference {
                prompt: prompt.question.clone(),
                apr: apr_text.clone(),
                server: answer.text.clone(),
            });
        }
        own_rates.extend(answer.own_tok_s);
        tokens += answer.tokens;
        wall_s += answer.wall_s;
    }
    let mut notes = vec!["top logprobs and peak memory (--against-pid) are not compared yet".to_string()];
    let (server_tok_s, source) = if own_rates.len() == prompts.len() && !own_rates.is_empty() {
        (Some(own_rates.iter().sum::<f64>() / own_rates.len() as f64), "the server's own timings".to_string())
    } else if tokens > 0 && wall_s > 0.0 {
        notes.push("the server returned no timings: its rate is tokens over wall-clock time, prefill and HTTP included (it favours apr)".into());
        (Some(tokens as f64 / wall_s), "wall clock".to_string())
    } else {
        (None, "none".to_string())
    };
    let speed_ratio = server_tok_s.filter(|&s| s > 0.0).map(|s| apr_tok_s / s);
    let holds = differences.is_empty() && speed_ratio.is_some_and(|r| r >= MIN_SPEED_RATIO);
    Ok(Parity {
        url: url.to_string(),
        prompts_equal: prompts.len() - differences.len(),
        prompts: prompts.len(),
        differences,
        speed_ratio,
        apr_decode_tok_s: apr_tok_s,
        server_tok_s,
        server_speed_source: source,
        holds,
        notes,
    })
}
