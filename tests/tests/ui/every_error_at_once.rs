use apr_engine::model_test;

#[model_test(
    trace_diff,
    reference = "qwen",
    candidate = convert(apr, dtype = q9_k, fault = scale("blk.5.ffn_down.weight")),
    prompts = "not a list",
    max_tokens = 0,
    tolerance = [logits(max = 1e-4), nmse(-1.0), cosine(1.5), kld(x), top2],
    expect = diverged(LayerCorupted(5)),
    backends = [cpu, tpu, cpu],
    colour = "blue",
)]
fn many_mistakes(report: &apr_engine::testing::Report) {
    // The function is still emitted as written: using its parameter causes no further error.
    let _ = &report.status;
}

fn main() {}
