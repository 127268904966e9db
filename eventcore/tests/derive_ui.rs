//! Compile-fail tests: each misuse of `#[derive(Command)]`, and each attempt
//! to write to a stream a command did not declare, is a compile error at the
//! offending span. The expected messages are the `.stderr` files in `ui/`.

#[test]
fn derive_misuse_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
