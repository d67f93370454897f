//! Code generation, for a service that passed validation: one function per generated item.
//!
//! | function | generates |
//! |---|---|
//! | [`rewrite_trait`] | the trait, each method returning a `Send` future, plus `into_service` |
//! | [`server_struct`] | `Serve<Trait><S>`, its constructors, `Clone` and `Debug` |
//! | [`signature_tables`] | each method's traced signature and `rpc::Method`, computed once |
//! | [`service_impl`] | `impl rpc::Service for Serve<Trait><S>`: one [`dispatch_arm`] per method |
//! | [`client_struct`] | `<Trait>Client` and its constructors; one [`client_method`] per method |
//!
//! Generated code names everything through absolute paths (`::rpc`, `::core`,
//! `::std`) so it compiles under `#![no_implicit_prelude]`, and its own local
//! bindings use `Span::mixed_site()` plus a `__rpc_` prefix so they can never
//! capture or shadow the user's argument names.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::{Ident, Type};

use crate::ast::{stream_item, Arg, Method, MethodKind, Service};

/// Everything, for a valid service.
pub(crate) fn generate(service: &Service<'_>) -> TokenStream {
    let rewritten = rewrite_trait(service);
    let server = server_struct(service);
    let tables = signature_tables(service);
    let service_impl = service_impl(service);
    let client = client_struct(service);
    quote! {
        #rewritten
        #server
        #tables
        #service_impl
        #client
    }
}

/// The trait, with each `async fn` turned into a `Send`-future-returning `fn`,
/// plus `into_service`.
fn rewrite_trait(service: &Service<'_>) -> TokenStream {
    let original = service.original;
    let (attrs, vis, ident) = (service.attrs, service.vis, service.ident);
    let unsafety = &original.unsafety;
    let colon = &original.colon_token;
    let supertraits = &original.supertraits;
    let server = &service.server;
    let methods = service.methods.iter().map(trait_method);
    let into_service_doc = format!(
        " When a type implements several service traits, name the one meant: \
         `{trait_ident}::into_service(value)`, or `{server}::new(value)`.",
        trait_ident = ident.unraw(),
        server = server.unraw(),
    );

    quote! {
        #(#attrs)*
        #vis #unsafety trait #ident #colon #supertraits {
            #(#methods)*

            /// Wraps this implementation into a service that an `rpc::Server` can host.
            ///
            #[doc = #into_service_doc]
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

/// One method of the rewritten trait: `fn m(&self, ..) -> impl Future<Output = T> + Send`,
/// with the default body, if any, moved into an `async move` block.
fn trait_method(method: &Method<'_>) -> TokenStream {
    let attrs = &method.attrs;
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
}

/// `ServeCalculator<S>`: the wrapper an `rpc::Server` hosts, with `new`, `from_arc`,
/// `Clone` and `Debug`.
fn server_struct(service: &Service<'_>) -> TokenStream {
    let (vis, trait_ident, server) = (service.vis, service.ident, &service.server);
    let struct_doc = format!(
        " Serves a [`{trait_ident}`] implementation: hand it to `rpc::Server::builder().serve(..)`."
    );
    let server_name = server.unraw().to_string();

    quote! {
        #[doc = #struct_doc]
        ///
        /// Made by `into_service`, [`new`](Self::new) or [`from_arc`](Self::from_arc).
        #vis struct #server<S> {
            service: ::std::sync::Arc<S>,
        }

        impl<S> #server<S> {
            /// Wraps `service`; concurrent calls share it.
            pub fn new(service: S) -> Self {
                Self::from_arc(::std::sync::Arc::new(service))
            }

            /// Wraps a shared `service`: one value can serve several service traits, and
            /// stay reachable from the code that built the server.
            pub fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                Self { service }
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
    }
}

/// Two private functions on the server struct, shared by the server and the client stub:
/// `__rpc_signatures()`, every method's [`rpc::shape::Signature`] traced from its argument
/// and result types, and `__rpc_methods()`, every method's `rpc::Method` with the
/// fingerprint of that signature. Each is computed once, the first time either side asks
/// (the server when the service is added, a client on its first call), and kept in a
/// `static`; a call then only copies its `Method` out.
fn signature_tables(service: &Service<'_>) -> TokenStream {
    let server = &service.server;
    let generic = impl_generic();
    let signatures = service.methods.iter().map(signature_expr);
    let traced = Ident::new("__rpc_traced", Span::mixed_site());
    let count = service.methods.len();
    let methods = service.methods.iter().enumerate().map(|(index, method)| {
        let method_const = method_const(service, method);
        quote! {
            #method_const.with_fingerprint(::rpc::shape::fingerprint::of_traced(&#traced[#index]))
        }
    });
    quote! {
        impl<#generic> #server<#generic> {
            /// Every method's signature, in order, traced once.
            fn __rpc_signatures() -> &'static [::core::result::Result<
                ::rpc::shape::Signature,
                ::rpc::shape::TraceError,
            >] {
                static SIGNATURES: ::std::sync::OnceLock<
                    ::std::vec::Vec<
                        ::core::result::Result<::rpc::shape::Signature, ::rpc::shape::TraceError>,
                    >,
                > = ::std::sync::OnceLock::new();
                SIGNATURES.get_or_init(|| ::std::vec![#(#signatures),*])
            }

            /// Every method, in order, with its signature's fingerprint. An array: a stub
            /// indexes it with a constant, so no bounds check is left.
            fn __rpc_methods() -> &'static [::rpc::Method; #count] {
                static METHODS: ::std::sync::OnceLock<[::rpc::Method; #count]> =
                    ::std::sync::OnceLock::new();
                METHODS.get_or_init(|| {
                    let #traced = Self::__rpc_signatures();
                    [#(#methods),*]
                })
            }
        }
    }
}

/// `rpc::shape::Signature::builder(kind).arg::<A>("a")...result::<R>().build()`: traces the
/// method's types (for a stream, its item type).
fn signature_expr(method: &Method<'_>) -> TokenStream {
    let kind = Ident::new(
        match method.kind {
            MethodKind::Unary => "Unary",
            MethodKind::ServerStream => "ServerStream",
            MethodKind::ClientStream => "ClientStream",
            MethodKind::Bidi => "Bidi",
        },
        Span::call_site(),
    );
    let names = arg_names(method);
    let Split {
        plain_names,
        plain_types,
        stream,
    } = split_args(method, &names);
    let arg_names = plain_names.iter().map(|name| name.unraw().to_string());
    let input_stream = stream.map(|(name, ty)| {
        let item = stream_item(ty).unwrap_or(ty);
        let name = name.unraw().to_string();
        quote!(.input_stream::<#item>(#name))
    });
    let result = match method.output {
        Some(ty) => stream_item(ty).unwrap_or(ty).to_token_stream(),
        None => quote!(()),
    };
    quote! {
        ::rpc::shape::Signature::builder(::rpc::shape::MethodKind::#kind)
            #(.arg::<#plain_types>(#arg_names))*
            #input_stream
            .result::<#result>()
            .build()
    }
}

/// The generic parameter of the `Service` impl. Not `S`: the dispatch closures name the
/// user's argument types, and one of them could be a type called `S`.
fn impl_generic() -> Ident {
    Ident::new("__RpcService", Span::call_site())
}

fn request_param() -> Ident {
    Ident::new("__rpc_request", Span::mixed_site())
}

/// `impl rpc::Service for ServeCalculator<S>`: the method list and the dispatch `match`.
fn service_impl(service: &Service<'_>) -> TokenStream {
    let (trait_ident, server) = (service.ident, &service.server);
    let service_name = service.name();
    let generic = impl_generic();
    let request = request_param();

    let consts: Vec<Ident> = (0..service.methods.len())
        .map(|index| format_ident!("__RPC_METHOD_{}", index, span = Span::mixed_site()))
        .collect();
    let const_defs = service.methods.iter().zip(&consts).map(|(method, konst)| {
        let name = method.name();
        quote! {
            const #konst: ::rpc::MethodId = ::rpc::MethodId::of(#service_name, #name);
        }
    });
    let arms = service
        .methods
        .iter()
        .zip(&consts)
        .map(|(method, konst)| dispatch_arm(service, method, konst));
    let body = if service.methods.is_empty() {
        quote!(#request.unknown_method())
    } else {
        quote! {
            #(#const_defs)*
            match #request.method().id() {
                #(#arms)*
                _ => #request.unknown_method(),
            }
        }
    };

    quote! {
        impl<#generic> ::rpc::Service for #server<#generic>
        where
            #generic: #trait_ident + ::core::marker::Send + ::core::marker::Sync + 'static,
        {
            fn name(&self) -> &'static str {
                #service_name
            }

            fn methods(&self) -> &'static [::rpc::Method] {
                Self::__rpc_methods().as_slice()
            }

            fn signature(
                &self,
                method: ::rpc::MethodId,
            ) -> ::core::option::Option<
                &'static ::core::result::Result<::rpc::shape::Signature, ::rpc::shape::TraceError>,
            > {
                let methods = Self::__rpc_methods();
                let signatures = Self::__rpc_signatures();
                ::core::iter::Iterator::position(&mut methods.iter(), |m| m.id() == method)
                    .map(|index| &signatures[index])
            }

            // Serving a deprecated method is not a use of it: only its callers are warned.
            #[allow(deprecated)]
            fn call(&self, #request: ::rpc::Request) -> ::rpc::Dispatch {
                #body
            }
        }
    }
}

/// One arm of the dispatch `match`: decode the arguments, call the trait method, reply, in
/// the way the method's kind asks for.
fn dispatch_arm(service: &Service<'_>, method: &Method<'_>, konst: &Ident) -> TokenStream {
    let (trait_ident, ident) = (service.ident, method.ident);
    let generic = impl_generic();
    let request = request_param();
    let service_local = Ident::new("__rpc_service", Span::mixed_site());
    let dispatcher = Ident::new(method.kind.dispatcher(), Span::call_site());

    let names = arg_names(method);
    let call = quote! {
        <#generic as #trait_ident>::#ident(&*#service_local #(, #names)*).await
    };
    let Split {
        plain_names,
        plain_types,
        stream,
    } = split_args(method, &names);
    // A stream argument is handed to the closure apart from the arguments decoded from the
    // request body.
    let stream_param = stream.map(|(name, ty)| quote!(, #name: #ty));
    quote! {
        #konst => {
            let #service_local = ::core::clone::Clone::clone(&self.service);
            #request.#dispatcher(
                move |(#(#plain_names,)*): (#(#plain_types,)*) #stream_param| async move { #call }
            )
        }
    }
}

/// `CalculatorClient`, its constructors and one method per trait method.
fn client_struct(service: &Service<'_>) -> TokenStream {
    let (vis, trait_ident, client) = (service.vis, service.ident, &service.client);
    let struct_doc = format!(
        " Client for [`{trait_ident}`]: one method per trait method. Cheap to clone; clones share one connection."
    );
    let methods = service
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| client_method(service, method, index));

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

/// One client stub method: the trait method's parameters, returning an `rpc::Call`. It
/// carries the trait method's docs, `#[deprecated]` and `#[must_use]`, so that its callers
/// read and are warned what the trait's callers would be.
fn client_method(service: &Service<'_>, method: &Method<'_>, index: usize) -> TokenStream {
    let (trait_ident, ident, server) = (service.ident, method.ident, &service.server);
    let method_local = Ident::new("__rpc_method", Span::mixed_site());
    let names = arg_names(method);
    let types = method.args.iter().map(|arg| arg.ty);
    let output = output_type(method);
    let docs = &method.docs;
    let default_doc = docs.is_empty().then(|| {
        let doc = format!(" Calls [`{trait_ident}::{ident}`] on the server.");
        quote!(#[doc = #doc])
    });
    let caller_attrs = &method.caller_attrs;
    // The stub mirrors the trait method's parameter list, which the user chose (and can
    // `allow` on the trait); don't warn a second time here.
    let allow = quote!(#[allow(clippy::too_many_arguments)]);
    let constructor = Ident::new(method.kind.client_call(), Span::call_site());
    let Split {
        plain_names,
        plain_types,
        stream,
    } = split_args(method, &names);
    // The request body holds every argument but a stream, which travels on its own.
    let stream_arg = stream.map(|(name, _)| quote!(, #name));
    quote! {
        #(#docs)*
        #default_doc
        #(#caller_attrs)*
        #allow
        pub fn #ident(&self #(, #names: #types)*) -> ::rpc::Call<(#(#plain_types,)*), #output> {
            // Its id and signature fingerprint, computed once, on the first call.
            let #method_local = #server::<()>::__rpc_methods()[#index];
            ::rpc::Client::#constructor(&self.client, #method_local, (#(#plain_names,)*) #stream_arg)
        }
    }
}

/// The `rpc::Method` value of `method`, a constant expression: marked idempotent when the
/// trait says so. [`signature_tables`] adds the fingerprint; the server's method list and
/// the client stub share the result.
fn method_const(service: &Service<'_>, method: &Method<'_>) -> TokenStream {
    let service_name = service.name();
    let name = method.name();
    let idempotent = method.is_idempotent().then(|| quote!(.idempotent()));
    quote!(::rpc::Method::new(#service_name, #name) #idempotent)
}

/// A method's arguments, split into those in the request body and the stream the client
/// sends, if its kind has one (always the last argument).
struct Split<'m> {
    plain_names: &'m [Ident],
    plain_types: Vec<&'m Type>,
    stream: Option<(&'m Ident, &'m Type)>,
}

fn split_args<'m>(method: &'m Method<'_>, names: &'m [Ident]) -> Split<'m> {
    let types: Vec<&'m Type> = method.args.iter().map(|arg| arg.ty).collect();
    match (
        method.kind.has_input_stream(),
        names.split_last(),
        types.split_last(),
    ) {
        (true, Some((stream_name, plain_names)), Some((stream_ty, plain_types))) => Split {
            plain_names,
            plain_types: plain_types.to_vec(),
            stream: Some((stream_name, stream_ty)),
        },
        _ => Split {
            plain_names: names,
            plain_types: types,
            stream: None,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(input: TokenStream) -> String {
        crate::expand_service(TokenStream::new(), input).to_string()
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
            "fn into_service (self) -> ServeCalculator < Self >",
            "pub struct ServeCalculator < S >",
            "impl < __RpcService > :: rpc :: Service for ServeCalculator < __RpcService >",
            "fn call (& self , __rpc_request : :: rpc :: Request) -> :: rpc :: Dispatch",
            "match __rpc_request . method () . id ()",
            "const __RPC_METHOD_0 : :: rpc :: MethodId = :: rpc :: MethodId :: of (\"Calculator\" , \"add\")",
            "move | (a , b ,) : (i64 , i64 ,) | async move { < __RpcService as Calculator > :: add (& * __rpc_service , a , b) . await }",
            "move | () : () | async move",
            "move | (x ,) : (String ,) |",
            "_ => __rpc_request . unknown_method ()",
            "pub struct CalculatorClient { client : :: rpc :: Client , }",
            "# [doc = r\" Adds two numbers.\"] # [allow (clippy :: too_many_arguments)] pub fn add (& self , a : i64 , b : i64) -> :: rpc :: Call < (i64 , i64 ,) , i64 >",
            "let __rpc_method = ServeCalculator :: < () > :: __rpc_methods () [0usize] ; :: rpc :: Client :: call (& self . client , __rpc_method , (a , b ,))",
            "fn __rpc_signatures () -> & 'static [:: core :: result :: Result < :: rpc :: shape :: Signature , :: rpc :: shape :: TraceError , >]",
            ":: rpc :: shape :: Signature :: builder (:: rpc :: shape :: MethodKind :: Unary) . arg :: < i64 > (\"a\") . arg :: < i64 > (\"b\") . result :: < i64 > () . build ()",
            ":: rpc :: shape :: Signature :: builder (:: rpc :: shape :: MethodKind :: Unary) . result :: < () > () . build ()",
            ":: rpc :: Method :: new (\"Calculator\" , \"add\") . with_fingerprint (:: rpc :: shape :: fingerprint :: of_traced (& __rpc_traced [0usize]))",
            "fn methods (& self) -> & 'static [:: rpc :: Method] { Self :: __rpc_methods () . as_slice () }",
            "fn __rpc_methods () -> & 'static [:: rpc :: Method ; 3usize]",
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
        assert!(out.contains("struct ServeMatch"), "{out}");
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
        assert!(!out.contains("ServeBroken"), "{out}");
    }

    #[test]
    fn rejects_non_traits_and_arguments() {
        let out = crate::expand_service(
            quote!(foo),
            quote!(
                struct Foo;
            ),
        )
        .to_string();
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(out.contains("struct Foo ;"), "{out}");
    }

    #[test]
    fn each_kind_uses_its_dispatcher_and_client_call() {
        let out = expand(quote! {
            pub trait Files {
                async fn size(&self, name: String) -> u64;
                async fn read(&self, name: String) -> rpc::Stream<Vec<u8>>;
                async fn write(&self, name: String, data: rpc::Stream<Vec<u8>>) -> u64;
                async fn echo(&self, data: rpc::Stream<Vec<u8>>) -> rpc::Stream<Vec<u8>>;
            }
        });
        for needle in [
            "__rpc_request . dispatch (move | (name ,) : (String ,) |",
            "__rpc_request . dispatch_streaming_response (move | (name ,) : (String ,) |",
            "__rpc_request . dispatch_streaming_request (move | (name ,) : (String ,) , data : rpc :: Stream < Vec < u8 > > |",
            "__rpc_request . dispatch_bidi (move | () : () , data : rpc :: Stream < Vec < u8 > > |",
            ":: rpc :: Client :: call (& self . client , __rpc_method , (name ,))",
            ":: rpc :: Client :: call_streaming_response (& self . client , __rpc_method , (name ,))",
            ":: rpc :: Client :: call_streaming_request (& self . client , __rpc_method , (name ,) , data)",
            ":: rpc :: Client :: call_bidi (& self . client , __rpc_method , () , data)",
            "Signature :: builder (:: rpc :: shape :: MethodKind :: ServerStream) . arg :: < String > (\"name\") . result :: < Vec < u8 > > ()",
            "Signature :: builder (:: rpc :: shape :: MethodKind :: ClientStream) . arg :: < String > (\"name\") . input_stream :: < Vec < u8 > > (\"data\") . result :: < u64 > ()",
            "Signature :: builder (:: rpc :: shape :: MethodKind :: Bidi) . input_stream :: < Vec < u8 > > (\"data\") . result :: < Vec < u8 > > ()",
            "pub fn write (& self , name : String , data : rpc :: Stream < Vec < u8 > >) -> :: rpc :: Call < (String ,) , u64 >",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
    }

    #[test]
    fn caller_attributes_reach_the_stub() {
        let out = expand(quote! {
            pub trait Legacy {
                /// Old.
                #[deprecated(note = "use `add`")]
                #[must_use]
                #[allow(unused)]
                async fn old_add(&self, a: i64) -> i64;
            }
        });
        let stub = &out[out.find("impl LegacyClient").expect("client impl")..];
        let stub = &stub[stub.find("pub fn old_add").map(|end| ..end).expect("stub")];
        for needle in [
            "# [doc = r\" Old.\"]",
            "# [deprecated (note = \"use `add`\")]",
            "# [must_use]",
        ] {
            assert!(
                stub.contains(needle),
                "missing {needle:?} before the stub in\n{out}"
            );
        }
        assert!(!stub.contains("allow (unused)"), "{out}");
    }

    #[test]
    fn idempotent_marks_the_method_on_both_sides_and_is_stripped() {
        let out = expand(quote! {
            pub trait Store {
                /// Reads.
                #[idempotent]
                async fn get(&self, key: String) -> u64;
                async fn put(&self, key: String, value: u64);
            }
        });
        let marked = ":: rpc :: Method :: new (\"Store\" , \"get\") . idempotent ()";
        // Once, in the method table that the server's list and the stub both read.
        assert_eq!(out.matches(marked).count(), 1, "{out}");
        assert!(
            out.contains(
                ":: rpc :: Method :: new (\"Store\" , \"get\") . idempotent () . with_fingerprint"
            ),
            "{out}"
        );
        assert!(
            out.contains("let __rpc_method = ServeStore :: < () > :: __rpc_methods () [0usize] ;"),
            "{out}"
        );
        assert!(
            !out.contains("Method :: new (\"Store\" , \"put\") . idempotent"),
            "{out}"
        );
        assert!(!out.contains("# [idempotent]"), "{out}");
        // The wire id is the same as an unmarked method's.
        assert!(
            out.contains("MethodId :: of (\"Store\" , \"get\")"),
            "{out}"
        );
    }

    #[test]
    fn misused_idempotent_is_an_error_and_stripped_from_the_fallback() {
        let out = expand(quote! {
            pub trait Store {
                #[idempotent(true)]
                async fn get(&self) -> u64;
            }
        });
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("takes no arguments"), "{out}");
        assert!(!out.contains("# [idempotent"), "{out}");
    }

    #[test]
    fn attribute_arguments_rename_the_generated_types() {
        let out = crate::expand_service(
            quote!(server = LoopHost, client = LoopRemote),
            quote!(
                pub trait Loop {
                    async fn tick(&self);
                }
            ),
        )
        .to_string();
        assert!(out.contains("pub struct LoopHost < S >"), "{out}");
        assert!(
            out.contains("fn into_service (self) -> LoopHost < Self >"),
            "{out}"
        );
        assert!(out.contains("pub struct LoopRemote {"), "{out}");
        assert!(
            !out.contains("ServeLoop") && !out.contains("LoopClient"),
            "{out}"
        );
    }
}
