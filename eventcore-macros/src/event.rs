//! `#[derive(Event)]`: the stored type name and schema version of a struct,
//! or of each variant of an enum, from `#[event(...)]` attributes.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Ident, LitInt, LitStr, spanned::Spanned};

/// Longest type name the store accepts, in characters (`eventcore::EVENT_TYPE_MAX_CHARS`).
const MAX_NAME_CHARS: usize = 255;

/// What one `#[event(...)]` attribute says; unset parts take their defaults.
#[derive(Default)]
struct EventAttr {
    name: Option<(String, Span)>,
    version: Option<u32>,
}

/// One stored kind of event: the struct itself, or one variant.
struct Kind<'a> {
    /// `None` for a struct.
    variant: Option<&'a Ident>,
    name: String,
    name_span: Span,
    version: u32,
}

/// Parses, checks and expands one `#[derive(Event)]`.
pub fn derive(node: &DeriveInput) -> syn::Result<TokenStream> {
    let kinds = kinds(node)?;
    let ident = &node.ident;
    let mut generics = node.generics.clone();
    if !generics.params.is_empty() {
        // serde's impls for a generic type hold under bounds of their own;
        // the event holds wherever they do.
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote! {
                Self: ::eventcore::__private::serde::Serialize
                    + ::eventcore::__private::serde::de::DeserializeOwned
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static
            });
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let (names, versions) = match &node.data {
        Data::Struct(_) => {
            let kind = kinds
                .first()
                .ok_or_else(|| syn::Error::new(ident.span(), "no event kind"))?;
            let (name, version) = (&kind.name, kind.version);
            (quote! { #name }, quote! { #version })
        }
        _ => {
            let names = kinds.iter().map(|k| {
                let (variant, name) = (k.variant, &k.name);
                quote! { Self::#variant { .. } => #name, }
            });
            let versions = kinds.iter().map(|k| {
                let (variant, version) = (k.variant, k.version);
                quote! { Self::#variant { .. } => #version, }
            });
            (
                quote! { match self { #(#names)* } },
                quote! { match self { #(#versions)* } },
            )
        }
    };
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::eventcore::Event for #ident #ty_generics #where_clause {
            fn event_type(&self) -> &'static str {
                #names
            }

            fn schema_version(&self) -> u32 {
                #versions
            }
        }
    })
}

/// The kinds of event `node` stores, checked: valid names, no name twice.
fn kinds(node: &DeriveInput) -> syn::Result<Vec<Kind<'_>>> {
    let kinds = match &node.data {
        Data::Struct(_) => {
            let attr = event_attr(&node.attrs)?;
            vec![kind(None, &node.ident, attr)]
        }
        Data::Enum(data) => {
            if let Some(attr) = node.attrs.iter().find(|a| a.path().is_ident("event")) {
                return Err(syn::Error::new(
                    attr.meta.span(),
                    "#[event(...)] on an enum goes on each variant: every variant is stored as \
                     its own event type",
                ));
            }
            if data.variants.is_empty() {
                return Err(syn::Error::new(
                    node.ident.span(),
                    "#[derive(Event)] needs at least one variant: an enum without variants has \
                     no events to store",
                ));
            }
            data.variants
                .iter()
                .map(|v| Ok(kind(Some(&v.ident), &v.ident, event_attr(&v.attrs)?)))
                .collect::<syn::Result<Vec<_>>>()?
        }
        Data::Union(data) => {
            return Err(syn::Error::new(
                data.union_token.span,
                "#[derive(Event)] is for structs and enums: a union cannot be serialized as an \
                 event",
            ));
        }
    };
    for (index, kind) in kinds.iter().enumerate() {
        check_name(&kind.name, kind.name_span)?;
        if let Some(first) = kinds[..index].iter().find(|k| k.name == kind.name) {
            let first = first.variant.map_or_else(String::new, ToString::to_string);
            return Err(syn::Error::new(
                kind.name_span,
                format!(
                    "event type name {:?} is already used by variant `{first}`: give each \
                     variant its own name with #[event(name = \"...\")]",
                    kind.name
                ),
            ));
        }
    }
    Ok(kinds)
}

fn kind<'a>(variant: Option<&'a Ident>, ident: &Ident, attr: EventAttr) -> Kind<'a> {
    let (name, name_span) = attr
        .name
        .unwrap_or_else(|| (ident.to_string(), ident.span()));
    Kind {
        variant,
        name,
        name_span,
        version: attr.version.unwrap_or(1),
    }
}

/// The same rules as `eventcore::EventType`, checked at compile time.
fn check_name(name: &str, span: Span) -> syn::Result<()> {
    if name.is_empty() {
        return Err(syn::Error::new(
            span,
            "an event type name must not be empty",
        ));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(syn::Error::new(
            span,
            format!(
                "an event type name has at most {MAX_NAME_CHARS} characters, this one has {chars}"
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(syn::Error::new(
            span,
            "an event type name must not contain control characters",
        ));
    }
    Ok(())
}

/// The `#[event(name = "...", version = N)]` attributes on one item, merged.
fn event_attr(attrs: &[Attribute]) -> syn::Result<EventAttr> {
    let mut found = EventAttr::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value: LitStr = meta.value()?.parse()?;
                if found.name.is_some() {
                    return Err(meta.error("the event type name is given twice"));
                }
                found.name = Some((value.value(), value.span()));
                Ok(())
            } else if meta.path.is_ident("version") {
                let value: LitInt = meta.value()?.parse()?;
                let version: u32 = value.base10_parse().map_err(|_| {
                    syn::Error::new(value.span(), "the schema version is a whole number from 1")
                })?;
                if version == 0 {
                    return Err(syn::Error::new(value.span(), "schema versions start at 1"));
                }
                if found.version.is_some() {
                    return Err(meta.error("the schema version is given twice"));
                }
                found.version = Some(version);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[event] argument: write #[event(name = \"TypeName\", version = 2)] \
                     (both optional)",
                ))
            }
        })?;
    }
    Ok(found)
}
