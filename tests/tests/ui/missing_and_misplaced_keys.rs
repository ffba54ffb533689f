use apr_engine::model_test;

#[model_test(format_equivalence, reference = "qwen")]
fn no_candidate() {}

#[model_test(trace_diff, reference = "qwen", candidate = "other", dtypes = [f16])]
fn roundtrip_key_on_trace_diff() {}

#[model_test(format_equivalence, reference = "qwen", candidate = convert(apr), expect = diverged(Unknown))]
fn divergence_is_not_equivalence() {}

#[model_test(dtype_roundtrip, reference = "qwen", containers = [apr, zip])]
fn roundtrip_without_dtypes() {}

#[model_test(format_equivalence, reference = convert(apr), candidate = convert(gguf))]
fn converted_reference_without_model() {}

#[model_test(format_equivalence, reference = "a", reference = "b", candidate = "c")]
fn key_twice() {}

fn main() {}
