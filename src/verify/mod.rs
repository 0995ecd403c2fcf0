//! `pinwatch verify`: regression cases on captures, for CI. A case is a directory holding
//! captures and a `case.toml` stating what a run of them must show ([`case`]); each case is run
//! in-process through the library pipeline ([`run`]), its expectations compared with what the
//! run showed ([`compare`]), and the results printed as a readable diff, written as JUnit XML
//! ([`junit`]) or as JSON (schema `pinwatch.verify-result/1`, `schema/verify-result.schema.json`).
//! `--bless` writes the expectations from a run instead ([`bless`]).
//!
//! Exit codes (the README's table, shared with replay and export): 0 every case holds, 1 a case
//! fails, 2 bad flags, 3 a case could not be run (unreadable or invalid case file, missing
//! capture or CA file), 4 a capture is damaged, 5 an output could not be written. When several
//! apply, the highest wins: a case that could not be run is never hidden by one that failed.

pub mod bless;
pub mod case;
mod comments;
pub mod compare;
pub mod junit;
pub mod run;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use case::{Case, LoadedCase};
use compare::{Difference, escape_line};
use run::RunError;

/// The result document's type and version (`--json`).
pub const RESULT_SCHEMA: &str = "pinwatch.verify-result/1";

mod exit {
    pub const FAILED: u8 = 1;
    pub const INPUT: u8 = 3;
    pub const DAMAGED: u8 = 4;
    pub const OUTPUT: u8 = 5;
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
pinwatch verify captures/verify/*/\n  \
pinwatch verify --junit verify.xml my-cases/*/\n  \
pinwatch verify --bless my-cases/banking-app/\n\n\
A case is a directory with captures and a case.toml (format pinwatch.verify/1, see the README).\n\
Exit codes: 0 all hold, 1 a case fails, 2 bad flags, 3 a case cannot be run, 4 damaged capture,\n\
5 output not written.")]
pub struct VerifyArgs {
    /// Case directories (or their case.toml files).
    #[arg(required = true, value_name = "CASE")]
    pub cases: Vec<PathBuf>,
    /// Also write the results as JUnit XML to PATH, for CI test reports.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Print the results as one JSON document on standard output (the diff goes to standard error).
    #[arg(long)]
    pub json: bool,
    /// Write each case's expectations from this run (creating case.toml if there is none),
    /// keeping hand-written expectations the run still meets; review the result before committing.
    #[arg(long)]
    pub bless: bool,
    /// Worker threads per run (results do not depend on it). Default: the number of cores.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    Error,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub path: String,
    pub status: Status,
    /// One line: why it failed or could not run; empty when it passed.
    pub message: String,
    pub differences: Vec<Difference>,
    /// What `--bless` changed in hand-written expectations.
    pub notes: Vec<String>,
    pub time_s: f64,
    /// The readable diff (also the JUnit failure's text).
    #[serde(skip)]
    pub diff: String,
    /// Exit code this case calls for.
    #[serde(skip)]
    pub code: u8,
}

#[derive(Serialize)]
struct ResultDoc<'a> {
    schema: &'static str,
    passed: usize,
    failed: usize,
    errors: usize,
    cases: &'a [CaseResult],
}

fn error_result(name: String, path: String, message: String, code: u8) -> CaseResult {
    CaseResult {
        name,
        path,
        status: Status::Error,
        diff: message.clone(),
        message,
        differences: Vec::new(),
        notes: Vec::new(),
        time_s: 0.0,
        code,
    }
}

fn run_error(case: &LoadedCase, e: RunError) -> CaseResult {
    let code = match e {
        RunError::Capture { damaged: true, .. } => exit::DAMAGED,
        _ => exit::INPUT,
    };
    error_result(
        case.name.clone(),
        case.dir.display().to_string(),
        e.to_string(),
        code,
    )
}

/// Loads the case at `path`; with `bless`, a directory without a case file starts empty.
fn load(path: &Path, bless: bool) -> Result<LoadedCase, Box<CaseResult>> {
    let file = case::case_file(path);
    if bless && path.is_dir() && !file.exists() {
        return Ok(case::loaded(&file, Case::new()));
    }
    case::load(path).map_err(|e| {
        let mut message = e.to_string();
        if matches!(&e, case::CaseError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        {
            message.push_str("; give a case directory holding case.toml (--bless creates one)");
        }
        let shown = path.display().to_string();
        Box::new(error_result(shown.clone(), shown, message, exit::INPUT))
    })
}

/// Runs one case: verifies it, or blesses it and checks the blessed file holds.
pub fn verify_case(path: &Path, threads: usize, bless: bool) -> CaseResult {
    let started = Instant::now();
    let loaded = match load(path, bless) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let got = match run::run(&loaded, threads) {
        Ok(g) => g,
        Err(e) => return run_error(&loaded, e),
    };
    let mut notes = Vec::new();
    let mut case = loaded.case.clone();
    if bless {
        let (blessed, changed) = bless::bless(case, &got);
        notes = changed;
        let file = case::case_file(path);
        let text = match std::fs::read_to_string(&file) {
            Ok(old) => comments::keep_comments(&old, &blessed.to_toml()),
            Err(_) => blessed.to_toml(),
        };
        if let Err(e) = crate::sinks::replace::replace_file(&file, text.as_bytes()) {
            return error_result(
                loaded.name,
                path.display().to_string(),
                format!("writing {}: {e}", file.display()),
                exit::OUTPUT,
            );
        }
        case = blessed;
    }
    let differences = compare::compare(&case, &got);
    let (status, message, code) = if differences.is_empty() {
        (Status::Passed, String::new(), 0)
    } else {
        let n = differences.len();
        let what = if n == 1 {
            "1 expectation does not hold".to_string()
        } else {
            format!("{n} expectations do not hold")
        };
        (Status::Failed, what, exit::FAILED)
    };
    CaseResult {
        name: loaded.name,
        path: loaded.dir.display().to_string(),
        status,
        diff: compare::render(&differences),
        message,
        differences,
        notes,
        time_s: started.elapsed().as_secs_f64(),
        code,
    }
}

/// The human-readable result of one case, as printed.
pub fn human(r: &CaseResult) -> String {
    let name = escape_line(&r.name);
    let mut out = match r.status {
        Status::Passed => format!("PASS  {name} ({:.2}s)\n", r.time_s),
        Status::Failed => format!("FAIL  {name} ({:.2}s): {}\n{}", r.time_s, r.message, r.diff),
        Status::Error => format!("ERROR {name}: {}\n", escape_line(&r.message)),
    };
    for n in &r.notes {
        out.push_str(&format!("  blessed: {}\n", escape_line(n)));
    }
    out
}

pub fn run_verify(args: VerifyArgs) -> ExitCode {
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let results: Vec<CaseResult> = args
        .cases
        .iter()
        .map(|c| verify_case(c, threads, args.bless))
        .collect();
    let mut human_out: Box<dyn Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let (passed, failed, errors) = (
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Error),
    );
    let mut text: String = results.iter().map(human).collect();
    text.push_str(&format!(
        "verify: {} {}: {passed} passed, {failed} failed, {errors} could not run\n",
        results.len(),
        if results.len() == 1 { "case" } else { "cases" },
    ));
    let _ = human_out.write_all(text.as_bytes());
    let mut code = results.iter().map(|r| r.code).max().unwrap_or(0);
    if args.json {
        let doc = ResultDoc {
            schema: RESULT_SCHEMA,
            passed,
            failed,
            errors,
            cases: &results,
        };
        let mut line = serde_json::to_string_pretty(&doc).expect("results serialise");
        line.push('\n');
        if let Err(e) = std::io::stdout().write_all(line.as_bytes()) {
            eprintln!("pinwatch: writing the JSON result: {e}");
            code = exit::OUTPUT;
        }
    }
    if let Some(path) = &args.junit {
        let written = junit::render(&results).and_then(|xml| std::fs::write(path, xml));
        if let Err(e) = written {
            eprintln!(
                "pinwatch: --junit {}: {e}; choose a writable path",
                path.display()
            );
            code = exit::OUTPUT;
        }
    }
    ExitCode::from(code)
}
