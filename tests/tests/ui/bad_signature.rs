use apr_engine::model_test;

#[model_test(format_equivalence, reference = "a", candidate = "b")]
async fn is_async() {}

#[model_test(format_equivalence, reference = "a", candidate = "b")]
fn two_parameters(report: &apr_engine::testing::Report, extra: u32) {}

#[model_test(format_equivalence, reference = "a", candidate = "b")]
fn returns_a_value() -> bool {
    true
}

#[model_test(format_equivalence, reference = "a", candidate = "b")]
fn takes_by_value(report: u32) {}

#[model_test(format_equivalence, reference = "a", candidate = "b")]
fn generic<T>() {}

fn main() {}
