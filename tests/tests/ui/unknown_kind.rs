use apr_engine::model_test;

#[model_test(format_equivalance, reference = "m.gguf", candidate = convert(apr))]
fn misspelt_kind() {}

#[model_test(reference = "m.gguf")]
fn kind_missing() {}

fn main() {}
