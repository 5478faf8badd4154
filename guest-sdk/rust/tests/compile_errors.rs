//! Misusing the SDK's macros is a compile error that points at the mistake and says what to
//! write instead. Each case in `tests/ui/` is paired with the error it must produce.

#[test]
fn misuse_is_reported_at_its_span() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
