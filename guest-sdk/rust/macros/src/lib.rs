//! Procedural macros of the Courier Rust SDK. Use them through `courier_sdk`, which re-exports
//! them; the code they generate names `::courier_sdk`.
//!
//! Misuse is reported as a compile error pointing at the offending tokens, never a panic.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    DeriveInput, Error, FnArg, ItemFn, LitStr, Pat, Path, ReturnType, Token, Type,
    parse_macro_input, punctuated::Punctuated,
};

/// Attaches a message type URN to a struct or enum.
///
/// ```text
/// #[derive(Message, Serialize, Deserialize)]
/// #[message(urn = "urn:message:Orders:OrderPlaced")]
/// struct OrderPlaced { order_id: String }
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[message(namespace = "Orders")] // urn:message:Orders:OrderShipped
/// struct OrderShipped { order_id: String }
/// ```
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match message_urn(&input) {
        Ok(urn) => {
            let name = &input.ident;
            let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
            quote! {
                impl #impl_generics ::courier_sdk::Message for #name #ty_generics #where_clause {
                    const MESSAGE_TYPE: &'static str = #urn;
                }
            }
            .into()
        }
        Err(error) => error.into_compile_error().into(),
    }
}

fn message_urn(input: &DeriveInput) -> syn::Result<String> {
    let mut urn: Option<LitStr> = None;
    let mut namespace: Option<LitStr> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("urn") {
                urn = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("namespace") {
                namespace = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("expected `urn = \"urn:message:Namespace:Type\"` or `namespace = \"Namespace\"`"))
            }
        })?;
    }
    match (urn, namespace) {
        (Some(urn), None) => {
            validate_urn(&urn.value()).map_err(|reason| Error::new(urn.span(), reason))?;
            Ok(urn.value())
        }
        (None, Some(namespace)) => {
            let urn_text = format!("urn:message:{}:{}", namespace.value(), input.ident);
            validate_urn(&urn_text).map_err(|reason| Error::new(namespace.span(), reason))?;
            Ok(urn_text)
        }
        (Some(urn), Some(_)) => Err(Error::new(
            urn.span(),
            "give either `urn` or `namespace`, not both",
        )),
        (None, None) => Err(Error::new(
            input.ident.span(),
            "a message needs its type: add #[message(urn = \"urn:message:Namespace:Type\")]",
        )),
    }
}

/// `urn:message:<Namespace>:<Type>`, where the namespace may itself contain `.` or `:`
/// separated parts and the type is an identifier.
fn validate_urn(urn: &str) -> Result<(), String> {
    let rest = urn.strip_prefix("urn:message:").ok_or_else(|| {
        format!("`{urn}` is not a message URN: it must start with `urn:message:`")
    })?;
    let (namespace, type_name) = rest.rsplit_once(':').ok_or_else(|| {
        format!("`{urn}` needs a namespace and a type: `urn:message:Namespace:Type`")
    })?;
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'))
    };
    if !is_name(namespace) {
        return Err(format!("`{urn}` has an empty or malformed namespace"));
    }
    if !is_name(type_name) || type_name.contains([':', '.']) {
        return Err(format!("`{urn}` has an empty or malformed type name"));
    }
    Ok(())
}

/// Turns a function into a handler for the message type of its first parameter.
///
/// The function takes the decoded message, optionally a `&mut courier_sdk::Context`, and
/// returns `courier_sdk::HandlerResult` (or any `Result<(), E>` where `E` converts into
/// `courier_sdk::HandleError`). List it in `courier_sdk::export!` to register it.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return Error::new(
            proc_macro2::TokenStream::from(attr).span(),
            "#[handler] takes no arguments: the message type comes from the first parameter",
        )
        .into_compile_error()
        .into();
    }
    let function = parse_macro_input!(item as ItemFn);
    match expand_handler(&function) {
        Ok(entry) => quote! { #function #entry }.into(),
        Err(error) => {
            let error = error.into_compile_error();
            quote! { #function #error }.into()
        }
    }
}

fn expand_handler(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &function.sig;
    if let Some(asyncness) = &sig.asyncness {
        return Err(Error::new(
            asyncness.span(),
            "a handler is a plain function: remove `async` (the host calls handlers synchronously)",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "a handler handles one concrete message type, so it cannot be generic",
        ));
    }
    if let ReturnType::Default = sig.output {
        return Err(Error::new(
            sig.ident.span(),
            "a handler must return `courier_sdk::HandlerResult`",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let message_type = match inputs.next() {
        Some(FnArg::Typed(arg)) => message_param_type(&arg.ty)?,
        Some(FnArg::Receiver(receiver)) => {
            return Err(Error::new(
                receiver.span(),
                "a handler is a free function, not a method",
            ));
        }
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                "a handler takes the message as its first parameter, e.g. `order: OrderPlaced`",
            ));
        }
    };
    let takes_context = match inputs.next() {
        None => false,
        Some(FnArg::Typed(arg)) => {
            if !matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_some()) {
                return Err(Error::new(
                    arg.ty.span(),
                    "the second parameter of a handler must be `&mut courier_sdk::Context`",
                ));
            }
            if let Pat::Ident(_) | Pat::Wild(_) = &*arg.pat {
                true
            } else {
                return Err(Error::new(arg.pat.span(), "expected a parameter name"));
            }
        }
        Some(other) => {
            return Err(Error::new(
                other.span(),
                "the second parameter of a handler must be `&mut courier_sdk::Context`",
            ));
        }
    };
    if let Some(extra) = inputs.next() {
        return Err(Error::new(
            extra.span(),
            "a handler takes at most two parameters: the message and `&mut courier_sdk::Context`",
        ));
    }

    let name = &sig.ident;
    let vis = &function.vis;
    let entry = format_ident!("__courier_handler_{}", name);
    let call = if takes_context {
        quote! { #name(message, context) }
    } else {
        quote! { #name(message) }
    };
    // The bound is spanned at the message type so a missing derive points there.
    let bound = quote_spanned! {message_type.span()=>
        const _: fn() = || {
            fn assert_message<T: ::courier_sdk::Message + ::courier_sdk::serde::de::DeserializeOwned>() {}
            assert_message::<#message_type>();
        };
    };
    Ok(quote! {
        #bound
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #entry: ::courier_sdk::__private::HandlerEntry = ::courier_sdk::__private::HandlerEntry {
            message_type: <#message_type as ::courier_sdk::Message>::MESSAGE_TYPE,
            invoke: |context: &mut ::courier_sdk::Context| -> ::core::result::Result<(), ::courier_sdk::HandleError> {
                let message: #message_type = context.decode()?;
                #call.map_err(::core::convert::Into::into)
            },
        };
    })
}

fn message_param_type(ty: &Type) -> syn::Result<&Type> {
    match ty {
        Type::Reference(reference) => Err(Error::new(
            reference.span(),
            "take the message by value, e.g. `order: OrderPlaced`, not by reference",
        )),
        Type::ImplTrait(_) | Type::TraitObject(_) | Type::Infer(_) => Err(Error::new(
            ty.span(),
            "a handler handles one concrete message type; name it, e.g. `order: OrderPlaced`",
        )),
        _ => Ok(ty),
    }
}

/// Makes this crate a Courier plugin serving the listed handlers.
///
/// The plugin's name and version are the crate's (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`). Either
/// may be overridden with `name = "…"` and `version = "…"` (string literals, not empty, each at
/// most once, separated by `,`) before the handlers, ended by `;`. Two crates can so build two
/// versions of one plugin.
///
/// ```text
/// courier_sdk::export!(charge, refund);
/// courier_sdk::export!(version = "2.1.0"; charge, refund);
/// courier_sdk::export!(name = "payment", version = "2.1.0"; charge, refund);
/// ```
#[proc_macro]
pub fn export(input: TokenStream) -> TokenStream {
    let ExportArgs {
        name,
        version,
        handlers,
    } = parse_macro_input!(input as ExportArgs);
    if handlers.is_empty() {
        return Error::new(
            Span::call_site(),
            "list the plugin's handlers, e.g. `courier_sdk::export!(charge, refund);`",
        )
        .into_compile_error()
        .into();
    }
    let entries = handlers.iter().map(|path| {
        let mut entry = path.clone();
        if let Some(last) = entry.segments.last_mut() {
            last.ident =
                format_ident!("__courier_handler_{}", last.ident, span = last.ident.span());
        }
        entry
    });
    quote! {
        #[doc(hidden)]
        struct __CourierPlugin;
        impl ::courier_sdk::__private::PluginDescriptor for __CourierPlugin {
            const NAME: &'static str = #name;
            const VERSION: &'static str = #version;
            const HANDLERS: &'static [::courier_sdk::__private::HandlerEntry] = &[#(#entries),*];
        }
        #[doc(hidden)]
        type __CourierExport = ::courier_sdk::__private::Exported<__CourierPlugin>;
        ::courier_sdk::__private::bindings::__export_courier_plugin!(__CourierExport);
    }
    .into()
}

/// `export!`'s input: optional `name = "…", version = "…";`, then the handlers. `name` and
/// `version` are the tokens of a `&'static str` expression: the literal given, or the crate's.
struct ExportArgs {
    name: proc_macro2::TokenStream,
    version: proc_macro2::TokenStream,
    handlers: Punctuated<Path, Token![,]>,
}

impl syn::parse::Parse for ExportArgs {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let mut name: Option<LitStr> = None;
        let mut version: Option<LitStr> = None;
        // Settings come first, each an identifier followed by `=`; a handler is never followed
        // by `=`, so the old form (handlers only) parses as before.
        if input.peek(syn::Ident) && input.peek2(Token![=]) {
            loop {
                let key: syn::Ident = input.parse()?;
                if !input.peek(Token![=]) {
                    // Most likely a handler after a `,` that should have been a `;`.
                    return Err(Error::new(
                        key.span(),
                        "expected `name = \"…\"` or `version = \"…\"`: end the settings with `;` before the handlers",
                    ));
                }
                let slot = match key.to_string().as_str() {
                    "name" => &mut name,
                    "version" => &mut version,
                    other => {
                        return Err(Error::new(
                            key.span(),
                            format!(
                                "unknown setting `{other}`: `export!` takes `name` and `version`"
                            ),
                        ));
                    }
                };
                if slot.is_some() {
                    return Err(Error::new(key.span(), format!("`{key}` is given twice")));
                }
                input.parse::<Token![=]>()?;
                let value = if input.peek(LitStr) {
                    input.parse::<LitStr>()?
                } else {
                    return Err(input.error(format!(
                        "expected string literal: `{key}` takes a string, e.g. `{key} = \"…\"`"
                    )));
                };
                if value.value().trim().is_empty() {
                    return Err(Error::new(
                        value.span(),
                        format!("`{key}` must not be empty"),
                    ));
                }
                *slot = Some(value);
                if input.parse::<Option<Token![;]>>()?.is_some() {
                    break;
                }
                if input.parse::<Option<Token![,]>>()?.is_none() {
                    return Err(input
                        .error("expected `,` and another setting, or `;` and then the handlers"));
                }
            }
        }
        let handlers = Punctuated::parse_terminated(input)?;
        let or_crate = |value: Option<LitStr>, variable: &str| match value {
            Some(value) => quote! { #value },
            None => quote! { ::core::env!(#variable) },
        };
        Ok(ExportArgs {
            name: or_crate(name, "CARGO_PKG_NAME"),
            version: or_crate(version, "CARGO_PKG_VERSION"),
            handlers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{ExportArgs, validate_urn};

    fn parse(text: &str) -> syn::Result<ExportArgs> {
        syn::parse_str::<ExportArgs>(text)
    }

    fn parse_error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("`{text}` parsed, but should not have"),
            Err(error) => error.to_string(),
        }
    }

    fn from_crate(variable: &str) -> String {
        quote::quote!(::core::env!(#variable)).to_string()
    }

    #[test]
    fn export_takes_handlers_alone_with_the_crate_name_and_version() {
        let args = parse("charge, refund").unwrap();
        assert_eq!(args.handlers.len(), 2);
        assert_eq!(args.name.to_string(), from_crate("CARGO_PKG_NAME"));
        assert_eq!(args.version.to_string(), from_crate("CARGO_PKG_VERSION"));

        let paths = parse("handlers::charge, refund,").unwrap();
        assert_eq!(paths.handlers.len(), 2);
    }

    #[test]
    fn export_takes_a_name_and_a_version_before_the_handlers() {
        let args = parse(r#"name = "stamp", version = "2.0.0"; ping"#).unwrap();
        assert_eq!(args.name.to_string(), r#""stamp""#);
        assert_eq!(args.version.to_string(), r#""2.0.0""#);
        assert_eq!(args.handlers.len(), 1);

        let reversed = parse(r#"version = "2.0.0", name = "stamp"; ping, pong"#).unwrap();
        assert_eq!(reversed.name.to_string(), r#""stamp""#);
        assert_eq!(reversed.handlers.len(), 2);
    }

    #[test]
    fn export_takes_either_setting_alone() {
        let version = parse(r#"version = "2.0.0"; ping"#).unwrap();
        assert_eq!(version.name.to_string(), from_crate("CARGO_PKG_NAME"));
        assert_eq!(version.version.to_string(), r#""2.0.0""#);

        let name = parse(r#"name = "stamp"; ping"#).unwrap();
        assert_eq!(name.name.to_string(), r#""stamp""#);
        assert_eq!(name.version.to_string(), from_crate("CARGO_PKG_VERSION"));
    }

    #[test]
    fn export_refuses_an_unknown_setting() {
        assert_eq!(
            parse_error(r#"colour = "red"; ping"#),
            "unknown setting `colour`: `export!` takes `name` and `version`"
        );
        // The key is checked before its value.
        assert!(parse_error("colour = 3; ping").contains("unknown setting `colour`"));
    }

    #[test]
    fn export_refuses_a_setting_given_twice() {
        assert_eq!(
            parse_error(r#"name = "a", name = "b"; ping"#),
            "`name` is given twice"
        );
        assert_eq!(
            parse_error(r#"version = "1", name = "a", version = "2"; ping"#),
            "`version` is given twice"
        );
    }

    #[test]
    fn export_refuses_a_value_that_is_not_a_string_or_is_empty() {
        assert!(parse_error("name = 3; ping").starts_with("expected string literal: `name`"));
        assert!(parse_error("version = v2; ping").starts_with("expected string literal"));
        assert_eq!(
            parse_error(r#"name = ""; ping"#),
            "`name` must not be empty"
        );
        assert_eq!(
            parse_error(r#"version = " "; ping"#),
            "`version` must not be empty"
        );
    }

    #[test]
    fn export_needs_a_semicolon_after_the_settings() {
        assert!(parse_error(r#"name = "stamp" ping"#).contains("`;` and then the handlers"));
        assert!(parse_error(r#"name = "stamp""#).contains("`;` and then the handlers"));
        assert!(parse_error(r#"name = "stamp", ping"#).contains("end the settings with `;`"));
    }

    #[test]
    fn urns_are_checked() {
        assert!(validate_urn("urn:message:Orders:OrderPlaced").is_ok());
        assert!(validate_urn("urn:message:Acme.Orders:OrderPlaced").is_ok());
        assert!(validate_urn("urn:message:OrderPlaced").is_err());
        assert!(validate_urn("message:Orders:OrderPlaced").is_err());
        assert!(validate_urn("urn:message::OrderPlaced").is_err());
        assert!(validate_urn("urn:message:Orders:").is_err());
    }
}
