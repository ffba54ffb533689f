//! Open a model file and describe it: format, architecture, size, dtypes, tokenizer.
//!
//! `cargo run -p apr-examples --example inspect -- [MODEL]` (default: the 0.5B reference model)

use apr_engine::inspect::inspect;
use apr_engine::ModelFile;

fn main() -> anyhow::Result<()> {
    let path = apr_examples::model_path_from_args();
    let file = ModelFile::open(&path)?;
    let report = inspect(&file, false);
    println!("{}: {} ({} bytes)", report.path, report.format, report.file_size);
    println!("architecture: {}", report.architecture.as_deref().unwrap_or("unknown"));
    println!("parameters:   {}", report.parameters);
    println!("tensors:      {}", report.tensor_count);
    for (dtype, count) in &report.dtypes {
        println!("  {dtype:<6} {:>4} tensors, {:>11} bytes", count.tensors, count.bytes);
    }
    if let Some(config) = &report.config {
        println!(
            "layers {}, hidden {}, heads {}/{} (kv), vocab {}",
            config.layers, config.hidden, config.heads, config.kv_heads, config.vocab
        );
    }
    match &report.tokenizer {
        Some(_) => println!("tokenizer: present"),
        None => println!("tokenizer: none"),
    }
    Ok(())
}
