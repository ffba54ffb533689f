//! The conversion cache shared by concurrent test processes and threads: the
//! real 0.5B model converted to APR through `testing::cache::cached`, asked for
//! at the same moment by several processes (this test binary started again in
//! a child role) of two threads each, and by several threads of one process.
//! Exactly one caller converts; every caller gets the same path to the same
//! bytes; the cache folder holds that one file and no lock or temporary file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apr_engine::container::{FormatKind, ModelFile};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::testing::cache::cached;
use apr_engine::testing::manifest::sha256_file;
use apr_engine::testing::models::QWEN_0_5B;

/// The cache folder a child process converts into; its presence selects the child role.
const CHILD_CACHE: &str = "APR_CACHE_TEST_CHILD_CACHE";
/// The folder where children meet before they all call the cache at once.
const CHILD_BARRIER: &str = "APR_CACHE_TEST_CHILD_BARRIER";
const PROCESSES: usize = 3;
const THREADS_PER_PROCESS: usize = 2;

/// What one caller saw: whether its conversion ran, the path it got, the
/// sha256 of the bytes there, and when its call started and ended (ms since the epoch).
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    converted: bool,
    path: PathBuf,
    sha256: String,
    started_ms: u128,
    ended_ms: u128,
}

impl Outcome {
    fn line(&self) -> String {
        format!(
            "OUTCOME converted={} started={} ended={} sha256={} path={}",
            self.converted,
            self.started_ms,
            self.ended_ms,
            self.sha256,
            self.path.display()
        )
    }

    fn parse(line: &str) -> Option<Outcome> {
        let rest = line.strip_prefix("OUTCOME ")?;
        let (fields, path) = rest.split_once(" path=")?;
        let field = |name: &str| {
            fields.split(' ').find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('='))).map(str::to_string)
        };
        Some(Outcome {
            converted: field("converted")?.parse().ok()?,
            started_ms: field("started")?.parse().ok()?,
            ended_ms: field("ended")?.parse().ok()?,
            sha256: field("sha256")?,
            path: PathBuf::from(path),
        })
    }
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// The 0.5B model as APR through the cache, as the test runner's `convert(apr)` asks for it.
fn convert_through_cache(cache: &Path) -> Outcome {
    let model = QWEN_0_5B.require();
    let started_ms = now_ms();
    let mut converted = false;
    let path = cached(cache, &model, "convert to=apr dtype=keep", "apr", |tmp| {
        converted = true;
        let options = ConvertOptions { to: FormatKind::Apr, dtype: DTypeChoice::Keep, force: true };
        convert(&ModelFile::open(&model)?, tmp, options, &mut |_| {}).map(drop)
    })
    .expect("the cached conversion");
    let ended_ms = now_ms();
    Outcome { converted, sha256: sha256_file(&path).unwrap(), path, started_ms, ended_ms }
}

/// `threads` threads asking for the conversion at once.
fn convert_from_threads(cache: &Path, threads: usize) -> Vec<Outcome> {
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    convert_through_cache(cache)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Waits until all `PROCESSES` children have said they are ready (one file each in `barrier`).
fn meet_the_other_processes(barrier: &Path) {
    std::fs::write(barrier.join(format!("ready-{}", std::process::id())), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(barrier).unwrap().count() < PROCESSES {
        assert!(Instant::now() < deadline, "the other child processes did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child role: run by `processes_share_one_conversion` with `CHILD_CACHE` set.
#[test]
#[ignore = "a child role of processes_share_one_conversion, which runs it"]
fn child_converts_through_the_cache() {
    let cache = std::env::var_os(CHILD_CACHE).expect("run by processes_share_one_conversion");
    let barrier = std::env::var_os(CHILD_BARRIER).expect("run by processes_share_one_conversion");
    meet_the_other_processes(Path::new(&barrier));
    for outcome in convert_from_threads(Path::new(&cache), THREADS_PER_PROCESS) {
        println!("{}", outcome.line());
    }
}

/// Checks what the callers saw and what the cache folder holds.
fn check_one_conversion(cache: &Path, outcomes: &[Outcome], callers: usize) {
    assert_eq!(outcomes.len(), callers, "every caller reported: {outcomes:#?}");
    let converters: Vec<&Outcome> = outcomes.iter().filter(|o| o.converted).collect();
    assert_eq!(converters.len(), 1, "exactly one caller converted: {outcomes:#?}");
    let first = &outcomes[0];
    assert!(outcomes.iter().all(|o| o.path == first.path), "one path for all: {outcomes:#?}");
    assert!(outcomes.iter().all(|o| o.sha256 == first.sha256), "the same bytes for all: {outcomes:#?}");
    assert_eq!(sha256_file(&first.path).unwrap(), first.sha256, "the file was not replaced afterwards");
    // The callers overlapped: someone who reused the file had asked before the conversion ended.
    let converter = converters[0];
    assert!(
        outcomes.iter().any(|o| !o.converted && o.started_ms < converter.ended_ms),
        "the calls were concurrent: {outcomes:#?}"
    );
    let mut entries: Vec<PathBuf> = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    assert_eq!(entries, std::slice::from_ref(&first.path), "only the converted file is left (no lock, no temporary)");
    // The output is a whole APR file of the model.
    let apr = ModelFile::open(&first.path).unwrap();
    let gguf = ModelFile::open(QWEN_0_5B.require()).unwrap();
    assert!(matches!(apr.format(), apr_engine::Format::Apr { .. }), "{:?}", apr.format());
    assert_eq!(apr.tensors().len(), gguf.tensors().len());
}

#[test]
fn processes_share_one_conversion() {
    QWEN_0_5B.require();
    let work = tempfile::tempdir().unwrap();
    let (cache, barrier) = (work.path().join("cache"), work.path().join("barrier"));
    std::fs::create_dir_all(&barrier).unwrap();
    let me = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&me)
                .args(["child_converts_through_the_cache", "--exact", "--ignored", "--nocapture"])
                .env(CHILD_CACHE, &cache)
                .env(CHILD_BARRIER, &barrier)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outcomes = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "a child failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        outcomes.extend(stdout.lines().filter_map(Outcome::parse));
    }
    check_one_conversion(&cache, &outcomes, PROCESSES * THREADS_PER_PROCESS);
}

#[test]
fn threads_share_one_conversion() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let outcomes = convert_from_threads(&cache, 4);
    check_one_conversion(&cache, &outcomes, 4);
    // A later caller reuses the file without converting.
    let later = convert_through_cache(&cache);
    assert!(!later.converted && later.path == outcomes[0].path && later.sha256 == outcomes[0].sha256);
}
