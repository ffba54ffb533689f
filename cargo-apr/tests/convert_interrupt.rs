//! Ctrl-C (SIGINT) and SIGTERM during `convert` of the real 1.5B model: the
//! process exits as interrupted and leaves nothing beside OUT, neither the
//! output nor its temporary file.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use apr_engine::testing::models::QWEN_1_5B;

fn start_convert(out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cargo-apr"))
        .args(["apr", "convert"])
        .arg(QWEN_1_5B.require())
        .arg(out)
        // Requantizing every weight keeps the conversion busy long enough to interrupt.
        .args(["--dtype", "q8_0"])
        .spawn()
        .unwrap()
}

/// Waits until the conversion has written part of its temporary file.
fn wait_for_partial_output(dir: &Path) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let growing = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".apr-tmp-") && e.metadata().unwrap().len() > 0);
        if growing {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the conversion never started writing");
}

fn interrupt_leaves_nothing(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.apr");
    let mut child = start_convert(&out);
    wait_for_partial_output(dir.path());
    let sent = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{signal}: {status:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{signal} left {left:?}");
}

#[test]
fn sigint_during_convert_removes_the_temporary_file() {
    interrupt_leaves_nothing("INT");
}

#[test]
fn sigterm_during_convert_removes_the_temporary_file() {
    interrupt_leaves_nothing("TERM");
}
