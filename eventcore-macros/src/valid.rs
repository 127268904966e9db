//! Checks on the model, each problem reported at the span that caused it.

use syn::spanned::Spanned;

use crate::ast::Input;

/// Reports every problem with the command type at once.
pub fn check(input: &Input<'_>) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = Vec::new();
    if input.stream_fields().next().is_none() {
        errors.push(syn::Error::new(
            input.ident.span(),
            "#[derive(Command)] needs at least one field marked #[stream] (of type StreamId, or a collection of StreamId)",
        ));
    }
    for field in input.stream_fields() {
        if field.shape().is_none() {
            errors.push(syn::Error::new(
                field.ty.span(),
                "#[stream] fields must be a StreamId or a collection of StreamId (such as Vec<StreamId>)",
            ));
            if let Some(stream) = &field.stream {
                errors.push(syn::Error::new(stream.span, "#[stream] is declared here"));
            }
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
    }
}
