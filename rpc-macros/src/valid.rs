//! Validation of the [`crate::ast`] model.
//!
//! Every check runs, and every mistake becomes one `syn::Error` spanned on the
//! offending tokens; they are combined so the user sees all of them at once.

use std::collections::HashMap;

use quote::{quote, ToTokens};
use syn::ext::IdentExt as _;
use syn::visit::{self, Visit};
use syn::{Error, GenericParam, Item, Lifetime, Type, TypeImplTrait, TypeReference};

use crate::ast::{Arg, Method, Service};

/// Method names the generated client stub defines itself.
const CLIENT_METHODS: &[&str] = &["connect", "new", "client"];

/// Name of the provided method added to the trait.
const INTO_SERVICE: &str = "into_service";

/// Accumulates errors.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn spanned<T: ToTokens>(&mut self, tokens: T, message: impl std::fmt::Display) {
        self.push(Error::new_spanned(tokens, message));
    }

    fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Checks everything; `Err` holds all mistakes, combined.
pub(crate) fn validate(service: &Service<'_>) -> syn::Result<()> {
    let mut errors = Errors::default();
    check_trait(service, &mut errors);
    for method in &service.methods {
        check_method(service, method, &mut errors);
    }
    check_names(service, &mut errors);
    check_generated_names(service, &mut errors);
    errors.finish()
}

/// The error for `#[rpc::service]` on something other than a trait, spanned
/// on the item's keyword and name where there is one.
pub(crate) fn not_a_trait(item: &Item) -> Error {
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

/// The trait, the server wrapper and the client stub are three items in one module: their
/// names must differ (only `server = ..` and `client = ..` can make them equal).
fn check_generated_names(service: &Service<'_>, errors: &mut Errors) {
    let trait_name = service.ident.unraw();
    let (server, client) = (&service.server, &service.client);
    if server.unraw() == trait_name {
        errors.spanned(
            server,
            format!(
                "the server type cannot be named like the trait `{trait_name}`: pick another name"
            ),
        );
    }
    if client.unraw() == trait_name {
        errors.spanned(
            client,
            format!(
                "the client type cannot be named like the trait `{trait_name}`: pick another name"
            ),
        );
    }
    if server.unraw() == client.unraw() {
        errors.spanned(
            if service.client_given { client } else { server },
            format!(
                "the server and the client types cannot both be named `{}`: pick another name",
                client.unraw()
            ),
        );
    }
}

fn check_trait(service: &Service<'_>, errors: &mut Errors) {
    let generics = &service.original.generics;
    if !generics.params.is_empty() {
        errors.spanned(
            generics,
            "rpc service traits cannot be generic: the client and the server must agree on \
             concrete types; remove the parameters and use concrete types in the methods",
        );
    }
    if let Some(where_clause) = &generics.where_clause {
        errors.spanned(
            where_clause,
            "rpc service traits cannot have a `where` clause: remove it",
        );
    }
    for item in &service.other_items {
        let what = match item {
            syn::TraitItem::Const(_) => "associated consts are",
            syn::TraitItem::Type(_) => "associated types are",
            syn::TraitItem::Macro(_) => "macro invocations are",
            _ => "this item is",
        };
        errors.spanned(
            item,
            format!(
                "{what} not supported in an rpc service trait: it may only contain \
                 `async fn` methods taking `&self`; move this item to another trait"
            ),
        );
    }
}

fn check_method(service: &Service<'_>, method: &Method<'_>, errors: &mut Errors) {
    let sig = method.sig();
    let name = method.ident;

    for attr in &method.attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            errors.spanned(
                attr,
                "rpc service methods cannot be conditional: the server, the client and the \
                 method list are generated for every method; put the `#[cfg]` on the whole trait",
            );
        }
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(
            constness,
            "rpc service methods cannot be `const`: remove `const`",
        );
    }
    if sig.asyncness.is_none() {
        errors.spanned(
            sig,
            format!("rpc service methods must be `async fn`: write `async fn {name}(&self, ...)`"),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(
            unsafety,
            "rpc service methods cannot be `unsafe`: a remote caller cannot uphold safety \
             contracts; remove `unsafe`",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(
            abi,
            "rpc service methods cannot be `extern`: remove the ABI, they are called through \
             the rpc protocol",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(
            variadic,
            "rpc service methods cannot be variadic: take a `Vec<T>` instead",
        );
    }

    for param in &sig.generics.params {
        let message = match param {
            GenericParam::Lifetime(_) => {
                "rpc service methods cannot have lifetime parameters: arguments and return \
                 values must be owned (they cross the network); remove the lifetime"
            }
            GenericParam::Type(_) => {
                "rpc service methods cannot be generic: the server must know the concrete \
                 argument types to deserialize them; use concrete types"
            }
            GenericParam::Const(_) => {
                "rpc service methods cannot have const parameters: pass the value as an \
                 ordinary argument instead"
            }
        };
        errors.spanned(param, message);
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(
            where_clause,
            "rpc service methods cannot have a `where` clause: remove it and use concrete types",
        );
    }

    check_idempotent(method, errors);
    check_receiver(method, errors);
    let last = method.args.len().saturating_sub(1);
    for (index, arg) in method.args.iter().enumerate() {
        check_arg(arg, index == last, method, errors);
    }
    if let Some(output) = method.output {
        check_type(output, Position::Return, true, method, errors);
    }

    let unraw = method.name();
    if unraw == INTO_SERVICE {
        errors.spanned(
            name,
            format!(
                "`{INTO_SERVICE}` is generated by #[rpc::service] on every service trait: \
                 rename this method"
            ),
        );
    }
    if CLIENT_METHODS.contains(&unraw.as_str()) {
        errors.spanned(
            name,
            format!(
                "a method named `{unraw}` would clash with the generated `{}::{unraw}`: \
                 rename this method",
                service.client.unraw()
            ),
        );
    }
}

/// `#[idempotent]`: bare, at most once, and not on a method that takes a client stream.
fn check_idempotent(method: &Method<'_>, errors: &mut Errors) {
    for (index, attr) in method.idempotent.iter().enumerate() {
        match &attr.meta {
            syn::Meta::Path(_) => {}
            syn::Meta::List(list) => errors.push(Error::new(
                list.delimiter.span().join(),
                "`#[idempotent]` takes no arguments: write `#[idempotent]` to mark the method, \
                 or leave the attribute out",
            )),
            syn::Meta::NameValue(name_value) => errors.spanned(
                {
                    let (eq, value) = (&name_value.eq_token, &name_value.value);
                    quote!(#eq #value)
                },
                "`#[idempotent]` takes no value: write `#[idempotent]` to mark the method, \
                 or leave the attribute out",
            ),
        }
        if index > 0 {
            errors.spanned(attr, "`#[idempotent]` is given twice: keep one");
        }
    }
    if let (Some(first), true) = (method.idempotent.first(), method.kind.has_input_stream()) {
        errors.spanned(
            first,
            "a method that takes an `rpc::Stream` argument cannot be `#[idempotent]`: retrying \
             the call would mean sending the stream again, and a stream is consumed as it is \
             sent; remove `#[idempotent]`",
        );
    }
}

fn check_receiver(method: &Method<'_>, errors: &mut Errors) {
    let sig = method.sig();
    let Some(receiver) = method.receiver else {
        errors.push(Error::new(
            sig.paren_token.span.join(),
            format!(
                "rpc service methods must take `&self` as their first parameter: write \
                 `async fn {}(&self, ...)`",
                method.ident
            ),
        ));
        return;
    };
    let is_ref_self = receiver.colon_token.is_none() && receiver.reference.is_some();
    let message = if !is_ref_self {
        "rpc service methods must take `&self`: the server shares one instance between \
         concurrent calls; write `&self`"
    } else if receiver.mutability.is_some() {
        "rpc service methods must take `&self`, not `&mut self`: the server shares one instance \
         between concurrent calls; keep mutable state behind a `Mutex` or an atomic"
    } else if receiver
        .reference
        .as_ref()
        .is_some_and(|(_, lifetime)| lifetime.is_some())
    {
        "rpc service methods must take a plain `&self`: remove the lifetime"
    } else {
        return;
    };
    errors.spanned(receiver, message);
}

fn check_arg(arg: &Arg<'_>, last: bool, method: &Method<'_>, errors: &mut Errors) {
    if arg.name.is_none() {
        errors.spanned(
            &arg.original.pat,
            "rpc arguments must be plain identifiers (they name the client stub's parameters): \
             write `name: Type` and destructure in the method body",
        );
    }
    check_type(arg.ty, Position::Argument, last, method, errors);
}

/// Where a type appears, for the wording of messages.
#[derive(Clone, Copy)]
enum Position {
    Argument,
    Return,
}

impl Position {
    fn owned_because(self) -> &'static str {
        match self {
            Position::Argument => "rpc arguments must be owned (the server deserializes them)",
            Position::Return => "rpc return values must be owned (the client deserializes them)",
        }
    }
}

/// `stream_allowed`: the whole type may be `rpc::Stream<T>` (the return type, or the last
/// argument); then its item type is checked like any other type.
fn check_type(
    ty: &Type,
    position: Position,
    stream_allowed: bool,
    method: &Method<'_>,
    errors: &mut Errors,
) {
    // Uses of the method's own lifetime parameters were reported with the
    // parameter; reporting every use as well would be a cascade.
    let declared = method
        .sig()
        .generics
        .lifetimes()
        .map(|param| &param.lifetime.ident)
        .collect();
    let mut checker = TypeChecker {
        position,
        declared,
        errors,
    };
    match crate::ast::stream_item(ty).filter(|_| stream_allowed) {
        Some(item) => checker.visit_type(item),
        None => checker.visit_type(ty),
    }
}

/// Finds references, `impl Trait`, non-`'static` lifetimes and `Self` in a type.
struct TypeChecker<'e> {
    position: Position,
    declared: Vec<&'e syn::Ident>,
    errors: &'e mut Errors,
}

impl<'ast> Visit<'ast> for TypeChecker<'_> {
    fn visit_type_reference(&mut self, reference: &'ast TypeReference) {
        let owned = match &*reference.elem {
            Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => {
                "String".to_owned()
            }
            Type::Slice(slice) => format!("Vec<{}>", pretty(&slice.elem)),
            other => pretty(other),
        };
        let borrowed = pretty(reference);
        self.errors.spanned(
            reference,
            format!(
                "{}: use `{owned}` instead of `{borrowed}`",
                self.position.owned_because()
            ),
        );
        // Don't descend: one error per reference.
    }

    fn visit_type_impl_trait(&mut self, impl_trait: &'ast TypeImplTrait) {
        let message = match self.position {
            Position::Argument => {
                "rpc arguments cannot be `impl Trait`: the server must know the concrete type \
                 to deserialize it; use a concrete type"
            }
            Position::Return => {
                "rpc methods cannot return `impl Trait`: the client must know the concrete type \
                 to deserialize it; return a concrete type (the trait's methods already return \
                 futures, write `async fn` with the value type)"
            }
        };
        self.errors.spanned(impl_trait, message);
    }

    fn visit_type_bare_fn(&mut self, _: &'ast syn::TypeBareFn) {
        // Lifetimes and references inside a function pointer's signature are not
        // borrowed data; whether the type is serializable is left to the compiler.
    }

    fn visit_lifetime(&mut self, lifetime: &'ast Lifetime) {
        if lifetime.ident != "static" && !self.declared.contains(&&lifetime.ident) {
            self.errors.spanned(
                lifetime,
                format!(
                    "{}: the only lifetime allowed in its type is `'static`",
                    self.position.owned_because()
                ),
            );
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if crate::ast::stream_item_of_path(path).is_some() {
            let message = match self.position {
                Position::Argument => {
                    "an rpc::Stream argument must be the method's last argument, and be the whole type: `async fn upload(&self, name: String, data: rpc::Stream<Chunk>)`"
                }
                Position::Return => {
                    "an rpc::Stream return must be the whole return type; to end a stream with an application error, stream `Result`s: `-> rpc::Stream<Result<T, E>>`"
                }
            };
            self.errors.spanned(path, message);
            return;
        }
        if path.leading_colon.is_none()
            && path
                .segments
                .first()
                .is_some_and(|segment| segment.ident == "Self")
        {
            let what = match self.position {
                Position::Argument => "rpc argument types",
                Position::Return => "rpc return types",
            };
            self.errors.spanned(
                path,
                format!(
                    "{what} cannot mention `Self`: the client does not know the implementing \
                     type; name the concrete type"
                ),
            );
            return;
        }
        visit::visit_path(self, path);
    }
}

/// Renders a type roughly as a person would write it (`&[u8]`, not `& [u8]`).
fn pretty(tokens: &impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (from, to) in [
        ("& ", "&"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
        (":: ", "::"),
        (" ::", "::"),
        ("( ", "("),
        (" )", ")"),
        ("' ", "'"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// Methods whose names are equal once `r#` is stripped would generate clashing
/// client methods and wire names.
fn check_names(service: &Service<'_>, errors: &mut Errors) {
    let mut seen: HashMap<String, &syn::Ident> = HashMap::new();
    for method in &service.methods {
        let name = method.name();
        if let Some(first) = seen.get(&name) {
            let message = if *first == method.ident {
                format!("duplicate rpc method `{name}`: rename one of them")
            } else {
                format!(
                    "duplicate rpc method `{name}`: `{first}` and `{}` are the same name once \
                     `r#` is stripped; rename one of them",
                    method.ident
                )
            };
            errors.spanned(method.ident, message);
        } else {
            seen.insert(name, method.ident);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::ItemTrait;

    fn errors(item: ItemTrait) -> Vec<String> {
        let service = Service::from_trait(&item, crate::attr::Args::default());
        match validate(&service) {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn pretty_prints_types() {
        let ty: Type = syn::parse_quote!(&'static mut std::collections::HashMap<String, [u8; 4]>);
        assert_eq!(
            pretty(&ty),
            "&'static mut std::collections::HashMap<String, [u8; 4]>"
        );
    }

    #[test]
    fn accepts_a_valid_service() {
        let item = syn::parse_quote! {
            pub trait Calculator: Sized {
                /// Adds.
                async fn add(&self, a: i64, mut b: i64) -> i64;
                async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
                async fn ping(&self);
                async fn r#type(&self, name: std::borrow::Cow<'static, str>) -> Vec<u8> { Vec::new() }
            }
        };
        assert_eq!(errors(item), Vec::<String>::new());
    }

    #[test]
    fn collects_every_error() {
        let item = syn::parse_quote! {
            trait Bad<T> where T: Clone {
                fn not_async(&self);
                async fn no_receiver(a: u8);
                async fn by_value(self);
                async fn by_mut(&mut self);
                async fn boxed(self: Box<Self>);
                async fn generic<U, const N: usize>(&self);
                async fn lifetimes<'a>(&self, a: Cow<'a, str>, b: Cow<'b, str>);
                async fn clause(&self) where u8: Copy;
                async fn borrowed(&self, a: &str, b: Vec<&[u8]>, c: impl Into<u8>, d: Self);
                async fn pattern(&self, (a, b): (u8, u8));
                async fn returns(&self) -> impl Send;
                unsafe extern "C" fn ffi(&self);
                async fn into_service(&self);
                async fn connect(&self);
                async fn add(&self);
                async fn r#add(&self);
                type Assoc;
                const C: u8;
            }
        };
        let errors = errors(item);
        let expected = [
            "cannot be generic",
            "cannot have a `where` clause",
            "associated types are not supported",
            "associated consts are not supported",
            "must be `async fn`: write `async fn not_async(&self, ...)`",
            "must take `&self` as their first parameter",
            "must take `&self`: the server shares",
            "not `&mut self`",
            "cannot be generic: the server",
            "cannot have const parameters",
            "cannot have lifetime parameters",
            "the only lifetime allowed",
            "methods cannot have a `where` clause",
            "use `String` instead of `&str`",
            "use `Vec<u8>` instead of `&[u8]`",
            "arguments cannot be `impl Trait`",
            "cannot mention `Self`",
            "must be plain identifiers",
            "cannot return `impl Trait`",
            "cannot be `unsafe`",
            "cannot be `extern`",
            "`into_service` is generated",
            "clash with the generated `BadClient::connect`",
            "`add` and `r#add` are the same name",
        ];
        for needle in expected {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "no error containing {needle:?} in {errors:#?}"
            );
        }
        // `ffi` is also not `async`, and `by_value` and `boxed` share a message,
        // hence two more errors than needles.
        assert_eq!(errors.len(), expected.len() + 2, "{errors:#?}");
    }

    #[test]
    fn generated_names_must_differ() {
        let item: ItemTrait = syn::parse_quote!(
            trait Loop {
                async fn tick(&self);
            }
        );
        let named = |server: Option<&str>, client: Option<&str>| {
            let args = crate::attr::Args {
                server: server.map(|name| syn::Ident::new(name, proc_macro2::Span::call_site())),
                client: client.map(|name| syn::Ident::new(name, proc_macro2::Span::call_site())),
            };
            match validate(&Service::from_trait(&item, args)) {
                Ok(()) => Vec::new(),
                Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
            }
        };
        assert_eq!(named(None, None), Vec::<String>::new());
        assert_eq!(
            named(Some("LoopServer"), Some("LoopRemote")),
            Vec::<String>::new()
        );
        assert!(named(Some("Loop"), None)[0].contains("server type cannot be named like the trait"));
        assert!(named(None, Some("Loop"))[0].contains("client type cannot be named like the trait"));
        assert!(named(None, Some("ServeLoop"))[0].contains("cannot both be named `ServeLoop`"));
        assert!(named(Some("LoopClient"), None)[0].contains("cannot both be named `LoopClient`"));
    }
}
