//! A typed model of the annotated trait.
//!
//! Building the model never fails: anything unusual is recorded as-is (with
//! references to the original tokens, for spans) and judged later by
//! [`crate::valid`]. [`crate::expand`] only runs on a model that passed
//! validation.

use quote::format_ident;
use syn::ext::IdentExt as _;
use syn::{
    Attribute, Block, FnArg, Ident, ItemTrait, Pat, PatType, Receiver, Signature, TraitItem,
    TraitItemFn, Type, Visibility,
};

use crate::attr::Args;

/// The annotated trait.
pub(crate) struct Service<'a> {
    /// The trait exactly as written.
    pub(crate) original: &'a ItemTrait,
    /// Attributes on the trait (docs included).
    pub(crate) attrs: &'a [Attribute],
    /// Visibility of the trait; the generated types get the same one.
    pub(crate) vis: &'a Visibility,
    /// Name of the trait.
    pub(crate) ident: &'a Ident,
    /// The trait's `fn` items, in order.
    pub(crate) methods: Vec<Method<'a>>,
    /// Items that are not methods (associated types, consts, macros, ...).
    pub(crate) other_items: Vec<&'a TraitItem>,
    /// The generated wrapper that implements `rpc::Service`: `server = Name`, or
    /// `Serve<Trait>`.
    pub(crate) server: Ident,
    /// The generated client stub: `client = Name`, or `<Trait>Client`.
    pub(crate) client: Ident,
    /// Whether `client = Name` was given (errors about the names point at what was written).
    pub(crate) client_given: bool,
}

/// One `fn` item of the trait.
pub(crate) struct Method<'a> {
    /// The method exactly as written.
    pub(crate) original: &'a TraitItemFn,
    /// The attributes kept on the trait method: all of them (docs included) but
    /// `#[idempotent]`, which is the macro's own.
    pub(crate) attrs: Vec<&'a Attribute>,
    /// Every `#[idempotent]` on the method, as written (validation wants exactly one, bare,
    /// or none).
    pub(crate) idempotent: Vec<&'a Attribute>,
    /// The `#[doc]` attributes only, copied onto the client stub.
    pub(crate) docs: Vec<&'a Attribute>,
    /// The attributes that speak to callers (`#[deprecated]`, `#[must_use]`), copied onto
    /// the client stub so that calling it warns as calling the trait method would.
    pub(crate) caller_attrs: Vec<&'a Attribute>,
    /// Which way streams flow, decided once from the argument and return types.
    pub(crate) kind: MethodKind,
    /// Name of the method.
    pub(crate) ident: &'a Ident,
    /// The `self` parameter, if the first parameter is one.
    pub(crate) receiver: Option<&'a Receiver>,
    /// The non-`self` parameters.
    pub(crate) args: Vec<Arg<'a>>,
    /// The declared return type; `None` for `()`.
    pub(crate) output: Option<&'a Type>,
    /// The default body, if the trait provides one.
    pub(crate) default: Option<&'a Block>,
}

/// The four shapes of a call: whether the client sends a stream (the last argument is an
/// `rpc::Stream<T>`) and whether the server sends one back (the return type is). The server
/// dispatcher and the client stub both follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MethodKind {
    /// Arguments in, one value out.
    Unary,
    /// Arguments in, a stream out.
    ServerStream,
    /// Arguments and a stream in, one value out.
    ClientStream,
    /// Arguments and a stream in, a stream out.
    Bidi,
}

impl MethodKind {
    fn new(input_stream: bool, output_stream: bool) -> Self {
        match (input_stream, output_stream) {
            (false, false) => MethodKind::Unary,
            (false, true) => MethodKind::ServerStream,
            (true, false) => MethodKind::ClientStream,
            (true, true) => MethodKind::Bidi,
        }
    }

    /// Whether the last argument is the stream the client sends, apart from the request body.
    pub(crate) fn has_input_stream(self) -> bool {
        matches!(self, MethodKind::ClientStream | MethodKind::Bidi)
    }

    /// The `rpc::Request` method that serves this kind.
    pub(crate) fn dispatcher(self) -> &'static str {
        match self {
            MethodKind::Unary => "dispatch",
            MethodKind::ServerStream => "dispatch_streaming_response",
            MethodKind::ClientStream => "dispatch_streaming_request",
            MethodKind::Bidi => "dispatch_bidi",
        }
    }

    /// The `rpc::Client` method that calls this kind.
    pub(crate) fn client_call(self) -> &'static str {
        match self {
            MethodKind::Unary => "call",
            MethodKind::ServerStream => "call_streaming_response",
            MethodKind::ClientStream => "call_streaming_request",
            MethodKind::Bidi => "call_bidi",
        }
    }
}

/// One non-`self` parameter of a method.
pub(crate) struct Arg<'a> {
    /// The parameter exactly as written.
    pub(crate) original: &'a PatType,
    /// The binding, when the pattern is a plain (possibly `mut`) identifier.
    pub(crate) name: Option<&'a Ident>,
    /// Whether that identifier is declared `mut`.
    pub(crate) mutable: bool,
    /// The declared type.
    pub(crate) ty: &'a Type,
}

impl<'a> Service<'a> {
    /// Builds the model of `item`, with the attribute's arguments `args`.
    ///
    /// The default server name is `Serve<Trait>`, not `<Trait>Server`: users name their
    /// implementations `<Trait>Server` (tarpc's examples do: `struct HelloServer; impl World
    /// for HelloServer`), and a generated type of that name would collide with theirs. A verb
    /// first is a name people do not give their own types; tarpc generates the same.
    pub(crate) fn from_trait(item: &'a ItemTrait, args: Args) -> Self {
        let mut methods = Vec::new();
        let mut other_items = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(method) => methods.push(Method::from_fn(method)),
                other => other_items.push(other),
            }
        }
        let ident = &item.ident;
        let client_given = args.client.is_some();
        Service {
            original: item,
            attrs: &item.attrs,
            vis: &item.vis,
            ident,
            methods,
            other_items,
            server: args
                .server
                .unwrap_or_else(|| format_ident!("Serve{}", ident, span = ident.span())),
            client: args
                .client
                .unwrap_or_else(|| format_ident!("{}Client", ident, span = ident.span())),
            client_given,
        }
    }

    /// The service name on the wire: the trait name without any `r#`.
    pub(crate) fn name(&self) -> String {
        self.ident.unraw().to_string()
    }
}

impl<'a> Method<'a> {
    fn from_fn(method: &'a TraitItemFn) -> Self {
        let sig: &Signature = &method.sig;
        let mut receiver = None;
        let mut args = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r),
                FnArg::Typed(typed) => args.push(Arg::from_pat_type(typed)),
            }
        }
        let output = match &sig.output {
            syn::ReturnType::Default => None,
            syn::ReturnType::Type(_, ty) => Some(&**ty),
        };
        let input_stream = args
            .last()
            .is_some_and(|arg: &Arg<'_>| stream_item(arg.ty).is_some());
        let output_stream = output.is_some_and(|ty| stream_item(ty).is_some());
        let attrs_named = |names: &[&str]| {
            method
                .attrs
                .iter()
                .filter(|attr| names.iter().any(|name| attr.path().is_ident(name)))
                .collect()
        };
        let (idempotent, attrs) = method
            .attrs
            .iter()
            .partition(|attr| is_idempotent_attr(attr));
        Method {
            original: method,
            attrs,
            idempotent,
            docs: attrs_named(&["doc"]),
            caller_attrs: attrs_named(&["deprecated", "must_use"]),
            kind: MethodKind::new(input_stream, output_stream),
            ident: &sig.ident,
            receiver,
            args,
            output,
            default: method.default.as_ref(),
        }
    }

    /// The method name on the wire: the identifier without any `r#`.
    pub(crate) fn name(&self) -> String {
        self.ident.unraw().to_string()
    }

    /// Whether the method is marked `#[idempotent]` (once, bare: checked by validation).
    pub(crate) fn is_idempotent(&self) -> bool {
        !self.idempotent.is_empty()
    }

    /// The signature exactly as written.
    pub(crate) fn sig(&self) -> &'a Signature {
        &self.original.sig
    }
}

/// `#[idempotent]`: the macro's helper attribute on a method, whatever its arguments (they
/// are judged by validation). Stripped from the generated trait.
pub(crate) fn is_idempotent_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("idempotent")
}

/// The item type of a stream type as the trait writes it: `Stream<T>`, `rpc::Stream<T>` or
/// `::rpc::Stream<T>`, also inside parentheses or the invisible group a type passed through
/// `macro_rules!` as `$t:ty` arrives in.
pub(crate) fn stream_item(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Group(group) => stream_item(&group.elem),
        Type::Paren(paren) => stream_item(&paren.elem),
        Type::Path(path) if path.qself.is_none() => stream_item_of_path(&path.path),
        _ => None,
    }
}

/// Like [`stream_item`], for a path.
pub(crate) fn stream_item_of_path(path: &syn::Path) -> Option<&Type> {
    let segments: Vec<_> = path.segments.iter().collect();
    let last = match segments.as_slice() {
        [last] if path.leading_colon.is_none() => last,
        [krate, last] if krate.ident == "rpc" && krate.arguments.is_none() => last,
        _ => return None,
    };
    if last.ident != "Stream" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>().as_slice() {
        [syn::GenericArgument::Type(item)] => Some(item),
        _ => None,
    }
}

impl<'a> Arg<'a> {
    fn from_pat_type(original: &'a PatType) -> Self {
        let (name, mutable) = match &*original.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                (Some(&pat.ident), pat.mutability.is_some())
            }
            _ => (None, false),
        };
        Arg {
            original,
            name,
            mutable,
            ty: &original.ty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_a_service() {
        let item: ItemTrait = syn::parse_quote! {
            pub trait Calculator {
                /// Adds two numbers.
                #[deprecated]
                #[must_use]
                #[allow(unused)]
                async fn add(&self, a: i64, mut b: i64) -> i64;
                async fn r#type(&self) { }
                type Nope;
            }
        };
        let service = Service::from_trait(&item, Args::default());
        assert_eq!(service.name(), "Calculator");
        assert_eq!(service.methods.len(), 2);
        assert_eq!(service.other_items.len(), 1);

        let add = &service.methods[0];
        assert_eq!(add.name(), "add");
        assert_eq!(add.docs.len(), 1);
        assert_eq!(add.caller_attrs.len(), 2);
        assert!(add.receiver.is_some());
        assert_eq!(add.args.len(), 2);
        assert!(add.args.iter().all(|arg| arg.name.is_some()));
        assert!(!add.args[0].mutable);
        assert!(add.args[1].mutable);
        assert!(add.output.is_some());
        assert!(add.default.is_none());

        let ty = &service.methods[1];
        assert_eq!(ty.name(), "type");
        assert!(ty.output.is_none());
        assert!(ty.default.is_some());
    }

    #[test]
    fn recognises_stream_arguments_and_returns() {
        let item: ItemTrait = syn::parse_quote! {
            trait Chat {
                async fn chat(&self, name: String, lines: rpc::Stream<String>) -> Stream<Line>;
                async fn plain(&self, n: Vec<u8>) -> ::rpc::Stream<u8>;
                async fn other(&self, s: futures::Stream<u8>) -> Option<u8>;
                async fn upload(&self, data: Stream<Vec<u8>>) -> u64;
            }
        };
        let service = Service::from_trait(&item, Args::default());
        let kinds: Vec<MethodKind> = service.methods.iter().map(|method| method.kind).collect();
        assert_eq!(
            kinds,
            [
                MethodKind::Bidi,
                MethodKind::ServerStream,
                MethodKind::Unary,
                MethodKind::ClientStream
            ]
        );
    }

    #[test]
    fn recognises_a_stream_type_in_an_invisible_group() {
        // What `macro_rules!` hands on for a `$t:ty` fragment: the type in a group with no
        // delimiters.
        let stream: Type = syn::parse_quote!(rpc::Stream<u32>);
        let grouped = Type::Group(syn::TypeGroup {
            group_token: Default::default(),
            elem: Box::new(stream),
        });
        let item = stream_item(&grouped).expect("a stream");
        assert_eq!(quote::ToTokens::to_token_stream(item).to_string(), "u32");
        let paren: Type = syn::parse_quote!((rpc::Stream<u32>));
        assert!(stream_item(&paren).is_some());
        let plain: Type = syn::parse_quote!(Vec<u32>);
        let grouped = Type::Group(syn::TypeGroup {
            group_token: Default::default(),
            elem: Box::new(plain),
        });
        assert!(stream_item(&grouped).is_none());
    }

    #[test]
    fn takes_idempotent_apart_from_the_other_attributes() {
        let item: ItemTrait = syn::parse_quote! {
            trait Store {
                /// Reads.
                #[idempotent]
                #[must_use]
                async fn get(&self, key: String) -> u64;
                async fn put(&self, key: String, value: u64);
                #[idempotent(true)]
                #[idempotent]
                async fn twice(&self);
            }
        };
        let service = Service::from_trait(&item, Args::default());
        let [get, put, twice] = &service.methods[..] else {
            panic!("three methods");
        };
        assert!(get.is_idempotent() && !put.is_idempotent() && twice.is_idempotent());
        assert_eq!((get.idempotent.len(), get.attrs.len()), (1, 2));
        assert!(get.attrs.iter().all(|attr| !is_idempotent_attr(attr)));
        assert_eq!((twice.idempotent.len(), twice.attrs.len()), (2, 0));
    }

    #[test]
    fn records_unusual_patterns() {
        let item: ItemTrait = syn::parse_quote! {
            trait T { async fn f(&self, (a, b): (u8, u8), ref c: u8, _: u8); }
        };
        let service = Service::from_trait(&item, Args::default());
        assert!(service.methods[0].args.iter().all(|arg| arg.name.is_none()));
    }
}
