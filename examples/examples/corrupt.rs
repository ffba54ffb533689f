//! Write a deliberately corrupted copy of a model: one tensor scaled by a
//! factor, through apr's own writers. Reproduces the class of bug that
//! `trace-diff` blames on one layer (`LayerCorrupted`).
//!
//! `cargo run -p apr-examples --example corrupt -- MODEL OUT.{gguf,apr,safetensors} TENSOR FACTOR`
//! (for example `blk.5.ffn_down.weight 1.5`)

use anyhow::Context;
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::ModelFile;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out, tensor, factor] = args.as_slice() else {
        anyhow::bail!("usage: corrupt MODEL OUT TENSOR FACTOR");
    };
    let factor: f32 = factor.parse().with_context(|| format!("FACTOR `{factor}` is not a number"))?;
    let input = ModelFile::open(model)?;
    let fault = Fault::ScaleTensor { name: tensor.clone(), factor };
    write_faulty_copy(&input, out.as_ref(), &[fault], true)?;
    println!("{out}: {model} with {tensor} scaled by {factor}");
    Ok(())
}
