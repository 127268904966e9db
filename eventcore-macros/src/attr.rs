//! Parsing of the `#[stream]` field attribute.

use proc_macro2::Span;
use syn::{Attribute, Meta, spanned::Spanned};

/// A field's `#[stream]` attribute: `#[stream]`, or `#[stream(skip)]` for a
/// stream id the command does not read.
pub struct Stream {
    /// Where the attribute was written, for errors about the field.
    pub span: Span,
    /// `#[stream(skip)]`: the field holds a stream id that is not one of
    /// the command's streams.
    pub skip: bool,
}

/// The field's `#[stream]` attribute, if any; misuse is an error at the attribute.
pub fn stream(attrs: &[Attribute]) -> syn::Result<Option<Stream>> {
    let mut found: Option<Stream> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("stream")) {
        let skip = match &attr.meta {
            Meta::Path(_) => false,
            Meta::List(list) if list.tokens.to_string() == "skip" => true,
            Meta::List(list) => {
                return Err(syn::Error::new(
                    list.tokens.span(),
                    format!(
                        "unknown argument `{}` for #[stream]: write #[stream], or #[stream(skip)] \
                         for a stream id the command does not read",
                        list.tokens
                    ),
                ));
            }
            Meta::NameValue(name_value) => {
                return Err(syn::Error::new(
                    name_value.eq_token.span,
                    "#[stream] takes no value: write #[stream], or #[stream(skip)]",
                ));
            }
        };
        if found.is_some() {
            return Err(syn::Error::new(
                attr.meta.span(),
                "duplicate #[stream] attribute on one field",
            ));
        }
        found = Some(Stream {
            span: attr.meta.span(),
            skip,
        });
    }
    Ok(found)
}
