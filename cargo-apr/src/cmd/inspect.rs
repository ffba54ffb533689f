//! `cargo apr inspect MODEL [--json] [--tensors]`

use apr_engine::inspect::{inspect, InspectReport};
use apr_engine::ModelFile;

use super::common_args::{opened, ModelArg};
use super::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let model = opened(args.model.path(), ModelFile::open(args.model.path()))?;
    let report = inspect(&model, args.tensors);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(crate::exit::PASS)
}

fn print_human(r: &InspectReport) {
    let row = |k: &str, v: String| println!("  {k:<16} {v}");
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    println!("{}", r.path);
    row("format", r.format.to_string());
    row("size", human_bytes(r.file_size));
    row("name", opt(r.name.clone()));
    row("architecture", opt(r.architecture.clone()));
    match &r.config {
        Some(c) => {
            row("layers", c.layers.to_string());
            row("hidden size", c.hidden.to_string());
            row("heads", format!("{} (KV heads {}, head dim {})", c.heads, c.kv_heads, c.head_dim));
            row("FFN size", c.ffn.to_string());
            row("vocabulary", c.vocab.to_string());
            row("context length", c.context_length.to_string());
            row("RoPE base", c.rope_base.to_string());
            row("RMS eps", format!("{:e}", c.rms_eps));
            row("output head", if c.tied_embeddings { "tied to token embedding" } else { "output.weight" }.to_string());
        }
        None => row("config", opt(r.config_error.clone())),
    }
    row("file type", opt(r.file_type.map(|t| t.to_string())));
    row("parameters", format!("{} ({:.2} B)", r.parameters, r.parameters as f64 / 1e9));
    row("tensors", r.tensor_count.to_string());
    for (dtype, c) in &r.dtypes {
        row("", format!("{dtype:<6} {:>4} tensors  {:>10}", c.tensors, human_bytes(c.bytes)));
    }
    match &r.tokenizer {
        Some(t) => row(
            "tokenizer",
            format!(
                "{} (pre {}), {} tokens, {} merges, bos {}, eos {}, chat template {}",
                opt(t.model.clone()),
                opt(t.pre.clone()),
                t.tokens,
                t.merges,
                opt(t.bos.map(|v| v.to_string())),
                opt(t.eos.map(|v| v.to_string())),
                if t.chat_template { "yes" } else { "no" }
            ),
        ),
        None => row("tokenizer", "none embedded".to_string()),
    }
    row("metadata keys", r.metadata_keys.to_string());
    for (k, v) in &r.facts {
        row(k, v.clone());
    }
    if let Some(tensors) = &r.tensors {
        println!();
        println!("  {:<48} {:<6} {:<18} {:>12}", "tensor", "dtype", "shape", "bytes");
        for t in tensors {
            println!("  {:<48} {:<6} {:<18} {:>12}", t.name, t.dtype.name(), format!("{:?}", t.shape), t.size);
        }
    }
}
