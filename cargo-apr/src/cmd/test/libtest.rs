//! Per-test results from `cargo test`'s human output, the only form stable
//! libtest prints (`--format json` needs nightly). What is read: cargo's
//! `Running SOURCE (BINARY)` and `Doc-tests CRATE` lines, which start a
//! suite; libtest's `test NAME ... ok|FAILED|ignored` lines; the
//! `---- NAME stdout ----` sections, which hold each failed test's output;
//! and `test result:`, which ends a suite. A suite that never reaches its
//! `test result:` line (the binary crashed) is reported, not dropped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseRun {
    /// The test's path inside its binary, as libtest names it.
    pub name: String,
    pub outcome: Outcome,
    /// What the test printed (its panic message included), when libtest showed it.
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SuiteRun {
    /// `tests/foo.rs`, `unittests src/lib.rs` or `doc-tests crate`: what cargo printed.
    pub name: String,
    /// The test crate's name (`module_path!()` of its top level): `foo` for `tests/foo.rs`.
    pub crate_name: String,
    pub cases: Vec<CaseRun>,
    /// Whether its `test result:` line was seen.
    pub finished: bool,
}

/// Reads lines as they come; `finish` returns the suites.
#[derive(Default)]
pub struct Parser {
    suites: Vec<SuiteRun>,
    /// The test whose `---- NAME stdout ----` section is being read, and its lines.
    capturing: Option<(String, Vec<String>)>,
}

impl Parser {
    pub fn line(&mut self, line: &str) {
        let trimmed = line.trim_start();
        if let Some(suite) = suite_start(trimmed) {
            self.end_capture();
            self.suites.push(suite);
        } else if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.end_capture();
            self.capturing = Some((name.to_string(), Vec::new()));
        } else if matches!(line, "failures:" | "successes:") {
            self.end_capture();
        } else if line.starts_with("test result: ") {
            self.end_capture();
            if let Some(suite) = self.suites.last_mut() {
                suite.finished = true;
            }
        } else if let Some((_, lines)) = &mut self.capturing {
            lines.push(line.to_string());
        } else if let Some(case) = case_line(line) {
            if let Some(suite) = self.suites.last_mut() {
                suite.cases.push(case);
            }
        }
    }

    pub fn finish(mut self) -> Vec<SuiteRun> {
        self.end_capture();
        self.suites
    }

    fn end_capture(&mut self) {
        let Some((name, mut lines)) = self.capturing.take() else { return };
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let case = self.suites.last_mut().and_then(|s| s.cases.iter_mut().find(|c| c.name == name));
        if let Some(case) = case {
            case.output = Some(lines.join("\n"));
        }
    }
}

/// `Running tests/foo.rs (target/debug/deps/foo-0123abcd)` or `Doc-tests foo`.
fn suite_start(trimmed: &str) -> Option<SuiteRun> {
    let suite = |name: String, crate_name: String| SuiteRun { name, crate_name, cases: Vec::new(), finished: false };
    if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
        return Some(suite(format!("doc-tests {krate}"), krate.replace('-', "_")));
    }
    let rest = trimmed.strip_prefix("Running ")?;
    let (source, binary) = rest.strip_suffix(')')?.rsplit_once(" (")?;
    let file = binary.rsplit(['/', '\\']).next()?;
    let file = file.strip_suffix(".exe").unwrap_or(file);
    // Cargo names test binaries `<crate>-<16 hex digits>`.
    let crate_name = file.rsplit_once('-').map_or(file, |(name, _hash)| name);
    Some(suite(source.to_string(), crate_name.replace('-', "_")))
}

/// `test NAME ... ok`, `... FAILED`, `... ignored[, reason]`; benches and other lines give `None`.
fn case_line(line: &str) -> Option<CaseRun> {
    let (name, result) = line.strip_prefix("test ")?.rsplit_once(" ... ")?;
    let outcome = match result.trim_end() {
        "ok" => Outcome::Passed,
        "FAILED" => Outcome::Failed,
        r if r.starts_with("ignored") => Outcome::Ignored,
        _ => return None,
    };
    Some(CaseRun { name: name.to_string(), outcome, output: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SuiteRun> {
        let mut parser = Parser::default();
        text.lines().for_each(|l| parser.line(l));
        parser.finish()
    }

    /// `cargo test` on a crate with a lib test, an integration test that fails
    /// (its panic message on two lines) and a doc test, as cargo 1.95 prints it.
    const OUTPUT: &str = "\
    Finished `test` profile [optimized + debuginfo] target(s) in 0.05s
     Running unittests src/lib.rs (target/debug/deps/downstream-0f1e2d3c4b5a6978)

running 1 test
test tests::adds ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/plain-checks.rs (target/debug/deps/plain_checks-1a2b3c4d5e6f7081)

running 3 tests
test inner::slow ... ignored, needs a GPU
test two_is_three ... FAILED
test one_is_one ... ok

failures:

---- two_is_three stdout ----

thread 'two_is_three' panicked at tests/plain-checks.rs:3:5:
assertion `left == right` failed
  left: 2
 right: 3


failures:
    two_is_three

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: test failed, to rerun pass `--test plain-checks`
   Doc-tests downstream

running 1 test
test src/lib.rs - add (line 3) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s
";

    #[test]
    fn reads_suites_cases_and_failure_output() {
        let suites = parse(OUTPUT);
        let names: Vec<(&str, &str)> = suites.iter().map(|s| (s.name.as_str(), s.crate_name.as_str())).collect();
        assert_eq!(
            names,
            [
                ("unittests src/lib.rs", "downstream"),
                ("tests/plain-checks.rs", "plain_checks"),
                ("doc-tests downstream", "downstream")
            ]
        );
        assert!(suites.iter().all(|s| s.finished));
        let plain = &suites[1].cases;
        assert_eq!(plain.len(), 3);
        assert_eq!((plain[0].name.as_str(), plain[0].outcome), ("inner::slow", Outcome::Ignored));
        assert_eq!(
            (plain[2].name.as_str(), plain[2].outcome, plain[2].output.as_deref()),
            ("one_is_one", Outcome::Passed, None)
        );
        let failed = &plain[1];
        assert_eq!(failed.outcome, Outcome::Failed);
        assert_eq!(
            failed.output.as_deref(),
            Some("\nthread 'two_is_three' panicked at tests/plain-checks.rs:3:5:\nassertion `left == right` failed\n  left: 2\n right: 3")
        );
        assert_eq!(suites[2].cases[0].name, "src/lib.rs - add (line 3)");
    }

    #[test]
    fn a_crashed_binary_leaves_its_suite_unfinished() {
        let suites = parse(
            "     Running tests/boom.rs (target/debug/deps/boom-00112233aabbccdd)\n\nrunning 2 tests\ntest first ... ok\n",
        );
        assert_eq!(suites.len(), 1);
        assert!(!suites[0].finished);
        assert_eq!(suites[0].cases.len(), 1);
    }
}
