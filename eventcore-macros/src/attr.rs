//! Parsing of the `#[stream]` field attribute.

use proc_macro2::Span;
use syn::{Attribute, Meta, spanned::Spanned};

/// A field's `#[stream]` attribute; it takes no arguments.
pub struct Stream {
    /// Where the attribute was written, for errors about the field.
    pub span: Span,
}

/// The field's `#[stream]` attribute, if any; misuse is an error at the attribute.
pub fn stream(attrs: &[Attribute]) -> syn::Result<Option<Stream>> {
    let mut found: Option<Stream> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("stream")) {
        match &attr.meta {
            Meta::Path(_) => {}
            Meta::List(list) => {
                return Err(syn::Error::new(
                    list.tokens.span(),
                    format!(
                        "unknown argument `{}` for #[stream]: the attribute takes no arguments, write #[stream]",
                        list.tokens
                    ),
                ));
            }
            Meta::NameValue(name_value) => {
                return Err(syn::Error::new(
                    name_value.eq_token.span,
                    "#[stream] takes no value: write #[stream]",
                ));
            }
        }
        if found.is_some() {
            return Err(syn::Error::new(
                attr.meta.span(),
                "duplicate #[stream] attribute on one field",
            ));
        }
        found = Some(Stream {
            span: attr.meta.span(),
        });
    }
    Ok(found)
}
