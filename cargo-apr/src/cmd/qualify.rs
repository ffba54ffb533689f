//! `cargo apr qualify MODEL`: the same-model comparison protocol as one
//! command. Class A (the quantized model as GGUF and as APR, on CPU and GPU),
//! class B (full precision: SafeTensors F32 and APR F32), the tracing matrix
//! (run, chat, serve) and, with `--against`, parity with a running server;
//! a points table out of 145 and a verdict (exit 0 qualified, 5 not, 1 error).

mod against;
mod cells;
mod junit;
mod prompts;
mod report;
mod server;
mod tracing_matrix;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use apr_engine::backend::BackendKind;
use apr_engine::container::{FormatKind, ModelFile};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::dtype::DType;
use apr_engine::testing::cache;
use apr_engine::tracediff::{Side, Tolerance};

use cells::{CellPlan, Truth, QUANTIZATION_TOLERANCE};
use report::{Cell, QualifyReport, NOT_SELECTED};

#[derive(clap::Args)]
pub struct Args {
    /// The quantized model to qualify (GGUF).
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// Backends to run the cells on (comma-separated: cpu, cuda).
    #[arg(long, value_delimiter = ',', value_parser = super::common_args::backend_kind, default_value = "cpu,cuda")]
    backends: Vec<BackendKind>,
    /// An OpenAI-compatible server to check parity against (llama-server, Ollama, cargo apr serve).
    #[arg(long, value_name = "URL")]
    against: Option<String>,
    /// Questions to ask, one a line (the ground truth is then the A1 cell).
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Ask only the first N prompts.
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one)]
    max_prompts: Option<usize>,
    /// Greedy tokens per prompt at most.
    #[arg(long, short = 'n', default_value_t = 32, value_parser = super::values::at_least_one)]
    max_tokens: usize,
    /// Use this APR file for A2 (and A4) instead of converting MODEL.
    #[arg(long, value_name = "FILE")]
    apr: Option<PathBuf>,
    /// Run only these cells (A1,A2,B1,T3,...); the others are SKIP and the run cannot qualify.
    #[arg(long, value_delimiter = ',', value_name = "CELLS")]
    only: Vec<String>,
    /// Where converted files are cached (default $APR_CACHE_DIR, else ~/.cache/apr/qualify).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Print the report as JSON (schema apr.qualify.v1) on stdout; the table goes to stderr.
    #[arg(long)]
    json: bool,
    /// Write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write qualify.json and junit.xml into DIR.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
}

/// Exit code of a run that completed but did not qualify.
const NOT_QUALIFIED: u8 = 5;

pub fn run(args: Args) -> anyhow::Result<u8> {
    let started = Instant::now();
    if !args.model.is_file() {
        bail!("{}: no such model file", args.model.display());
    }
    // A file that does not even parse is an error (exit 1) naming its field and
    // offset, not eighteen failed cells.
    ModelFile::open(&args.model)?;
    if let Some(bad) = args.only.iter().find(|id| !known_cell(id)) {
        return Err(super::UsageError(format!("--only: no cell named {bad} (A1-A4, B1-B4, T1-T15)")).into());
    }
    let set = prompts::load(&args.model, args.prompts.as_deref(), args.max_prompts)?;
    let selected = |id: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let mut notes = Vec::new();
    let mut cells = class_cells(&args, &set.prompts, &selected, &mut notes)?;
    let a1_answers = cells.a1_answers.take();
    cells.cells.extend(tracing_matrix::run_all(&args.model, &args.backends, selected));
    let parity = match (&args.against, &a1_answers) {
        (Some(url), Some(a1)) => Some(against::check(url, &set.prompts, &a1.texts, a1.decode_tok_s, args.max_tokens)?),
        (Some(_), None) => bail!("--against needs the A1 cell's answers, and A1 did not run"),
        (None, _) => None,
    };
    let backends = args.backends.iter().map(|b| b.name().to_string()).collect();
    let report = QualifyReport::new(
        args.model.display().to_string(),
        backends,
        set.ground_truth,
        notes,
        cells.cells,
        parity,
        started,
    );
    write_outputs(&args, &report)?;
    Ok(if report.qualified { 0 } else { NOT_QUALIFIED })
}

fn known_cell(id: &str) -> bool {
    let id = id.to_ascii_uppercase();
    let number = |prefix: &str, last: u32| {
        id.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| (1..=last).contains(&n))
    };
    number("A", 4) || number("B", 4) || number("T", 15)
}

fn write_outputs(args: &Args, report: &QualifyReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    let xml = junit::of(report).to_string().context("serializing the JUnit report")?;
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write(&dir.join("qualify.json"), &json)?;
        write(&dir.join("junit.xml"), &xml)?;
    }
    if let Some(file) = &args.junit {
        write(file, &xml)?;
    }
    if args.json {
        eprint!("{}", report.render());
        println!("{json}");
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The class A and B cells, and A1's answers (parity compares with them).
struct ClassCells {
    cells: Vec<Cell>,
    a1_answers: Option<cells::Answers>,
}

fn cache_dir(args: &Args) -> PathBuf {
    if let Some(dir) = &args.cache_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("APR_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/apr/qualify")
}

/// `input` converted to `to` with `dtype`, once per input fingerprint and
/// options (the conversion cache `cargo apr test` uses).
fn converted(
    cache: &Path,
    input: &Path,
    to: FormatKind,
    dtype: DTypeChoice,
    extension: &str,
) -> Result<PathBuf, String> {
    let options = format!("qualify convert to={extension} dtype={dtype:?}");
    cache::cached(cache, input, &options, extension, |tmp| {
        let file = ModelFile::open(input)?;
        convert(&file, tmp, ConvertOptions { to, dtype, force: true }, &mut |_| {}).map(drop)
    })
    .map_err(|e| format!("conversion to {extension} failed: {e}"))
}

/// Why a cell on `backend` cannot run here or was not asked for, if so.
fn skip_reason(id: &str, backend: BackendKind, args: &Args, selected: &impl Fn(&str) -> bool) -> Option<String> {
    if let Some(why) = backend.unavailable() {
        return Some(why);
    }
    if !args.backends.contains(&backend) {
        return Some(format!("{NOT_SELECTED} ({} not in --backends)", backend.name()));
    }
    (!selected(id)).then(|| format!("{NOT_SELECTED} (--only)"))
}

/// The expected greedy tokens of every cell but A1: llama.cpp's where known, else A1's.
struct GroundTruth<'a> {
    name: &'static str,
    tokens: Option<Vec<Vec<u32>>>,
    top5: Vec<Option<&'a prompts::StepsTop5>>,
}

/// What a cell is compared with by trace-diff.
struct Base<'a> {
    side: Option<&'a Side>,
    name: &'a str,
    tolerance: Tolerance,
}

/// Runs a cell on `file` (or fails it with why the file is missing) against
/// the ground truth and, by trace-diff, `base`; gives back its pipeline.
fn run_against(
    cell: Cell,
    file: Result<PathBuf, String>,
    backend: BackendKind,
    base: Base,
    truth: &GroundTruth,
    prompts: &[prompts::Prompt],
    max_tokens: usize,
) -> (Cell, Option<apr_engine::pipeline::Pipeline>) {
    let file = match file {
        Ok(file) => file,
        Err(why) => return (cell.fail(String::new(), why), None),
    };
    let (Some(side), Some(tokens)) = (base.side, &truth.tokens) else {
        return (cell.fail(String::new(), format!("{} did not run: nothing to compare with", base.name)), None);
    };
    let truth = Truth { name: truth.name, tokens, steps_top5: truth.top5.clone() };
    let plan = CellPlan {
        cell,
        file: &file,
        backend,
        truth: Some(truth),
        trace_against: Some((side, base.tolerance, base.name)),
    };
    let (cell, run) = cells::run_cell(plan, prompts, max_tokens);
    (cell, run.map(|(pipeline, _)| pipeline))
}

/// Class A: A1 (GGUF on the CPU) is the base; A2 (APR, blocks kept), A3/A4 on CUDA.
/// Class B: B1 (MODEL dequantized to SafeTensors F32), B2 (APR F32 from B1), B3/B4 on CUDA.
fn class_cells(
    args: &Args,
    prompts: &[prompts::Prompt],
    selected: &impl Fn(&str) -> bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<ClassCells> {
    let cache = cache_dir(args);
    let max_tokens = args.max_tokens;
    // llama.cpp's tokens, cut to the tokens asked for.
    let reference: Option<Vec<Vec<u32>>> = prompts
        .iter()
        .map(|p| p.reference.as_ref().map(|r| r.generated_ids.iter().copied().take(max_tokens).collect()))
        .collect();
    let top5: Vec<Option<&prompts::StepsTop5>> =
        prompts.iter().map(|p| p.reference.as_ref().and_then(|r| r.steps_top5.as_ref())).collect();
    let mut out = Vec::new();

    // A1 always runs: it is every other cell's trace-diff base.
    let a1_truth = reference.as_ref().map(|tokens| Truth { name: "llama.cpp", tokens, steps_top5: top5.clone() });
    let a1_plan = CellPlan {
        cell: Cell::new("A1", "greedy = ground truth", "cpu", "GGUF", 15),
        file: &args.model,
        backend: BackendKind::Cpu,
        truth: a1_truth,
        trace_against: None,
    };
    let (a1_cell, a1_run) = cells::run_cell(a1_plan, prompts, max_tokens);
    out.push(if selected("A1") { a1_cell } else { a1_cell.skip(format!("{NOT_SELECTED} (--only; run as the base)")) });
    let (a1_side, a1_answers) = match a1_run {
        Some((p, answers)) => (Some(Side { model: p.model, tokenizer: Ok(p.tokenizer) }), Some(answers)),
        None => (None, None),
    };
    let truth = match &reference {
        Some(r) => GroundTruth { name: "llama.cpp", tokens: Some(r.clone()), top5 },
        None => GroundTruth { name: "A1", tokens: a1_answers.as_ref().map(|a| a.tokens.clone()), top5: Vec::new() },
    };
    let a1_base = |tolerance| Base { side: a1_side.as_ref(), name: "A1", tolerance };

    // Class A: the APR conversion (or --apr) and the GPU.
    let mut apr_path: Option<Result<PathBuf, String>> = None;
    let a_cells =
        [("A2", BackendKind::Cpu, "APR"), ("A3", BackendKind::Cuda, "GGUF"), ("A4", BackendKind::Cuda, "APR")];
    for (id, backend, format) in a_cells {
        let cell = Cell::new(id, "greedy = ground truth, trace-diff", backend.name(), format, 15);
        if let Some(why) = skip_reason(id, backend, args, selected) {
            out.push(cell.skip(why));
            continue;
        }
        let file = match format {
            "APR" => apr_path.get_or_insert_with(|| apr_file(args, &cache)).clone(),
            _ => Ok(args.model.clone()),
        };
        out.push(run_against(cell, file, backend, a1_base(Tolerance::default()), &truth, prompts, max_tokens).0);
    }
    if args.apr.is_some() {
        notes.push("A2/A4 ran the APR file given with --apr, not a conversion of MODEL".into());
    }

    // Class B: full precision, made from MODEL since there is no checkpoint.
    let b_cells = [
        ("B1", BackendKind::Cpu, "SafeTensors"),
        ("B2", BackendKind::Cpu, "APR"),
        ("B3", BackendKind::Cuda, "SafeTensors"),
        ("B4", BackendKind::Cuda, "APR"),
    ];
    let runnable = |&(id, backend, _): &(&str, BackendKind, &str)| skip_reason(id, backend, args, selected).is_none();
    let mut b1_path = None;
    let mut b2_path = None;
    if b_cells.iter().any(runnable) {
        notes.push(
            "B1 is MODEL exported to SafeTensors F32 (no Hugging Face checkpoint): A1's weights, dequantized".into(),
        );
        let b1 = converted(&cache, &args.model, FormatKind::SafeTensors, DTypeChoice::To(DType::F32), "safetensors");
        b2_path = Some(match &b1 {
            Ok(b1) => converted(&cache, b1, FormatKind::Apr, DTypeChoice::Keep, "apr"),
            Err(e) => Err(format!("B1 was not made: {e}")),
        });
        b1_path = Some(b1);
    }
    let mut b1_side: Option<Side> = None;
    for (id, backend, format) in b_cells {
        let cell = Cell::new(id, "F32: tokens, trace-diff", backend.name(), &format!("{format} F32"), 10);
        if let Some(why) = skip_reason(id, backend, args, selected) {
            out.push(cell.skip(why));
            continue;
        }
        let file = match format {
            "APR" => b2_path.clone(),
            _ => b1_path.clone(),
        }
        .unwrap_or_else(|| Err("B1 was not made".into()));
        // B1 against A1 under the quantization tolerance; the APR copy against B1 as class A does.
        let base = match (format, &b1_side) {
            ("APR", Some(b1)) => Base { side: Some(b1), name: "B1", tolerance: Tolerance::default() },
            _ => a1_base(QUANTIZATION_TOLERANCE),
        };
        let (cell, pipeline) = run_against(cell, file, backend, base, &truth, prompts, max_tokens);
        if id == "B1" {
            b1_side = pipeline.map(|p| Side { model: p.model, tokenizer: Ok(p.tokenizer) });
        }
        out.push(cell);
    }
    Ok(ClassCells { cells: out, a1_answers })
}

/// The APR file of A2/A4: `--apr`, else MODEL converted with its blocks kept.
fn apr_file(args: &Args, cache: &Path) -> Result<PathBuf, String> {
    match &args.apr {
        Some(path) => Ok(path.clone()),
        None => converted(cache, &args.model, FormatKind::Apr, DTypeChoice::Keep, "apr"),
    }
}
