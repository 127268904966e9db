//! `#[derive(Command)]` and `#[derive(Event)]` for EventCore. Use them
//! through `eventcore::Command` and `eventcore::Event`; their documentation
//! lives there.
//!
//! `event.rs` is the whole of `#[derive(Event)]`. The command derive is a
//! small pipeline: `ast.rs` turns syn's tree into the macro's
//! own model, `attr.rs` parses `#[stream]` attributes, `valid.rs` checks the
//! model and reports every problem with the span that caused it, and
//! `expand.rs` only generates code. Problems come back as `compile_error!`,
//! never as a panic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ast;
mod attr;
mod event;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `eventcore::CommandStreams` and one write-target accessor per `#[stream]` field.
///
/// See `eventcore::Command` for the full documentation.
#[proc_macro_derive(Command, attributes(stream))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `eventcore::Event`: type names and schema versions from `#[event(...)]`.
///
/// See `eventcore::Event` for the full documentation.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
