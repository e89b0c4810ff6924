//! OUTDIR/summary.json and OUTDIR/summary.xml (JUnit, one `<testsuite>` per
//! image), rebuilt from the result records present, and the text table.
//!
//! Array tasks finish in any order and each rewrites the summary, so the read
//! of the records and the write of the summary happen under an exclusive lock
//! on OUTDIR/.imgsan-batch.lock: whichever task takes it last has seen every
//! record written before, and the summary is complete when the last task ends.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_result, EntryResult, Run, Status, PENDING_EXIT_CODE, SCHEMA_VERSION};
use crate::output::report::{escape_xml, junit_suite};
use crate::output::sink::write_file_atomically;
use crate::policy::Report;

/// One image in summary.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub index: usize,
    pub name: String,
    pub image: String,
    pub status: Status,
    /// Null while pending.
    pub exit_code: Option<u8>,
    /// Check ids of the blocking findings.
    pub blocking: Vec<String>,
    /// The output image (file name in OUTDIR), its size and BLAKE3; null
    /// unless written.
    pub output: Option<super::OutputFile>,
    pub report: Option<String>,
    pub manifest: Option<String>,
    pub wall_seconds: Option<f64>,
    pub error: Option<String>,
}

/// summary.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub manifest: String,
    pub output_dir: String,
    /// How many images have each status.
    pub counts: std::collections::BTreeMap<String, usize>,
    /// The worst entry's exit code (a pending entry counts as
    /// [`PENDING_EXIT_CODE`]).
    pub exit_code: u8,
    pub images: Vec<Item>,
}

impl Summary {
    pub fn pending(&self) -> usize {
        self.images
            .iter()
            .filter(|i| i.status == Status::Pending)
            .count()
    }
}

fn item(e: &super::Entry, r: Option<EntryResult>) -> Item {
    match r {
        Some(r) => Item {
            index: e.index,
            name: e.name.clone(),
            image: e.image.clone(),
            status: r.status,
            exit_code: Some(r.exit_code),
            blocking: r.blocking,
            output: r.output,
            report: r.report,
            manifest: r.manifest,
            wall_seconds: Some(r.wall_seconds),
            error: r.error,
        },
        None => Item {
            index: e.index,
            name: e.name.clone(),
            image: e.image.clone(),
            status: Status::Pending,
            exit_code: None,
            blocking: Vec::new(),
            output: None,
            report: None,
            manifest: None,
            wall_seconds: None,
            error: None,
        },
    }
}

/// The summary of the records present, without writing it.
pub fn collect(run: &Run) -> Summary {
    let images: Vec<Item> = run
        .manifest
        .entries
        .iter()
        .map(|e| item(e, read_result(&run.files(e), e)))
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for s in [
        Status::Clean,
        Status::Written,
        Status::Blocked,
        Status::Failed,
        Status::Pending,
    ] {
        counts.insert(s.as_str().to_string(), 0);
    }
    for i in &images {
        *counts.entry(i.status.as_str().to_string()).or_insert(0) += 1;
    }
    let exit_code = images
        .iter()
        .map(|i| i.exit_code.unwrap_or(PENDING_EXIT_CODE))
        .max()
        .unwrap_or(0);
    Summary {
        schema_version: SCHEMA_VERSION,
        manifest: run.manifest.path.display().to_string(),
        output_dir: run.outdir.display().to_string(),
        counts,
        exit_code,
        images,
    }
}

/// Rebuilds summary.json and summary.xml from the records present, under the
/// OUTDIR lock, each written through a temporary name.
pub fn rewrite_summary(run: &Run) -> crate::Result<Summary> {
    let lock_path = run.outdir.join(".imgsan-batch.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| crate::Error::output(lock_path.display().to_string(), e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        crate::Error::output(lock_path.display().to_string(), std::io::Error::from(e))
    })?;
    let summary = collect(run);
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
    write_file_atomically(&run.outdir.join("summary.json"), |w| {
        w.write_all(json.as_bytes())
    })?;
    let xml = junit(run, &summary);
    write_file_atomically(&run.outdir.join("summary.xml"), |w| {
        w.write_all(xml.as_bytes())
    })?;
    drop(lock);
    Ok(summary)
}

/// Reads an entry's policy report back, for its JUnit suite.
fn read_report(dir: &Path, file: &str) -> Option<Report> {
    let text = std::fs::read(dir.join(file)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// summary.xml: one `<testsuite>` per image, named after it. An image with a
/// report has the report's test cases (blocking findings are failures); a
/// failed image has one case with an `<error>`; a pending one, one skipped case.
pub fn junit(run: &Run, s: &Summary) -> String {
    let (mut tests, mut failures, mut errors, mut skipped) = (0usize, 0u32, 0usize, 0usize);
    let mut suites = String::new();
    for i in &s.images {
        let props = vec![
            ("image", i.image.clone()),
            ("status", i.status.as_str().to_string()),
            (
                "exit_code",
                i.exit_code
                    .map_or_else(|| "-".to_string(), |c| c.to_string()),
            ),
        ];
        let report = i
            .report
            .as_deref()
            .filter(|_| matches!(i.status, Status::Clean | Status::Written | Status::Blocked))
            .and_then(|f| read_report(&run.outdir, f));
        if let Some(r) = report {
            let suite = junit_suite(&r, &i.name, &props);
            tests += suite.tests;
            failures += suite.failures;
            suites.push_str(&suite.xml);
            continue;
        }
        let (e, k) = match i.status {
            Status::Pending => (0, 1),
            _ => (1, 0),
        };
        errors += e;
        skipped += k;
        tests += 1;
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{}\" tests=\"1\" failures=\"0\" errors=\"{e}\" skipped=\"{k}\" time=\"{:.3}\">",
            escape_xml(&i.name),
            i.wall_seconds.unwrap_or(0.0)
        );
        suites.push_str("    <properties>\n");
        for (k, v) in &props {
            let _ = writeln!(
                suites,
                "      <property name=\"{}\" value=\"{}\"/>",
                escape_xml(k),
                escape_xml(v)
            );
        }
        suites.push_str("    </properties>\n");
        let _ = write!(
            suites,
            "    <testcase classname=\"imgsan.batch\" name=\"sanitize\" time=\"0\">"
        );
        match i.status {
            Status::Pending => suites.push_str("<skipped message=\"not run yet\"/>"),
            _ => {
                let msg = i.error.as_deref().unwrap_or("failed");
                let _ = write!(
                    suites,
                    "<error type=\"exit {}\" message=\"{}\">{}</error>",
                    i.exit_code.unwrap_or(0),
                    escape_xml(msg),
                    escape_xml(msg)
                );
            }
        }
        suites.push_str("</testcase>\n  </testsuite>\n");
    }
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"imgsan batch\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"0\">"
    );
    out.push_str(&suites);
    out.push_str("</testsuites>\n");
    out
}

/// The text table: one line per image.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let w = s
        .images
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    let _ = writeln!(
        out,
        "{:>3}  {:<w$}  {:<7}  {:>4}  {:>9}  {:>8}  blocking / error",
        "#", "name", "status", "exit", "output", "time"
    );
    for i in &s.images {
        let name: String = crate::output::report::escape_terminal(&i.name)
            .chars()
            .take(40)
            .collect();
        let detail = match (&i.error, i.blocking.is_empty()) {
            (Some(e), _) => crate::output::report::escape_terminal(e),
            (None, false) => i.blocking.join(", "),
            (None, true) => String::new(),
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<w$}  {:<7}  {:>4}  {:>9}  {:>8}  {detail}",
            i.index,
            name,
            i.status.as_str(),
            i.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            i.output
                .as_ref()
                .map_or_else(|| "-".into(), |o| crate::units::human(o.size_bytes)),
            i.wall_seconds
                .map_or_else(|| "-".into(), |t| format!("{t:.1} s")),
        );
    }
    let counts: Vec<String> = s
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "{} images: {}; exit code {}",
        s.images.len(),
        counts.join(", "),
        s.exit_code
    );
    out
}
