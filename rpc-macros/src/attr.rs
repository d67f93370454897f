//! The arguments of the attribute itself: `#[rpc::service(server = Name, client = Name)]`.
//!
//! Both are optional; they rename the two generated types when the defaults
//! (`Serve<Trait>` and `<Trait>Client`) would collide with a type of the user's.

use proc_macro2::TokenStream;
use syn::parse::Parser as _;
use syn::punctuated::Punctuated;
use syn::{Error, Expr, Ident, Meta, Token};

/// The parsed arguments; `None` where the default name applies.
#[derive(Default)]
pub(crate) struct Args {
    /// `server = Name`: the wrapper that implements `rpc::Service`.
    pub(crate) server: Option<Ident>,
    /// `client = Name`: the client stub.
    pub(crate) client: Option<Ident>,
}

const USAGE: &str = "#[rpc::service] takes optional `server = Name` and `client = Name` \
                     arguments, to rename the generated types: \
                     `#[rpc::service(server = CalculatorHost, client = CalculatorRemote)]`";

impl Args {
    /// Parses `args`. On mistakes, returns what could be read (so the rest of the expansion
    /// can carry on and report its own errors) along with every mistake, combined.
    pub(crate) fn parse(args: TokenStream) -> (Args, Option<Error>) {
        let mut parsed = Args::default();
        let mut errors: Option<Error> = None;
        let mut push = |error: Error| match &mut errors {
            Some(existing) => existing.combine(error),
            None => errors = Some(error),
        };
        if args.is_empty() {
            return (parsed, None);
        }
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone()) {
            Ok(metas) => metas,
            Err(error) => {
                push(Error::new(error.span(), format!("{error}; {USAGE}")));
                return (parsed, errors);
            }
        };
        for meta in metas {
            let Meta::NameValue(name_value) = &meta else {
                push(Error::new_spanned(&meta, USAGE));
                continue;
            };
            let key = &name_value.path;
            let slot = if key.is_ident("server") {
                &mut parsed.server
            } else if key.is_ident("client") {
                &mut parsed.client
            } else {
                push(Error::new_spanned(
                    key,
                    format!("unknown argument; {USAGE}"),
                ));
                continue;
            };
            let Some(ident) = plain_ident(&name_value.value) else {
                let hint = match &name_value.value {
                    Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }) => format!(
                        ": write `{} = {}`, without quotes",
                        key_name(key),
                        text.value()
                    ),
                    _ => String::new(),
                };
                push(Error::new_spanned(
                    &name_value.value,
                    format!("expected the name of the generated type{hint}"),
                ));
                continue;
            };
            if let Some(first) = slot {
                push(Error::new_spanned(
                    key,
                    format!(
                        "`{}` is given twice (first as `{first}`): keep one",
                        key_name(key)
                    ),
                ));
                continue;
            }
            *slot = Some(ident);
        }
        (parsed, errors)
    }
}

/// `Name` (not `a::Name`, `Name<T>` or `"Name"`).
fn plain_ident(expr: &Expr) -> Option<Ident> {
    let Expr::Path(path) = expr else { return None };
    if path.qself.is_some() || !path.attrs.is_empty() {
        return None;
    }
    path.path.get_ident().cloned()
}

fn key_name(path: &syn::Path) -> String {
    path.get_ident()
        .map_or_else(String::new, ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(args: TokenStream) -> Vec<String> {
        match Args::parse(args).1 {
            Some(error) => error.into_iter().map(|e| e.to_string()).collect(),
            None => Vec::new(),
        }
    }

    #[test]
    fn reads_both_names() {
        let (args, error) = Args::parse(quote!(server = Host, client = Remote,));
        assert!(error.is_none());
        assert_eq!(args.server.map(|i| i.to_string()).as_deref(), Some("Host"));
        assert_eq!(
            args.client.map(|i| i.to_string()).as_deref(),
            Some("Remote")
        );
        let (args, error) = Args::parse(TokenStream::new());
        assert!(error.is_none() && args.server.is_none() && args.client.is_none());
    }

    #[test]
    fn reports_every_mistake() {
        let errors = errors(quote!(
            server = "Host",
            name = "calc",
            client = a::B,
            client = C,
            client = D,
            spawn
        ));
        let expected = [
            "write `server = Host`, without quotes",
            "unknown argument",
            "expected the name of the generated type",
            "`client` is given twice (first as `C`)",
            "takes optional `server = Name`",
        ];
        for needle in expected {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "no error containing {needle:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn unparsable_arguments_say_what_is_accepted() {
        let errors = errors(quote!(server =));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("takes optional"), "{errors:#?}");
    }
}
