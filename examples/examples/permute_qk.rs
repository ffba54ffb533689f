//! Write a copy of a model whose Q/K rows are permuted within each head the
//! way Llama converters do (half-split halves to interleaved pairs) while the
//! file goes on recording its old row order: the converter bug that loads
//! fine and answers differently. `trace-diff` names it `LayoutMismatch`,
//! with the tensor and the order.
//!
//! `cargo run -p apr-examples --example permute_qk -- MODEL OUT.{gguf,apr,safetensors}`

use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::ModelFile;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out] = args.as_slice() else {
        anyhow::bail!("usage: permute_qk MODEL OUT");
    };
    let input = ModelFile::open(model)?;
    write_faulty_copy(&input, out.as_ref(), &[Fault::PermuteQkRows], true)?;
    println!("{out}: {model} with every layer's Q/K rows permuted (order not recorded)");
    Ok(())
}
