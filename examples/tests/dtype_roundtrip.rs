//! Every dtype through every container. The first block's tensors (every
//! weight kind of the model) and the output norm keep the suite fast.

use apr_engine::model_test;
use apr_engine::testing::Report;

// ANCHOR: roundtrip
#[model_test(
    dtype_roundtrip,
    reference = "qwen2.5-coder-0.5b-instruct",
    dtypes = [keep, f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k],
    containers = [apr, gguf, safetensors],
    tensors = ["blk.0.*", "output_norm.weight"],
)]
fn every_dtype_survives_every_container(report: &Report) {
    assert_eq!(report.roundtrip.len(), 14 * 3);
    // SafeTensors holds no block types: the ten block dtypes are refused there, not written.
    let refused = report.roundtrip.iter().filter(|c| c.outcome == "refused").count();
    assert_eq!(refused, 10);
    // Keeping the dtype in APR and GGUF is byte for byte.
    for cell in report.roundtrip.iter().filter(|c| c.dtype == "keep" && c.container != "safetensors") {
        assert_eq!(cell.byte_exact, cell.tensors, "{}", cell.container);
    }
}
// ANCHOR_END: roundtrip
