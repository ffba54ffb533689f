//! `#[model_test(...)]`: declares a property of a model (format equivalence,
//! dtype round trip, trace diff) as ordinary `#[test]` functions, one per backend.
//!
//! This crate only parses and generates; everything that runs lives in
//! `apr_engine::testing`, which re-exports this macro so that users name one crate.
//! Every bad argument is reported at once, spanned on its token, and the
//! annotated function is still emitted so that no unrelated errors follow.

mod args;
mod expand;

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ItemFn, Token};

/// See the crate documentation of `apr_engine::testing` for the grammar.
#[proc_macro_attribute]
pub fn model_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let item = proc_macro2::TokenStream::from(item);
            let error = e.to_compile_error();
            return quote!(#error #item).into();
        }
    };
    let parsed = Punctuated::<Expr, Token![,]>::parse_terminated.parse(attr);
    let result = parsed.and_then(|exprs| {
        let spec = args::interpret(exprs, &func);
        let signature = expand::check_signature(&func);
        match (spec, signature) {
            (Ok(spec), Ok(takes_report)) => Ok(expand::expand(&spec, &func, takes_report)),
            (Err(mut a), Err(b)) => {
                a.combine(b);
                Err(a)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    });
    match result {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let errors = e.to_compile_error();
            quote!(#errors #[allow(dead_code, unused_variables)] #func).into()
        }
    }
}
