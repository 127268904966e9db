//! The macro's own model of the command type.

use syn::{Data, DeriveInput, Fields, Generics, Ident, Type, Visibility, spanned::Spanned};

use crate::attr;

/// A struct with named fields that `#[derive(Command)]` was applied to.
pub struct Input<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub fields: Vec<Field<'a>>,
}

/// One named field and, if it has one, its `#[stream]` attribute.
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub ty: &'a Type,
    pub stream: Option<attr::Stream>,
}

/// How a `#[stream]` field holds its stream ids.
#[derive(Clone, Copy)]
pub enum StreamShape {
    /// One id: `StreamId` or a typed id (`AccountId`), or a reference to
    /// one when `by_ref`.
    Single { by_ref: bool },
    /// Anything whose shared reference iterates ids (`Vec<StreamId>`,
    /// `Option<AccountId>`, `[StreamId; N]`, ...), or a reference that does
    /// when `by_ref`.
    Many { by_ref: bool },
}

impl<'a> Input<'a> {
    /// Builds the model, reporting every malformed attribute at once.
    pub fn from_syn(node: &'a DeriveInput) -> syn::Result<Self> {
        let named = match &node.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(fields) => {
                    return Err(syn::Error::new(
                        fields.span(),
                        "#[derive(Command)] needs a struct with named fields; tuple structs are not supported",
                    ));
                }
                Fields::Unit => {
                    return Err(syn::Error::new(
                        node.ident.span(),
                        "#[derive(Command)] needs a struct with named fields, at least one marked #[stream]; unit structs are not supported",
                    ));
                }
            },
            Data::Enum(data) => {
                return Err(syn::Error::new(
                    data.enum_token.span,
                    "#[derive(Command)] is for structs with named fields; enums are not supported",
                ));
            }
            Data::Union(data) => {
                return Err(syn::Error::new(
                    data.union_token.span,
                    "#[derive(Command)] is for structs with named fields; unions are not supported",
                ));
            }
        };

        let mut errors: Option<syn::Error> = None;
        let mut fields = Vec::with_capacity(named.named.len());
        for field in &named.named {
            let Some(ident) = field.ident.as_ref() else {
                continue;
            };
            match attr::stream(&field.attrs) {
                Ok(stream) => fields.push(Field {
                    ident,
                    vis: &field.vis,
                    ty: &field.ty,
                    stream,
                }),
                Err(error) => match &mut errors {
                    Some(all) => all.combine(error),
                    None => errors = Some(error),
                },
            }
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(Self {
                ident: &node.ident,
                generics: &node.generics,
                fields,
            }),
        }
    }

    /// The fields marked `#[stream]` (not `#[stream(skip)]`).
    pub fn stream_fields(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields
            .iter()
            .filter(|f| f.stream.as_ref().is_some_and(|s| !s.skip))
    }

    /// Fields with no `#[stream]` attribute whose type names `StreamId`
    /// (alone or in a collection): most likely a forgotten `#[stream]`.
    pub fn unmarked_stream_ids(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields
            .iter()
            .filter(|f| f.stream.is_none() && names_stream_id(f.ty))
    }
}

impl Field<'_> {
    /// How the field holds stream ids, or `None` if its type holds none.
    pub fn shape(&self) -> Option<StreamShape> {
        match self.ty {
            Type::Reference(reference) => match shape_of_owned(&reference.elem) {
                Some(StreamShape::Single { .. }) => Some(StreamShape::Single { by_ref: true }),
                Some(StreamShape::Many { .. }) => Some(StreamShape::Many { by_ref: true }),
                None => match &*reference.elem {
                    Type::Slice(_) => Some(StreamShape::Many { by_ref: true }),
                    _ => None,
                },
            },
            ty => shape_of_owned(ty),
        }
    }
}

fn shape_of_owned(ty: &Type) -> Option<StreamShape> {
    match ty {
        Type::Group(group) => shape_of_owned(&group.elem),
        Type::Paren(paren) => shape_of_owned(&paren.elem),
        Type::Array(_) => Some(StreamShape::Many { by_ref: false }),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            match &last.arguments {
                // `StreamId`, `AccountId`, `ids::OrderId`: one id.
                syn::PathArguments::None => Some(StreamShape::Single { by_ref: false }),
                // `Vec<_>`, `Option<_>`, `BTreeSet<_>`: a collection of ids.
                syn::PathArguments::AngleBracketed(args) => args
                    .args
                    .iter()
                    .any(|arg| matches!(arg, syn::GenericArgument::Type(_)))
                    .then_some(StreamShape::Many { by_ref: false }),
                syn::PathArguments::Parenthesized(_) => None,
            }
        }
        _ => None,
    }
}

/// Whether `ty` names `StreamId` (bare or by any path, e.g. `eventcore::StreamId`).
fn is_stream_id(ty: &Type) -> bool {
    match ty {
        Type::Group(group) => is_stream_id(&group.elem),
        Type::Paren(paren) => is_stream_id(&paren.elem),
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "StreamId" && last.arguments.is_none()),
        _ => false,
    }
}

/// Whether `ty` is `StreamId`, a reference to one, or a collection (array,
/// slice, generic type) whose element is one.
fn names_stream_id(ty: &Type) -> bool {
    if is_stream_id(ty) {
        return true;
    }
    match ty {
        Type::Group(group) => names_stream_id(&group.elem),
        Type::Paren(paren) => names_stream_id(&paren.elem),
        Type::Reference(reference) => names_stream_id(&reference.elem),
        Type::Array(array) => is_stream_id(&array.elem),
        Type::Slice(slice) => is_stream_id(&slice.elem),
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().is_some_and(|last| {
            matches!(&last.arguments, syn::PathArguments::AngleBracketed(args)
                if args.args.iter().any(|arg| matches!(arg, syn::GenericArgument::Type(t) if is_stream_id(t))))
        }),
        _ => false,
    }
}
