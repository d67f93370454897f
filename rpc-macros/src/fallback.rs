//! What is emitted next to the errors when the input is not a valid service: the trait as
//! written, so that the user's impls and uses of it still type-check and each mistake is
//! reported once, by us, rather than again by rustc in a dozen places.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::{FnArg, ItemTrait, Pat, PatIdent, PatWild, TraitItem};

use crate::ast::is_idempotent_attr;

/// What is emitted next to the errors when validation fails: the trait as
/// written (`async fn` kept), minus the few things that would make rustc report
/// the same mistake a second time.
pub(crate) fn fallback(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
    let mut seen = HashSet::new();
    item.items.retain_mut(|trait_item| match trait_item {
        TraitItem::Fn(method) => {
            // Duplicates were reported already; rustc would report them again.
            if !seen.insert(method.sig.ident.unraw().to_string()) {
                return false;
            }
            // Ours, and not an attribute rustc knows: left in, it would be an error of its own.
            method.attrs.retain(|attr| !is_idempotent_attr(attr));
            // Already reported; rustc rejects both in a trait.
            method.sig.constness = None;
            method.sig.variadic = None;
            if method.default.is_none() {
                // Patterns are not allowed in methods without a body.
                for input in &mut method.sig.inputs {
                    if let FnArg::Typed(typed) = input {
                        *typed.pat = plain_pattern(&typed.pat);
                    }
                }
            }
            true
        }
        // Unknown macros or tokens could fail to expand a second time.
        TraitItem::Macro(_) | TraitItem::Verbatim(_) => false,
        _ => true,
    });
    quote! {
        // The fallback keeps `async fn` as written, which would add an
        // `async_fn_in_trait` warning on public traits on top of the real errors.
        #[allow(async_fn_in_trait)]
        #item
    }
}

/// `name` for `mut name` / `ref name` / `name @ ..`, `_` for anything else.
fn plain_pattern(pat: &Pat) -> Pat {
    match pat {
        Pat::Ident(pat) => Pat::Ident(PatIdent {
            attrs: pat.attrs.clone(),
            by_ref: None,
            mutability: None,
            ident: pat.ident.clone(),
            subpat: None,
        }),
        other => Pat::Wild(PatWild {
            attrs: Vec::new(),
            underscore_token: syn::Token![_](span_of(other)),
        }),
    }
}

fn span_of(tokens: &impl ToTokens) -> Span {
    tokens
        .to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |token| token.span())
}
