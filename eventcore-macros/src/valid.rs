//! Checks on the model, each problem reported at the span that caused it.

use syn::spanned::Spanned;

use crate::ast::Input;

/// Reports every problem with the command type at once.
pub fn check(input: &Input<'_>) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = Vec::new();
    if input.stream_fields().next().is_none() {
        errors.push(syn::Error::new(
            input.ident.span(),
            "#[derive(Command)] needs at least one field marked #[stream] (a StreamId, a typed id implementing eventcore::AsStreamId, or a collection of them)",
        ));
    }
    for field in input.stream_fields() {
        if field.shape().is_none() {
            errors.push(syn::Error::new(
                field.ty.span(),
                "#[stream] fields must be a StreamId, a typed id implementing eventcore::AsStreamId, or a collection of them (such as Vec<StreamId>)",
            ));
            if let Some(stream) = &field.stream {
                errors.push(syn::Error::new(stream.span, "#[stream] is declared here"));
            }
        }
    }
    for field in input.unmarked_stream_ids() {
        errors.push(syn::Error::new(
            field.ident.span(),
            format!(
                "field `{}` holds a StreamId but is not marked: mark it #[stream] if the command \
                 reads that stream (then it may write to it), or #[stream(skip)] if it is not a \
                 stream the command reads",
                field.ident
            ),
        ));
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
