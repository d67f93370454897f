//! Code generation.
//!
//! Generated code names everything through absolute paths (`::rpc`, `::core`,
//! `::std`) so it compiles under `#![no_implicit_prelude]`, and its own local
//! bindings use `Span::mixed_site()` plus a `__rpc_` prefix so they can never
//! capture or shadow the user's argument names.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::{Error, FnArg, Ident, Item, ItemTrait, Pat, PatIdent, PatWild, TraitItem};

use crate::ast::{Arg, Method, Service};
use crate::valid;

/// Entry point: the whole attribute expansion.
pub(crate) fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#error #input);
        }
    };

    let mut errors: Option<Error> = None;
    let mut push = |error: Error| match &mut errors {
        Some(existing) => existing.combine(error),
        None => errors = Some(error),
    };

    if !args.is_empty() {
        push(Error::new_spanned(
            &args,
            "#[rpc::service] takes no arguments: write `#[rpc::service]`",
        ));
    }

    let item = match item {
        Item::Trait(item) => item,
        other => {
            push(not_a_trait(&other));
            // Leave the item untouched so that nothing else breaks.
            let errors = errors.map(|error| error.to_compile_error());
            return quote!(#errors #other);
        }
    };

    let service = Service::from_trait(&item);
    if let Err(error) = valid::validate(&service) {
        push(error);
    }

    match errors {
        Some(errors) => {
            let errors = errors.to_compile_error();
            let fallback = fallback(&item);
            quote!(#errors #fallback)
        }
        None => generate(&service),
    }
}

/// The error for `#[rpc::service]` on something other than a trait, spanned
/// on the item's keyword and name where there is one.
fn not_a_trait(item: &Item) -> Error {
    let head = match item {
        Item::Struct(item) => {
            let (token, ident) = (&item.struct_token, &item.ident);
            quote!(#token #ident)
        }
        Item::Enum(item) => {
            let (token, ident) = (&item.enum_token, &item.ident);
            quote!(#token #ident)
        }
        Item::Union(item) => {
            let (token, ident) = (&item.union_token, &item.ident);
            quote!(#token #ident)
        }
        Item::Fn(item) => item.sig.to_token_stream(),
        Item::Impl(item) => {
            let (token, ty) = (&item.impl_token, &item.self_ty);
            quote!(#token #ty)
        }
        Item::Mod(item) => {
            let (token, ident) = (&item.mod_token, &item.ident);
            quote!(#token #ident)
        }
        other => other.to_token_stream(),
    };
    Error::new_spanned(
        head,
        "#[rpc::service] goes on a trait: write `pub trait MyService { async fn method(&self, ...) -> T; }`",
    )
}

/// What is emitted next to the errors when validation fails: the trait as
/// written (`async fn` kept), minus the few things that would make rustc report
/// the same mistake a second time.
fn fallback(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
    let mut seen = HashSet::new();
    item.items.retain_mut(|trait_item| match trait_item {
        TraitItem::Fn(method) => {
            // Duplicates were reported already; rustc would report them again.
            if !seen.insert(method.sig.ident.unraw().to_string()) {
                return false;
            }
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

/// Names of the generated items.
struct Names {
    trait_ident: Ident,
    server: Ident,
    client: Ident,
    service_name: String,
}

impl Names {
    fn new(service: &Service<'_>) -> Self {
        let ident = service.ident;
        Names {
            trait_ident: ident.clone(),
            server: format_ident!("{}Server", ident, span = ident.span()),
            client: format_ident!("{}Client", ident, span = ident.span()),
            service_name: service.name(),
        }
    }
}

/// Everything, for a valid service.
fn generate(service: &Service<'_>) -> TokenStream {
    let names = Names::new(service);
    let rewritten = rewrite_trait(service, &names);
    let server = server(service, &names);
    let client = client(service, &names);
    quote! {
        #rewritten
        #server
        #client
    }
}

/// The binding of an argument (validated to be a plain identifier).
fn arg_name(arg: &Arg<'_>, index: usize) -> Ident {
    match arg.name {
        Some(name) => name.clone(),
        // Unreachable after validation; a fresh name keeps this total.
        None => format_ident!("__rpc_arg{}", index, span = Span::mixed_site()),
    }
}

fn arg_names(method: &Method<'_>) -> Vec<Ident> {
    method
        .args
        .iter()
        .enumerate()
        .map(|(index, arg)| arg_name(arg, index))
        .collect()
}

fn output_type(method: &Method<'_>) -> TokenStream {
    match method.output {
        Some(ty) => ty.to_token_stream(),
        None => quote!(()),
    }
}

/// The trait, with each `async fn` turned into a `Send`-future-returning `fn`,
/// plus `into_service`.
fn rewrite_trait(service: &Service<'_>, names: &Names) -> TokenStream {
    let Names {
        trait_ident,
        server,
        ..
    } = names;
    let original = service.original;
    let attrs = service.attrs;
    let vis = service.vis;
    let unsafety = &original.unsafety;
    let colon = &original.colon_token;
    let supertraits = &original.supertraits;

    let methods = service.methods.iter().map(|method| {
        let attrs = method.attrs;
        let ident = method.ident;
        let receiver = method.receiver;
        let output = output_type(method);
        let future = quote! {
            impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
        let args = method
            .args
            .iter()
            .zip(arg_names(method))
            .map(|(arg, name)| {
                let ty = arg.ty;
                // `mut` is only meaningful (and only allowed) with a body.
                let mutability = (arg.mutable && method.default.is_some()).then(|| quote!(mut));
                let attrs = &arg.original.attrs;
                quote!(#(#attrs)* #mutability #name: #ty)
            });
        match method.default {
            None => quote! {
                #(#attrs)*
                fn #ident(#receiver #(, #args)*) -> #future;
            },
            Some(body) => {
                let out = Ident::new("__rpc_out", Span::mixed_site());
                quote! {
                    #(#attrs)*
                    fn #ident(#receiver #(, #args)*) -> #future
                    where
                        Self: ::core::marker::Sync,
                    {
                        async move {
                            let #out: #output = #body;
                            #out
                        }
                    }
                }
            }
        }
    });

    quote! {
        #(#attrs)*
        #vis #unsafety trait #trait_ident #colon #supertraits {
            #(#methods)*

            /// Wraps this implementation into a service that an `rpc::Server` can host.
            fn into_service(self) -> #server<Self>
            where
                Self: ::core::marker::Sized
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static,
            {
                #server::new(self)
            }
        }
    }
}

/// `CalculatorServer<S>` and its `rpc::Service` impl.
fn server(service: &Service<'_>, names: &Names) -> TokenStream {
    let Names {
        trait_ident,
        server,
        service_name,
        ..
    } = names;
    let vis = service.vis;
    let struct_doc = format!(
        " Serves a [`{trait_ident}`] implementation: hand it to `rpc::Server::builder().serve(..)`."
    );
    let server_name = server.to_string();

    // Not `S`: the dispatch closures name the user's argument types, and one of
    // them could be a type called `S`.
    let generic = Ident::new("__RpcService", Span::call_site());
    let service_local = Ident::new("__rpc_service", Span::mixed_site());
    let method_param = Ident::new("__rpc_method", Span::mixed_site());
    let request_param = Ident::new("__rpc_request", Span::mixed_site());

    let method_list = service.methods.iter().map(|method| {
        let name = method.name();
        quote!(::rpc::Method::new(#service_name, #name))
    });

    let consts: Vec<Ident> = (0..service.methods.len())
        .map(|index| format_ident!("__RPC_METHOD_{}", index, span = Span::mixed_site()))
        .collect();
    let const_defs = service.methods.iter().zip(&consts).map(|(method, konst)| {
        let name = method.name();
        quote! {
            const #konst: ::rpc::MethodId = ::rpc::MethodId::of(#service_name, #name);
        }
    });
    let arms = service.methods.iter().zip(&consts).map(|(method, konst)| {
        let ident = method.ident;
        let names = arg_names(method);
        let types: Vec<_> = method.args.iter().map(|arg| arg.ty).collect();
        let call = quote! {
            <#generic as #trait_ident>::#ident(&*#service_local #(, #names)*).await
        };
        // A stream argument (always the last) is handed to the closure apart from the
        // arguments decoded from the request body.
        let streamed = method.input_stream().and(names.split_last().zip(types.split_last()));
        let (dispatcher, closure) = match streamed {
            Some(((stream_name, plain_names), (stream_ty, plain_types))) => {
                let dispatcher = if method.output_stream().is_some() {
                    quote!(dispatch_bidi)
                } else {
                    quote!(dispatch_streaming_request)
                };
                (
                    dispatcher,
                    quote! {
                        move |(#(#plain_names,)*): (#(#plain_types,)*), #stream_name: #stream_ty| async move { #call }
                    },
                )
            }
            None => {
                let dispatcher = if method.output_stream().is_some() {
                    quote!(dispatch_streaming_response)
                } else {
                    quote!(dispatch)
                };
                (
                    dispatcher,
                    quote! {
                        move |(#(#names,)*): (#(#types,)*)| async move { #call }
                    },
                )
            }
        };
        quote! {
            #konst => {
                let #service_local = ::core::clone::Clone::clone(&self.service);
                #request_param.#dispatcher(#closure)
            }
        }
    });
    let body = if service.methods.is_empty() {
        quote! {
            let _ = #method_param;
            #request_param.unknown_method()
        }
    } else {
        quote! {
            #(#const_defs)*
            match #method_param {
                #(#arms)*
                _ => #request_param.unknown_method(),
            }
        }
    };

    quote! {
        #[doc = #struct_doc]
        #vis struct #server<S> {
            service: ::std::sync::Arc<S>,
        }

        impl<S> #server<S> {
            /// Wraps `service`; concurrent calls share it.
            pub fn new(service: S) -> Self {
                Self {
                    service: ::std::sync::Arc::new(service),
                }
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self {
                    service: ::core::clone::Clone::clone(&self.service),
                }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#server_name).finish_non_exhaustive()
            }
        }

        impl<#generic> ::rpc::Service for #server<#generic>
        where
            #generic: #trait_ident + ::core::marker::Send + ::core::marker::Sync + 'static,
        {
            fn name(&self) -> &'static str {
                #service_name
            }

            fn methods(&self) -> &'static [::rpc::Method] {
                const METHODS: &[::rpc::Method] = &[#(#method_list),*];
                METHODS
            }

            // Serving a deprecated method is not a use of it: only its callers are warned.
            #[allow(deprecated)]
            fn call(
                &self,
                #method_param: ::rpc::MethodId,
                #request_param: ::rpc::__private::Request,
            ) -> ::rpc::__private::Dispatch {
                #body
            }
        }
    }
}

/// `CalculatorClient`.
fn client(service: &Service<'_>, names: &Names) -> TokenStream {
    let Names {
        trait_ident,
        client,
        service_name,
        ..
    } = names;
    let vis = service.vis;
    let struct_doc = format!(
        " Client for [`{trait_ident}`]: one method per trait method. Cheap to clone; clones share one connection."
    );

    let methods = service.methods.iter().map(|method| {
        let ident = method.ident;
        let name = method.name();
        let names = arg_names(method);
        let types: Vec<_> = method.args.iter().map(|arg| arg.ty).collect();
        let output = output_type(method);
        let docs = &method.docs;
        let default_doc = docs.is_empty().then(|| {
            let doc = format!(" Calls [`{trait_ident}::{ident}`] on the server.");
            quote!(#[doc = #doc])
        });
        // The stub mirrors the trait method's parameter list, which the user
        // chose (and can `allow` on the trait); don't warn a second time here.
        let allow = quote!(#[allow(clippy::too_many_arguments)]);
        // A const, so the method id is hashed at compile time, not on every call.
        let method_const = quote!({
            const METHOD: ::rpc::Method = ::rpc::Method::new(#service_name, #name);
            METHOD
        });
        // The request body holds every argument but a stream, which travels on its own.
        let streamed = method.input_stream().and(names.split_last().zip(types.split_last()));
        let (plain_types, call) = match streamed {
            Some(((stream_name, plain_names), (_, plain_types))) => {
                let constructor = if method.output_stream().is_some() {
                    quote!(call_bidi)
                } else {
                    quote!(call_streaming_request)
                };
                let call = quote! {
                    ::rpc::Client::#constructor(&self.client, #method_const, (#(#plain_names,)*), #stream_name)
                };
                (plain_types.to_vec(), call)
            }
            None => {
                let constructor = if method.output_stream().is_some() {
                    quote!(call_streaming_response)
                } else {
                    quote!(call)
                };
                let call = quote! {
                    ::rpc::Client::#constructor(&self.client, #method_const, (#(#names,)*))
                };
                (types.clone(), call)
            }
        };
        quote! {
            #(#docs)*
            #default_doc
            #allow
            pub fn #ident(&self #(, #names: #types)*) -> ::rpc::Call<(#(#plain_types,)*), #output> {
                #call
            }
        }
    });

    quote! {
        #[doc = #struct_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: ::rpc::Client,
        }

        impl #client {
            /// Connects to a server at `endpoint` (a `"host:port"` string, a `SocketAddr`, or `rpc::Endpoint::unix(path)`).
            pub async fn connect(
                endpoint: impl ::core::convert::Into<::rpc::Endpoint>,
            ) -> ::core::result::Result<Self, ::rpc::Error> {
                ::core::result::Result::Ok(Self::new(::rpc::Client::connect(endpoint).await?))
            }

            /// Uses an existing connection (shared with other services' clients).
            pub fn new(client: ::rpc::Client) -> Self {
                Self { client }
            }

            /// The underlying connection.
            pub fn client(&self) -> &::rpc::Client {
                &self.client
            }

            #(#methods)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(input: TokenStream) -> String {
        service(TokenStream::new(), input).to_string()
    }

    #[test]
    fn generates_the_three_parts() {
        let out = expand(quote! {
            pub trait Calculator {
                /// Adds two numbers.
                async fn add(&self, a: i64, b: i64) -> i64;
                async fn ping(&self);
                async fn one(&self, x: String) -> u8 { 1 }
            }
        });
        for needle in [
            "pub trait Calculator",
            "fn add (& self , a : i64 , b : i64) -> impl :: core :: future :: Future < Output = i64 > + :: core :: marker :: Send ;",
            "fn ping (& self) -> impl :: core :: future :: Future < Output = () >",
            "where Self : :: core :: marker :: Sync , { async move { let __rpc_out : u8 = { 1 } ; __rpc_out } }",
            "fn into_service (self) -> CalculatorServer < Self >",
            "pub struct CalculatorServer < S >",
            "impl < __RpcService > :: rpc :: Service for CalculatorServer < __RpcService >",
            "const __RPC_METHOD_0 : :: rpc :: MethodId = :: rpc :: MethodId :: of (\"Calculator\" , \"add\")",
            "move | (a , b ,) : (i64 , i64 ,) | async move { < __RpcService as Calculator > :: add (& * __rpc_service , a , b) . await }",
            "move | () : () |",
            "move | (x ,) : (String ,) |",
            "_ => __rpc_request . unknown_method ()",
            "pub struct CalculatorClient { client : :: rpc :: Client , }",
            "# [doc = r\" Adds two numbers.\"] # [allow (clippy :: too_many_arguments)] pub fn add (& self , a : i64 , b : i64) -> :: rpc :: Call < (i64 , i64 ,) , i64 >",
            "pub fn ping (& self) -> :: rpc :: Call < () , () >",
            "\" Calls [`Calculator::ping`] on the server.\"",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
    }

    #[test]
    fn raw_identifiers_are_unrawed_on_the_wire() {
        let out = expand(quote! {
            trait r#Match { async fn r#type(&self); }
        });
        assert!(out.contains("struct MatchServer"), "{out}");
        assert!(
            out.contains("MethodId :: of (\"Match\" , \"type\")"),
            "{out}"
        );
        assert!(out.contains("pub fn r#type (& self)"), "{out}");
    }

    #[test]
    fn errors_come_with_the_fallback_trait() {
        let out = expand(quote! {
            pub trait Broken {
                async fn ok(&self);
                fn not_async(&self);
                async fn pattern(&self, (a, b): (u8, u8));
                async fn ok(&self, x: u8);
                m!();
            }
        });
        assert!(out.contains("compile_error"), "{out}");
        assert!(
            out.contains("# [allow (async_fn_in_trait)] pub trait Broken"),
            "{out}"
        );
        assert!(
            out.contains("async fn pattern (& self , _ : (u8 , u8))"),
            "{out}"
        );
        assert_eq!(out.matches("async fn ok").count(), 1, "{out}");
        assert!(!out.contains("m ! ()"), "{out}");
        assert!(!out.contains("BrokenServer"), "{out}");
    }

    #[test]
    fn rejects_non_traits_and_arguments() {
        let out = service(
            quote!(foo),
            quote!(
                struct Foo;
            ),
        )
        .to_string();
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(out.contains("struct Foo ;"), "{out}");
    }
}
