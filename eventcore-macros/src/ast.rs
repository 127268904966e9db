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
    /// `StreamId`, or `&StreamId` when `by_ref`.
    Single { by_ref: bool },
    /// Anything whose shared reference iterates `&StreamId` (`Vec<StreamId>`,
    /// `Option<StreamId>`, `[StreamId; N]`, ...), or a reference that does when `by_ref`.
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

    /// The fields marked `#[stream]`.
    pub fn stream_fields(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter().filter(|f| f.stream.is_some())
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
                    Type::Slice(slice) if is_stream_id(&slice.elem) => {
                        Some(StreamShape::Many { by_ref: true })
                    }
                    _ => None,
                },
            },
            ty => shape_of_owned(ty),
        }
    }
}

fn shape_of_owned(ty: &Type) -> Option<StreamShape> {
    if is_stream_id(ty) {
        return Some(StreamShape::Single { by_ref: false });
    }
    match ty {
        Type::Group(group) => shape_of_owned(&group.elem),
        Type::Paren(paren) => shape_of_owned(&paren.elem),
        Type::Array(array) if is_stream_id(&array.elem) => {
            Some(StreamShape::Many { by_ref: false })
        }
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let mut types = args.args.iter().filter_map(|arg| match arg {
                syn::GenericArgument::Type(ty) => Some(ty),
                _ => None,
            });
            let first = types.next()?;
            is_stream_id(first).then_some(StreamShape::Many { by_ref: false })
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
