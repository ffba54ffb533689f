//! A deliberately corrupted candidate: layer 5's FFN down projection scaled
//! by 1.5. The trace diff must find the divergence and blame layer 5.

use apr_engine::model_test;
use apr_engine::testing::Report;
use apr_engine::tracediff::Verdict;

// ANCHOR: diverged
#[model_test(
    trace_diff,
    reference = "qwen2.5-coder-0.5b-instruct",
    candidate = convert(apr, fault = scale("blk.5.ffn_down.weight", 1.5)),
    prompts = ["What is 2+2?"],
    max_tokens = 2,
    expect = diverged(LayerCorrupted(5)),
    backends = [cpu, cuda],
)]
fn scaled_ffn_down_is_blamed_on_layer_5(report: &Report) {
    let Verdict::Diverged { layer, .. } = &report.prompts[0].trace.verdict else { unreachable!() };
    assert_eq!(*layer, Some(5));
}
// ANCHOR_END: diverged

// ANCHOR: golden
/// The uncorrupted conversion, compared with every boundary traced: identical.
/// Its greedy tokens and top logits are pinned in a golden snapshot; a change
/// of the engine's own output fails here until `cargo apr review --accept`.
/// The tolerance is what CPUs really differ by: the kernels of a CPU without
/// AVX-512 VNNI round differently and move these logits by up to ~0.2 through
/// 24 layers, so 0.5 passes on any x86-64 and still fails on a changed token
/// or a real regression (a wrong kernel moves them by whole units).
#[model_test(
    trace_diff,
    reference = "qwen2.5-coder-0.5b-instruct",
    candidate = convert(apr),
    prompts = ["What is 2+2?"],
    max_tokens = 4,
    expect = identical,
    tolerance = logits(max_abs = 0.5),
    golden = "tests/golden/clean_conversion.json",
)]
fn clean_conversion_traces_identical() {}
// ANCHOR_END: golden
