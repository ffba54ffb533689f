//! Code generation: the annotated function stays as written; each backend
//! gets a `#[test] fn <name>_<backend>()` that hands a constant `TestSpec` and
//! the function to `apr_engine::testing::runner::run`.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::args::{Backend, Container, DTypeSel, Errors, Expect, Fault, Kind, ModelRef, Spec, Tol};

/// Whether the function takes the report; errors for any other signature.
pub fn check_signature(func: &ItemFn) -> syn::Result<bool> {
    let mut errors = Errors::default();
    let sig = &func.sig;
    if let Some(asyncness) = sig.asyncness {
        errors.push(asyncness.span(), "a model test runs synchronously: remove `async`");
    }
    if !sig.generics.params.is_empty() {
        errors.push(sig.generics.span(), "a model test cannot be generic");
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        errors.push(ty.span(), "a model test returns nothing: assert (or panic) in the body instead");
    }
    let mut inputs = sig.inputs.iter();
    let takes_report = match inputs.next() {
        None => false,
        Some(FnArg::Typed(arg)) if matches!(*arg.ty, Type::Reference(_)) => true,
        Some(other) => {
            errors
                .push(other.span(), "the only parameter a model test takes is `report: &apr_engine::testing::Report`");
            true
        }
    };
    for extra in inputs {
        errors.push(extra.span(), "a model test takes at most one parameter: `report: &apr_engine::testing::Report`");
    }
    errors.finish(takes_report)
}

pub fn expand(spec: &Spec, func: &ItemFn, takes_report: bool) -> TokenStream {
    let name = &func.sig.ident;
    let mut user_fn = func.clone();
    // Test attributes belong on the generated tests, not on the helper function.
    let (ignores, kept): (Vec<_>, Vec<_>) =
        user_fn.attrs.drain(..).partition(|a| a.path().is_ident("ignore") || a.path().is_ident("should_panic"));
    user_fn.attrs = kept;
    let call = if takes_report {
        quote!(|report: &::apr_engine::testing::Report| #name(report))
    } else {
        quote!(|_: &::apr_engine::testing::Report| #name())
    };
    let backends = if spec.backends.is_empty() { vec![Backend("cpu")] } else { spec.backends.clone() };
    let tests = backends.iter().map(|backend| {
        let test_name = format_ident!("{}_{}", name, backend.name());
        let spec_tokens = spec_tokens(spec, &name.to_string(), &test_name.to_string(), backend);
        quote! {
            #[test]
            #(#ignores)*
            fn #test_name() {
                const SPEC: ::apr_engine::testing::spec::TestSpec = #spec_tokens;
                ::apr_engine::testing::runner::run(&SPEC, #call);
            }
        }
    });
    quote! {
        #[allow(dead_code)]
        #user_fn
        #(#tests)*
    }
}

fn spec_tokens(spec: &Spec, function: &str, test: &str, backend: &Backend) -> TokenStream {
    let s = quote!(::apr_engine::testing::spec);
    let kind = match spec.kind {
        Kind::FormatEquivalence => quote!(#s::Kind::FormatEquivalence),
        Kind::DtypeRoundtrip => quote!(#s::Kind::DtypeRoundtrip),
        Kind::TraceDiff => quote!(#s::Kind::TraceDiff),
    };
    let model = option(spec.model.as_ref().map(model_ref));
    let reference = option(spec.reference.as_ref().map(model_ref));
    let candidate = option(spec.candidate.as_ref().map(model_ref));
    let prompts = &spec.prompts;
    let max_tokens = option(spec.max_tokens.map(|n| {
        let n = Literal::usize_suffixed(n as usize);
        quote!(#n)
    }));
    let tolerance = tolerances(&spec.tolerance);
    let expect = option(spec.expect.as_ref().map(expect));
    let dtypes = spec.dtypes.iter().map(dtype_sel);
    let containers = spec.containers.iter().map(|&c| container(c));
    let tensors = &spec.tensors;
    let golden = option(spec.golden.as_ref().map(|g| quote!(#g)));
    let variant = format_ident!("{}", backend.variant());
    let backend = quote!(::apr_engine::backend::BackendKind::#variant);
    quote! {
        #s::TestSpec {
            function: #function,
            test: #test,
            module: ::core::module_path!(),
            manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
            kind: #kind,
            model: #model,
            reference: #reference,
            candidate: #candidate,
            prompts: &[#(#prompts),*],
            max_tokens: #max_tokens,
            tolerance: #tolerance,
            expect: #expect,
            dtypes: &[#(#dtypes),*],
            containers: &[#(#containers),*],
            tensors: &[#(#tensors),*],
            golden: #golden,
            backend: #backend,
        }
    }
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn model_ref(model: &ModelRef) -> TokenStream {
    let s = quote!(::apr_engine::testing::spec);
    match model {
        ModelRef::Name(name) => quote!(#s::ModelRef::Named(#name)),
        ModelRef::Convert { to, dtype, faults } => {
            let to = container(*to);
            let dtype = dtype_sel(dtype);
            let faults = faults.iter().map(fault);
            quote!(#s::ModelRef::Convert(#s::ConvertSpec { to: #to, dtype: #dtype, faults: &[#(#faults),*] }))
        }
    }
}

fn container(c: Container) -> TokenStream {
    match c {
        Container::Apr => quote!(::apr_engine::testing::spec::Container::Apr),
        Container::Gguf => quote!(::apr_engine::testing::spec::Container::Gguf),
        Container::SafeTensors => quote!(::apr_engine::testing::spec::Container::SafeTensors),
    }
}

fn dtype_sel(d: &DTypeSel) -> TokenStream {
    match d {
        DTypeSel::Keep => quote!(::apr_engine::testing::spec::DTypeSel::Keep),
        DTypeSel::To(variant) => quote!(::apr_engine::testing::spec::DTypeSel::To(::apr_engine::DType::#variant)),
    }
}

fn fault(f: &Fault) -> TokenStream {
    let s = quote!(::apr_engine::testing::spec::FaultSpec);
    match f {
        Fault::Scale(name, factor) => {
            let factor = Literal::f32_suffixed(*factor as f32);
            quote!(#s::Scale(#name, #factor))
        }
        Fault::Zero(name) => quote!(#s::Zero(#name)),
        Fault::Noise(name, seed) => {
            let seed = Literal::u64_suffixed(*seed);
            quote!(#s::Noise(#name, #seed))
        }
        Fault::Swap(a, b) => quote!(#s::Swap(#a, #b)),
    }
}

fn tolerances(tols: &[Tol]) -> TokenStream {
    let s = quote!(::apr_engine::testing::spec::ToleranceSpec);
    let items = tols.iter().map(|t| {
        let num = |v: f64| Literal::f64_suffixed(v);
        match t {
            Tol::LogitsMaxAbs(v) => {
                let v = num(*v);
                quote!(#s::LogitsMaxAbs(#v))
            }
            Tol::Nmse(v) => {
                let v = num(*v);
                quote!(#s::Nmse(#v))
            }
            Tol::Cosine(v) => {
                let v = num(*v);
                quote!(#s::Cosine(#v))
            }
            Tol::Kld(v) => {
                let v = num(*v);
                quote!(#s::Kld(#v))
            }
            Tol::Top1 => quote!(#s::Top1),
        }
    });
    quote!(&[#(#items),*])
}

fn expect(e: &Expect) -> TokenStream {
    let s = quote!(::apr_engine::testing::spec::Expect);
    match e {
        Expect::Identical => quote!(#s::Identical),
        Expect::Equivalent(tols) => {
            let tols = tolerances(tols);
            quote!(#s::Equivalent(#tols))
        }
        Expect::Diverged(None) => quote!(#s::Diverged(::core::option::Option::None)),
        Expect::Diverged(Some((variant, layer))) => {
            let c = quote!(::apr_engine::tracediff::Classification);
            let class = match layer {
                Some(n) => {
                    let n = Literal::usize_suffixed(*n as usize);
                    quote!(#c::#variant(#n))
                }
                None => quote!(#c::#variant),
            };
            quote!(#s::Diverged(::core::option::Option::Some(#class)))
        }
    }
}
