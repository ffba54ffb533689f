//! The attribute's arguments: parsed as Rust expressions by syn, then read
//! into a [`Spec`]. Every problem is collected, each spanned on its token.

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, ExprAssign, ExprCall, ExprLit, ExprPath, Ident, ItemFn, Lit, LitStr, Token, UnOp};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    FormatEquivalence,
    DtypeRoundtrip,
    TraceDiff,
}

impl Kind {
    const NAMES: &'static str = "format_equivalence, dtype_roundtrip or trace_diff";

    fn from_ident(name: &str) -> Option<Kind> {
        Some(match name {
            "format_equivalence" => Kind::FormatEquivalence,
            "dtype_roundtrip" => Kind::DtypeRoundtrip,
            "trace_diff" => Kind::TraceDiff,
            _ => return None,
        })
    }

    /// The keys this kind accepts.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::FormatEquivalence | Kind::TraceDiff => &[
                "model",
                "reference",
                "candidate",
                "prompts",
                "max_tokens",
                "tolerance",
                "expect",
                "backends",
                "golden",
            ],
            Kind::DtypeRoundtrip => &["model", "reference", "dtypes", "containers", "tensors", "backends"],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Apr,
    Gguf,
    SafeTensors,
}

#[derive(Clone)]
pub enum DTypeSel {
    Keep,
    /// The `DType` variant's name.
    To(Ident),
}

pub enum Fault {
    Scale(LitStr, f64),
    Zero(LitStr),
    Noise(LitStr, u64),
    Swap(LitStr, LitStr),
}

pub enum ModelRef {
    Name(LitStr),
    Convert { to: Container, dtype: DTypeSel, faults: Vec<Fault> },
}

pub enum Tol {
    LogitsMaxAbs(f64),
    Nmse(f64),
    Cosine(f64),
    Kld(f64),
    Top1,
}

pub enum Expect {
    Identical,
    Equivalent(Vec<Tol>),
    /// A `Classification` variant, with its layer for `LayerCorrupted`.
    Diverged(Option<(Ident, Option<u64>)>),
}

/// A backend named in `backends = [...]`, one of [`BACKENDS`]: the generated
/// test's suffix, and (in CamelCase) the `apr_engine::backend::BackendKind`
/// variant, which the compiler then checks.
#[derive(Clone, PartialEq, Eq)]
pub struct Backend(pub &'static str);

/// The backend names the attribute accepts (`BackendKind`'s, with `_` for `-`).
pub const BACKENDS: [&str; 3] = ["cpu", "cpu_reference", "cuda"];

impl Backend {
    pub fn name(&self) -> &'static str {
        self.0
    }

    /// `cpu_reference` -> `CpuReference`.
    pub fn variant(&self) -> String {
        self.0.split('_').map(|part| part[..1].to_uppercase() + &part[1..]).collect()
    }
}

pub struct Spec {
    pub kind: Kind,
    pub model: Option<ModelRef>,
    pub reference: Option<ModelRef>,
    pub candidate: Option<ModelRef>,
    pub prompts: Vec<LitStr>,
    pub max_tokens: Option<u64>,
    pub tolerance: Vec<Tol>,
    pub expect: Option<Expect>,
    pub dtypes: Vec<DTypeSel>,
    pub containers: Vec<Container>,
    pub tensors: Vec<LitStr>,
    pub golden: Option<LitStr>,
    pub backends: Vec<Backend>,
    /// Where each key's value is, for errors about combinations of keys.
    pub value_spans: Vec<(String, Span)>,
}

impl Spec {
    fn span_of(&self, key: &str, otherwise: Span) -> Span {
        self.value_spans.iter().find(|(k, _)| k == key).map_or(otherwise, |(_, s)| *s)
    }
}

/// Every error found, combined into one.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn add(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}

/// Reads the attribute's expressions into a spec, or every error in them.
pub fn interpret(exprs: Punctuated<Expr, Token![,]>, func: &ItemFn) -> syn::Result<Spec> {
    let mut errors = Errors::default();
    let mut iter = exprs.into_iter();
    let kind = match iter.next() {
        Some(Expr::Path(p)) if p.path.get_ident().is_some() => {
            let ident = p.path.get_ident().cloned().unwrap();
            Kind::from_ident(&ident.to_string()).or_else(|| {
                errors.push(ident.span(), format!("unknown test kind `{ident}`: expected {}", Kind::NAMES));
                None
            })
        }
        Some(other) => {
            errors.push(other.span(), format!("the first argument is the test kind: {}", Kind::NAMES));
            None
        }
        None => {
            errors.push(func.sig.ident.span(), format!("#[model_test] needs a test kind: {}", Kind::NAMES));
            None
        }
    };
    let mut spec = Spec {
        kind: kind.unwrap_or(Kind::FormatEquivalence),
        model: None,
        reference: None,
        candidate: None,
        prompts: Vec::new(),
        max_tokens: None,
        tolerance: Vec::new(),
        expect: None,
        dtypes: Vec::new(),
        containers: Vec::new(),
        tensors: Vec::new(),
        golden: None,
        backends: Vec::new(),
        value_spans: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    for expr in iter {
        let Expr::Assign(ExprAssign { left, right, .. }) = expr else {
            errors.push(expr.span(), "expected `key = value`");
            continue;
        };
        let Some(key) = path_ident(&left) else {
            errors.push(left.span(), "expected a key name");
            continue;
        };
        let name = key.to_string();
        if seen.contains(&name) {
            errors.push(key.span(), format!("`{name}` is given twice"));
            continue;
        }
        seen.push(name.clone());
        if let Some(kind) = kind {
            if !kind.keys().contains(&name.as_str()) {
                let message = if all_keys().contains(&name.as_str()) {
                    format!("`{name}` does not apply to this kind of test; it takes: {}", kind.keys().join(", "))
                } else {
                    format!("unknown key `{name}`; this kind of test takes: {}", kind.keys().join(", "))
                };
                errors.push(key.span(), message);
                continue;
            }
        }
        spec.value_spans.push((name.clone(), right.span()));
        read_key(&mut spec, &name, &right, &mut errors);
    }
    if let Some(kind) = kind {
        check_required(&spec, kind, func, &mut errors);
    }
    errors.finish(spec)
}

fn all_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = Kind::FormatEquivalence.keys().to_vec();
    keys.extend(Kind::DtypeRoundtrip.keys());
    keys
}

fn read_key(spec: &mut Spec, name: &str, value: &Expr, errors: &mut Errors) {
    match name {
        "model" => spec.model = model_ref(value, errors),
        "reference" => spec.reference = model_ref(value, errors),
        "candidate" => spec.candidate = model_ref(value, errors),
        "prompts" => spec.prompts = list(value, errors, string),
        "tensors" => spec.tensors = list(value, errors, string),
        "max_tokens" => spec.max_tokens = integer(value, errors).filter(|&n| positive(n, value, errors)),
        "tolerance" => spec.tolerance = one_or_list(value, errors, tolerance),
        "expect" => spec.expect = expect(value, errors),
        "dtypes" => spec.dtypes = list(value, errors, dtype_sel),
        "containers" => spec.containers = list(value, errors, container),
        "golden" => spec.golden = string(value, errors),
        "backends" => {
            spec.backends = list(value, errors, backend);
            report_repeats(value, errors);
        }
        _ => unreachable!("keys are checked against Kind::keys"),
    }
}

/// A list item given twice would generate two tests of one name.
fn report_repeats(value: &Expr, errors: &mut Errors) {
    let Expr::Array(array) = value else { return };
    let mut seen = Vec::new();
    for elem in &array.elems {
        let text = quote::ToTokens::to_token_stream(elem).to_string();
        if seen.contains(&text) {
            errors.push(elem.span(), format!("`{text}` is listed twice"));
        }
        seen.push(text);
    }
}

fn positive(n: u64, value: &Expr, errors: &mut Errors) -> bool {
    if n == 0 {
        errors.push(value.span(), "must be at least 1");
    }
    n > 0
}

fn check_required(spec: &Spec, kind: Kind, func: &ItemFn, errors: &mut Errors) {
    let at = func.sig.ident.span();
    let base_is_convert = matches!(spec.model, Some(ModelRef::Convert { .. }));
    if base_is_convert {
        errors.push(
            spec.span_of("model", at),
            "`model` names the model that conversions start from: a model name or path, not convert(...)",
        );
    }
    // A key given with a bad value was already reported; it is not also missing.
    let given = |key: &str| spec.value_spans.iter().any(|(k, _)| k == key);
    let needs = |present: bool, key: &str, errors: &mut Errors| {
        if !present && !given(key) {
            errors.push(at, format!("missing `{key} = ...`"));
        }
    };
    match kind {
        Kind::FormatEquivalence | Kind::TraceDiff => {
            needs(spec.reference.is_some() || spec.model.is_some() || given("model"), "reference", errors);
            needs(spec.candidate.is_some(), "candidate", errors);
            let reference_converts = matches!(spec.reference, Some(ModelRef::Convert { .. }));
            if reference_converts && spec.model.is_none() {
                errors.push(
                    spec.span_of("reference", at),
                    "a converted reference needs `model = \"...\"`: the model that both sides convert from",
                );
            }
            if kind == Kind::FormatEquivalence {
                if let Some(Expect::Diverged(_)) = spec.expect {
                    errors.push(
                        spec.span_of("expect", at),
                        "format_equivalence expects `identical` or `equivalent`; use trace_diff to expect a divergence",
                    );
                }
            }
        }
        Kind::DtypeRoundtrip => {
            needs(spec.reference.is_some() || spec.model.is_some() || given("model"), "reference", errors);
            needs(!spec.dtypes.is_empty(), "dtypes", errors);
            needs(!spec.containers.is_empty(), "containers", errors);
            if matches!(spec.reference, Some(ModelRef::Convert { .. })) {
                errors.push(
                    spec.span_of("reference", at),
                    "the round trip starts from a model name or path, not convert(...)",
                );
            }
        }
    }
}

fn path_ident(expr: &Expr) -> Option<Ident> {
    match expr {
        Expr::Path(ExprPath { path, qself: None, .. }) => path.get_ident().cloned(),
        _ => None,
    }
}

fn string(expr: &Expr, errors: &mut Errors) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.clone()),
        _ => {
            errors.push(expr.span(), "expected a string literal");
            None
        }
    }
}

fn integer(expr: &Expr, errors: &mut Errors) -> Option<u64> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse().map_err(|e| errors.add(e)).ok(),
        _ => {
            errors.push(expr.span(), "expected a non-negative integer");
            None
        }
    }
}

/// A number literal (integer or float), negative only where `signed`.
fn number(expr: &Expr, signed: bool, errors: &mut Errors) -> Option<f64> {
    let (negate, inner) = match expr {
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => (true, &*u.expr),
        other => (false, other),
    };
    let value = match inner {
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse::<f64>().map_err(|e| errors.add(e)).ok()?,
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<f64>().map_err(|e| errors.add(e)).ok()?,
        _ => {
            errors.push(expr.span(), "expected a number");
            return None;
        }
    };
    if negate && !signed {
        errors.push(expr.span(), "must not be negative");
        return None;
    }
    Some(if negate { -value } else { value })
}

fn list<T>(expr: &Expr, errors: &mut Errors, item: fn(&Expr, &mut Errors) -> Option<T>) -> Vec<T> {
    match expr {
        Expr::Array(ExprArray { elems, .. }) => {
            if elems.is_empty() {
                errors.push(expr.span(), "the list is empty");
            }
            elems.iter().filter_map(|e| item(e, errors)).collect()
        }
        _ => {
            errors.push(expr.span(), "expected a list `[...]`");
            Vec::new()
        }
    }
}

fn one_or_list<T>(expr: &Expr, errors: &mut Errors, item: fn(&Expr, &mut Errors) -> Option<T>) -> Vec<T> {
    match expr {
        Expr::Array(_) => list(expr, errors, item),
        _ => item(expr, errors).into_iter().collect(),
    }
}

/// `name(args...)` or a bare `name`: the function name and its arguments.
fn call_parts(expr: &Expr) -> Option<(Ident, Vec<&Expr>)> {
    match expr {
        Expr::Call(ExprCall { func, args, .. }) => Some((path_ident(func)?, args.iter().collect())),
        other => Some((path_ident(other)?, Vec::new())),
    }
}

fn model_ref(expr: &Expr, errors: &mut Errors) -> Option<ModelRef> {
    if let Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) = expr {
        if s.value().is_empty() {
            errors.push(s.span(), "the model name or path is empty");
        }
        return Some(ModelRef::Name(s.clone()));
    }
    match call_parts(expr) {
        Some((name, args)) if name == "convert" => convert(expr, &args, errors),
        _ => {
            errors.push(
                expr.span(),
                "expected a model: a path string, a name from [package.metadata.apr.models], or convert(apr|gguf|safetensors, ...)",
            );
            None
        }
    }
}

fn convert(call: &Expr, args: &[&Expr], errors: &mut Errors) -> Option<ModelRef> {
    let Some((first, rest)) = args.split_first() else {
        errors.push(call.span(), "convert(...) needs a target container: apr, gguf or safetensors");
        return None;
    };
    let to = container(first, errors);
    let mut dtype = DTypeSel::Keep;
    let mut faults = Vec::new();
    for arg in rest {
        let Expr::Assign(ExprAssign { left, right, .. }) = arg else {
            errors.push(arg.span(), "expected `dtype = ...` or `fault = ...`");
            continue;
        };
        match path_ident(left).map(|k| k.to_string()).as_deref() {
            Some("dtype") => dtype = dtype_sel(right, errors).unwrap_or(DTypeSel::Keep),
            Some("fault") => faults.extend(one_or_list(right, errors, fault)),
            _ => errors.push(left.span(), "convert(...) takes `dtype = ...` and `fault = ...`"),
        }
    }
    Some(ModelRef::Convert { to: to?, dtype, faults })
}

fn container(expr: &Expr, errors: &mut Errors) -> Option<Container> {
    let found = path_ident(expr).and_then(|i| match i.to_string().as_str() {
        "apr" => Some(Container::Apr),
        "gguf" => Some(Container::Gguf),
        "safetensors" => Some(Container::SafeTensors),
        _ => None,
    });
    if found.is_none() {
        errors.push(expr.span(), "expected a container: apr, gguf or safetensors");
    }
    found
}

/// GGML dtype names the converter can produce, as (attribute name, `DType` variant).
const DTYPES: &[(&str, &str)] = &[
    ("f32", "F32"),
    ("f16", "F16"),
    ("bf16", "BF16"),
    ("q4_0", "Q4_0"),
    ("q4_1", "Q4_1"),
    ("q5_0", "Q5_0"),
    ("q5_1", "Q5_1"),
    ("q8_0", "Q8_0"),
    ("q2_k", "Q2_K"),
    ("q3_k", "Q3_K"),
    ("q4_k", "Q4_K"),
    ("q5_k", "Q5_K"),
    ("q6_k", "Q6_K"),
];

fn dtype_sel(expr: &Expr, errors: &mut Errors) -> Option<DTypeSel> {
    let ident = path_ident(expr);
    let name = ident.as_ref().map(|i| i.to_string());
    if name.as_deref() == Some("keep") {
        return Some(DTypeSel::Keep);
    }
    let variant = name.and_then(|n| DTYPES.iter().find(|(attr, _)| *attr == n)).map(|(_, v)| *v);
    match (ident, variant) {
        (Some(ident), Some(variant)) => Some(DTypeSel::To(Ident::new(variant, ident.span()))),
        _ => {
            let names: Vec<&str> = DTYPES.iter().map(|(n, _)| *n).collect();
            errors.push(expr.span(), format!("unknown dtype: expected keep or one of {}", names.join(", ")));
            None
        }
    }
}

fn fault(expr: &Expr, errors: &mut Errors) -> Option<Fault> {
    const EXPECTED: &str =
        "expected a fault: scale(\"tensor\", factor), zero(\"tensor\"), noise(\"tensor\", seed) or swap(\"a\", \"b\")";
    let Some((name, args)) = call_parts(expr) else {
        errors.push(expr.span(), EXPECTED);
        return None;
    };
    let arity = |n: usize, errors: &mut Errors| {
        let ok = args.len() == n;
        if !ok {
            errors.push(expr.span(), format!("{name}(...) takes {n} argument{}", if n == 1 { "" } else { "s" }));
        }
        ok
    };
    match name.to_string().as_str() {
        "scale" if arity(2, errors) => Some(Fault::Scale(string(args[0], errors)?, number(args[1], true, errors)?)),
        "zero" if arity(1, errors) => Some(Fault::Zero(string(args[0], errors)?)),
        "noise" if arity(2, errors) => Some(Fault::Noise(string(args[0], errors)?, integer(args[1], errors)?)),
        "swap" if arity(2, errors) => Some(Fault::Swap(string(args[0], errors)?, string(args[1], errors)?)),
        "scale" | "zero" | "noise" | "swap" => None,
        _ => {
            errors.push(name.span(), EXPECTED);
            None
        }
    }
}

fn tolerance(expr: &Expr, errors: &mut Errors) -> Option<Tol> {
    const EXPECTED: &str = "expected a tolerance: logits(max_abs = X), nmse(X), cosine(X), kld(X) or top1";
    let Some((name, args)) = call_parts(expr) else {
        errors.push(expr.span(), EXPECTED);
        return None;
    };
    let single = |errors: &mut Errors| match args.as_slice() {
        [value] => number(value, false, errors),
        _ => {
            errors.push(expr.span(), format!("{name}(...) takes one number"));
            None
        }
    };
    match name.to_string().as_str() {
        "logits" => logits_tolerance(expr, &args, errors),
        "nmse" => single(errors).map(Tol::Nmse),
        "kld" => single(errors).map(Tol::Kld),
        "cosine" => {
            let value = single(errors)?;
            if value > 1.0 {
                errors.push(expr.span(), "a cosine similarity is at most 1");
                return None;
            }
            Some(Tol::Cosine(value))
        }
        "top1" if args.is_empty() && !matches!(expr, Expr::Call(_)) => Some(Tol::Top1),
        "top1" => {
            errors.push(expr.span(), "top1 takes no arguments");
            None
        }
        _ => {
            errors.push(name.span(), EXPECTED);
            None
        }
    }
}

fn logits_tolerance(expr: &Expr, args: &[&Expr], errors: &mut Errors) -> Option<Tol> {
    match args {
        [Expr::Assign(ExprAssign { left, right, .. })] => {
            if path_ident(left).is_some_and(|k| k == "max_abs") {
                number(right, false, errors).map(Tol::LogitsMaxAbs)
            } else {
                errors.push(left.span(), "logits(...) takes `max_abs = X`");
                None
            }
        }
        _ => {
            errors.push(expr.span(), "expected logits(max_abs = X)");
            None
        }
    }
}

/// `Classification` variants, and whether each carries a layer.
const CLASSIFICATIONS: &[(&str, bool)] = &[
    ("WeightLoadFailure", false),
    ("EmbeddingFailure", false),
    ("AttentionOverflow", false),
    ("LayerCorrupted", true),
    ("KvCacheInitBug", false),
    ("ContextOverflow", false),
    ("TokenizerMismatch", false),
    ("DTypeMismatch", false),
    ("LayoutMismatch", false),
    ("Unknown", false),
];

fn expect(expr: &Expr, errors: &mut Errors) -> Option<Expect> {
    const EXPECTED: &str = "expected identical, equivalent(<tolerance>) or diverged(<Classification>)";
    let Some((name, args)) = call_parts(expr) else {
        errors.push(expr.span(), EXPECTED);
        return None;
    };
    match name.to_string().as_str() {
        "identical" if args.is_empty() => Some(Expect::Identical),
        "identical" => {
            errors.push(expr.span(), "identical takes no arguments");
            None
        }
        "equivalent" => {
            let tols = args.iter().flat_map(|a| one_or_list(a, errors, tolerance)).collect();
            Some(Expect::Equivalent(tols))
        }
        "diverged" => match args.as_slice() {
            [] => Some(Expect::Diverged(None)),
            [class] => classification(class, errors).map(|c| Expect::Diverged(Some(c))),
            _ => {
                errors.push(expr.span(), "diverged(...) takes one classification");
                None
            }
        },
        _ => {
            errors.push(name.span(), EXPECTED);
            None
        }
    }
}

fn classification(expr: &Expr, errors: &mut Errors) -> Option<(Ident, Option<u64>)> {
    let names: Vec<&str> = CLASSIFICATIONS.iter().map(|(n, _)| *n).collect();
    let Some((name, args)) = call_parts(expr) else {
        errors.push(expr.span(), format!("expected a classification: {}", names.join(", ")));
        return None;
    };
    let Some(&(_, takes_layer)) = CLASSIFICATIONS.iter().find(|(n, _)| name == n) else {
        errors.push(name.span(), format!("unknown classification `{name}`; expected one of {}", names.join(", ")));
        return None;
    };
    match (takes_layer, args.as_slice()) {
        (true, [layer]) => integer(layer, errors).map(|l| (name, Some(l))),
        (false, []) if !matches!(expr, Expr::Call(_)) => Some((name, None)),
        (true, _) => {
            errors.push(expr.span(), format!("{name}(N) takes the layer index"));
            None
        }
        (false, _) => {
            errors.push(expr.span(), format!("{name} takes no arguments"));
            None
        }
    }
}

fn backend(expr: &Expr, errors: &mut Errors) -> Option<Backend> {
    let name = path_ident(expr).map(|i| i.to_string());
    match BACKENDS.iter().find(|known| Some(**known) == name.as_deref()) {
        Some(known) => Some(Backend(known)),
        None => {
            errors.push(expr.span(), format!("unknown backend: expected one of {}", BACKENDS.join(", ")));
            None
        }
    }
}
