//! Compile-fail cases of `#[model_test]`: each bad argument is an error spanned
//! on its own token, all are reported at once, and nothing else cascades.

#[test]
fn bad_attributes_fail_to_compile_with_spanned_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
