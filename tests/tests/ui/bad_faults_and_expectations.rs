use apr_engine::model_test;

#[model_test(
    trace_diff,
    reference = "qwen",
    candidate = convert(apr, fault = [zero(), noise("t", 1.5), swap("a"), melt("t")], level = 3),
    expect = diverged(LayerCorrupted),
)]
fn faults() {}

#[model_test(trace_diff, reference = "qwen", candidate = convert(), expect = identical(1))]
fn empty_convert() {}

#[model_test(trace_diff, reference = "qwen", candidate = convert(zip), expect = diverged(WeightLoadFailure(3)))]
fn wrong_container() {}

#[model_test(trace_diff, reference = 42, candidate = "", expect = maybe)]
fn wrong_model_types() {}

fn main() {}
