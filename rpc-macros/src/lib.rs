//! The `#[rpc::service]` attribute macro.
//!
//! Use it through the `rpc` facade crate (`#[rpc::service]`); this crate only
//! holds the implementation. The macro is a small pipeline:
//!
//! 1. `ast` turns the trait into a typed model, without judging it;
//! 2. `valid` checks the model and collects *every* mistake as a
//!    `syn::Error` with a span on the offending tokens;
//! 3. `expand` generates the rewritten trait, the server dispatcher and the
//!    client stub, or, when validation failed, the errors plus a harmless
//!    fallback so that each mistake is reported exactly once.

mod ast;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns a trait of `async fn` methods into an rpc service.
///
/// ```ignore
/// #[rpc::service]
/// pub trait Calculator {
///     /// Adds two numbers.
///     async fn add(&self, a: i64, b: i64) -> i64;
/// }
/// ```
///
/// generates, next to the (rewritten, `Send`-future) trait:
///
/// * `CalculatorServer<S>`: wraps an implementation so that an `rpc::Server`
///   can host it (also reachable as `Calculator::into_service`);
/// * `CalculatorClient`: a client stub with one method per trait method,
///   returning an awaitable `rpc::Call`.
///
/// Every method must be an `async fn` taking `&self` and owned, concrete
/// argument types; violations are reported as compile errors pointing at the
/// offending tokens.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::service(args.into(), input.into()).into()
}
