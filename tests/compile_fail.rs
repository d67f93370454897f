//! Compile-time checks of `#[rpc::service]`: each `tests/ui/*.rs` case must fail
//! with exactly the error recorded next to it in `tests/ui/*.stderr`, and each
//! `tests/ui/pass/*.rs` case must compile.
//!
//! Regenerate the expectations with `TRYBUILD=overwrite cargo test --test compile_fail`
//! and read every changed `.stderr` before committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
