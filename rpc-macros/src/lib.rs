//! The `#[rpc::service]` attribute macro.
//!
//! Use it through the `rpc` facade crate (`#[rpc::service]`), whose docs describe what it
//! accepts and generates; this crate only holds the implementation. The macro is a
//! pipeline, one module per step:
//!
//! 1. `attr` reads the attribute's own arguments (`server = Name`, `client = Name`);
//! 2. `ast` turns the trait into a typed model, without judging it, and decides each
//!    method's kind (unary, server stream, client stream, both) once;
//! 3. `valid` checks the model and collects *every* mistake as a `syn::Error` with a span
//!    on the offending tokens;
//! 4. `expand` generates, one function per generated item, the rewritten trait, the server
//!    wrapper and its `rpc::Service` impl, and the client stub;
//! 5. `fallback`: when any step found a mistake, the errors are emitted next to the trait
//!    as written instead, so that each mistake is reported exactly once.

mod ast;
mod attr;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use quote::quote;
use syn::{Error, Item};

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
/// * `ServeCalculator<S>`: wraps an implementation so that an `rpc::Server` can host it
///   (also reachable as `Calculator::into_service`);
/// * `CalculatorClient`: a client stub with one method per trait method, returning an
///   awaitable `rpc::Call`.
///
/// `#[rpc::service(server = Name, client = Name)]` renames either. `#[idempotent]` on a
/// method (the macro's own helper attribute, stripped from the output) marks its
/// `rpc::Method` idempotent on both sides.
///
/// Every method must be an `async fn` taking `&self` and owned, concrete argument types;
/// violations are reported as compile errors pointing at the offending tokens.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_service(args.into(), input.into()).into()
}

/// The whole pipeline, on `proc_macro2` tokens so that unit tests can run it.
fn expand_service(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#error #input);
        }
    };

    let (args, mut errors) = attr::Args::parse(args);
    let mut push = |error: Error| match &mut errors {
        Some(existing) => existing.combine(error),
        None => errors = Some(error),
    };

    let item = match item {
        Item::Trait(item) => item,
        other => {
            push(valid::not_a_trait(&other));
            // Leave the item untouched so that nothing else breaks.
            let errors = errors.map(|error| error.to_compile_error());
            return quote!(#errors #other);
        }
    };

    let service = ast::Service::from_trait(&item, args);
    if let Err(error) = valid::validate(&service) {
        push(error);
    }

    match errors {
        Some(errors) => {
            let errors = errors.to_compile_error();
            let fallback = fallback::fallback(&item);
            quote!(#errors #fallback)
        }
        None => expand::generate(&service),
    }
}
