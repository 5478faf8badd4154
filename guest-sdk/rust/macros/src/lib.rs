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

/// Makes this crate a Courier plugin serving the listed handlers. The plugin's name and
/// version are the crate's (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`).
///
/// ```text
/// courier_sdk::export!(charge, refund);
/// ```
#[proc_macro]
pub fn export(input: TokenStream) -> TokenStream {
    let handlers = parse_macro_input!(input with Punctuated::<Path, Token![,]>::parse_terminated);
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
            const NAME: &'static str = env!("CARGO_PKG_NAME");
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
            const HANDLERS: &'static [::courier_sdk::__private::HandlerEntry] = &[#(#entries),*];
        }
        #[doc(hidden)]
        type __CourierExport = ::courier_sdk::__private::Exported<__CourierPlugin>;
        ::courier_sdk::__private::bindings::__export_courier_plugin!(__CourierExport);
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::validate_urn;

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
