//! `imgsan batch`: many images from one manifest, each through the sanitize
//! pipeline ([`crate::pipeline::sanitize`]) as a library call, with its own
//! atomic outputs and a result record; a summary rewritten from the records
//! present after every entry; scale-out as Slurm or Kubernetes array jobs, one
//! entry per task (no scheduler of our own).
//!
//! Files of entry NAME in OUTDIR: NAME.raw, NAME.report.json, NAME.manifest
//! (when asked), and NAME.result.json, which is written last: an entry is done
//! exactly when its result is there. Everything is written under a hidden
//! temporary name first, so a killed entry leaves nothing under its final names
//! (what a kill leaves is removed when the entry is run again).
//!
//! Resuming: an entry whose result records the input's size, modification time
//! and BLAKE3, the options digest and the rules digest of this run, and whose
//! files are still there, is not redone.
//!
//! Must not: parse images or decide policy (the pipeline does), or print
//! anything (the CLI does, through [`Observer`]).

pub mod emit;
pub mod manifest;
pub mod sizing;
pub mod summary;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::check::{CheckOptions, Inputs};
use crate::error::ErrorKind;
use crate::image::Image;
use crate::output::convert::Target;
use crate::pipeline::{self, SanitizeError, SanitizeOptions};
use crate::progress::Progress;
use crate::repack::DiskSize;
use crate::rules::{Date, RuleSet, RulesError};

pub use manifest::{Entry, Manifest};
pub use summary::{rewrite_summary, Summary};

/// Version of the result and summary files' layout.
pub const SCHEMA_VERSION: u32 = 1;

/// What became of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Written, and nothing blocks (exit code 0).
    Clean,
    /// Written with `force` although findings block (exit code 1).
    Written,
    /// Blocking findings: a report, no image (exit code 1).
    Blocked,
    /// The image could not be read, a request file is wrong, or the output could
    /// not be written (exit code 2, 3 or 4).
    Failed,
    /// Not run yet, or killed while it ran.
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Clean => "clean",
            Status::Written => "written",
            Status::Blocked => "blocked",
            Status::Failed => "failed",
            Status::Pending => "pending",
        }
    }
}

/// The exit code a pending entry counts as in a summary: its output is not
/// there.
pub const PENDING_EXIT_CODE: u8 = 4;

/// The process exit code of a library error kind (README: exit codes).
pub fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Output => 4,
        ErrorKind::Io
        | ErrorKind::NotThisFormat
        | ErrorKind::Corrupt
        | ErrorKind::Checksum
        | ErrorKind::Unsupported => 3,
    }
}

/// What a rerun compares to decide an entry is up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub input_size: u64,
    /// Nanoseconds since the epoch.
    pub input_mtime_ns: u128,
    pub input_blake3: String,
    /// BLAKE3 of the entry's effective options (see [`options_digest`]).
    pub options_digest: String,
    /// BLAKE3 of the rules and the imgsan version (see [`rules_digest`]).
    pub rules_digest: String,
}

/// The output image, as a result records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// File name in OUTDIR.
    pub file: String,
    pub size_bytes: u64,
    pub blake3: Option<String>,
}

/// OUTDIR/NAME.result.json: what one entry's run gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryResult {
    pub schema_version: u32,
    pub index: usize,
    pub name: String,
    /// The manifest's `image:` value.
    pub image: String,
    pub status: Status,
    pub exit_code: u8,
    /// Why a failed entry failed.
    pub error: Option<String>,
    /// Check ids of the blocking findings (written with force, or blocked).
    pub blocking: Vec<String>,
    pub output: Option<OutputFile>,
    /// File names in OUTDIR.
    pub report: Option<String>,
    pub manifest: Option<String>,
    pub wall_seconds: f64,
    /// When it finished, seconds since the epoch.
    pub finished_unix: u64,
    /// Absent for failed entries: they are always run again.
    pub key: Option<Key>,
}

/// The files of one entry in OUTDIR.
#[derive(Debug, Clone)]
pub struct EntryFiles {
    pub dir: PathBuf,
    pub stem: String,
}

impl EntryFiles {
    pub fn new(dir: &Path, stem: &str) -> EntryFiles {
        EntryFiles {
            dir: dir.to_path_buf(),
            stem: stem.to_string(),
        }
    }
    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.stem)
    }
    pub fn raw(&self) -> PathBuf {
        self.dir.join(self.name("raw"))
    }
    pub fn report(&self) -> PathBuf {
        self.dir.join(self.name("report.json"))
    }
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(self.name("manifest"))
    }
    pub fn result(&self) -> PathBuf {
        self.dir.join(self.name("result.json"))
    }
    /// Where a final file is written before its rename.
    fn temporary(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!(
            ".{}.imgsan-batch-{}.tmp",
            self.name(suffix),
            std::process::id()
        ))
    }
    const SUFFIXES: [&'static str; 4] = ["raw", "report.json", "manifest", "result.json"];

    /// Removes the entry's final files (the result first, so that a crash here
    /// leaves an entry that is plainly not done) and any temporary file a
    /// killed run left.
    fn clear(&self) -> std::io::Result<()> {
        for s in ["result.json", "raw", "report.json", "manifest"] {
            remove_if_there(&self.dir.join(self.name(s)))?;
        }
        // Temporary names: ".NAME.SUFFIX.imgsan..." (this module's and the
        // output writers'), or "..NAME.SUFFIX.imgsan..." (a writer's of ours).
        let prefixes: Vec<String> = Self::SUFFIXES
            .iter()
            .map(|s| format!("{}.imgsan", self.name(s)))
            .collect();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let n = e.file_name();
            let n = n.to_string_lossy();
            // A writer's temporary of our temporary starts with two dots.
            let bare = n.trim_start_matches('.');
            if bare.len() < n.len() && prefixes.iter().any(|p| bare.starts_with(p.as_str())) {
                remove_if_there(&e.path())?;
            }
        }
        Ok(())
    }
}

fn remove_if_there(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads an entry's result record, if it is there and belongs to `entry`.
pub fn read_result(files: &EntryFiles, entry: &Entry) -> Option<EntryResult> {
    let text = std::fs::read(files.result()).ok()?;
    let r: EntryResult = serde_json::from_slice(&text).ok()?;
    (r.schema_version == SCHEMA_VERSION
        && r.index == entry.index
        && r.name == entry.name
        && r.image == entry.image)
        .then_some(r)
}

/// What is fixed for one run of a batch: where outputs go, the date, the
/// digests.
#[derive(Debug, Clone)]
pub struct Run {
    pub manifest: Manifest,
    /// OUTDIR, absolute.
    pub outdir: PathBuf,
    /// The date end-of-life checks use (the manifest's `today:` or the clock's).
    pub today: Date,
    pub rules_digest: String,
}

impl Run {
    /// Prepares a run: OUTDIR is created when missing; the rules are loaded to
    /// be digested.
    pub fn new(manifest: Manifest, outdir: &Path) -> Result<Run, RunError> {
        std::fs::create_dir_all(outdir)
            .map_err(|e| RunError::Output(crate::Error::output(outdir.display().to_string(), e)))?;
        let outdir = std::path::absolute(outdir).unwrap_or_else(|_| outdir.to_path_buf());
        let rules = RuleSet::load(manifest.rules_dir.as_deref(), &[])?;
        Ok(Run {
            today: manifest.today.unwrap_or_else(Date::today_utc),
            rules_digest: rules_digest(&rules),
            manifest,
            outdir,
        })
    }

    pub fn files(&self, e: &Entry) -> EntryFiles {
        EntryFiles::new(&self.outdir, &e.stem)
    }
}

/// Why a batch could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The manifest or the rules it names (exit code 2).
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{0}")]
    Usage(String),
    /// OUTDIR or the summary could not be written (exit code 4).
    #[error(transparent)]
    Output(#[from] crate::Error),
}

/// BLAKE3 of everything the rules decide: each kind's effective document,
/// every template, and imgsan's version (a new imgsan may write differently).
pub fn rules_digest(rules: &RuleSet) -> String {
    use crate::rules::to_yaml;
    let mut h = blake3::Hasher::new();
    let mut part = |label: &str, bytes: &[u8]| {
        h.update(label.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part("imgsan", env!("CARGO_PKG_VERSION").as_bytes());
    part("policy", to_yaml(&rules.policy).as_bytes());
    part("eol", to_yaml(&rules.eol).as_bytes());
    part("denylist", to_yaml(&rules.denylist).as_bytes());
    part("sanitize", to_yaml(&rules.sanitize).as_bytes());
    part("featured", to_yaml(&rules.featured).as_bytes());
    for (dir, name, bytes) in rules.templates.files() {
        part(&format!("template {dir}/{name}"), bytes);
    }
    h.finalize().to_hex().to_string()
}

/// BLAKE3 of an entry's effective options: name, description, the request
/// file's bytes, the switches, and the date.
pub fn options_digest(e: &Entry, today: Date) -> std::io::Result<String> {
    let request = match &e.request {
        Some(p) => Some(blake3::hash(&std::fs::read(p)?).to_hex().to_string()),
        None => None,
    };
    let mut disable = e.disable.clone();
    disable.sort();
    let mut keep = e.keep_user.clone();
    keep.sort();
    let doc = serde_json::json!({
        "name": e.name,
        "description": e.description,
        "request": request,
        "force": e.force,
        "shrink": e.shrink,
        "disable": disable,
        "keep_user": keep,
        "manifest": e.manifest,
        "today": today.to_string(),
    });
    Ok(blake3::hash(doc.to_string().as_bytes())
        .to_hex()
        .to_string())
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One entry's outcome in this run.
#[derive(Debug, Clone)]
pub struct Done {
    pub result: EntryResult,
    /// The entry was up to date: nothing was redone or rewritten.
    pub up_to_date: bool,
}

/// Runs entry `e`, or finds it up to date. Never fails: a failure is the
/// entry's result.
pub fn run_entry(run: &Run, e: &Entry, progress: &dyn Progress) -> Done {
    let t0 = Instant::now();
    let files = run.files(e);
    let base = EntryResult {
        schema_version: SCHEMA_VERSION,
        index: e.index,
        name: e.name.clone(),
        image: e.image.clone(),
        status: Status::Failed,
        exit_code: 3,
        error: None,
        blocking: Vec::new(),
        output: None,
        report: None,
        manifest: None,
        wall_seconds: 0.0,
        finished_unix: 0,
        key: None,
    };
    let fail = |code: u8, msg: String| {
        let mut r = base.clone();
        r.exit_code = code;
        r.error = Some(msg);
        r
    };
    let result = match attempt(run, e, &files, progress, &base) {
        Ok(Attempt::UpToDate(r)) => {
            return Done {
                result: r,
                up_to_date: true,
            }
        }
        Ok(Attempt::Ran(r)) => r,
        Err((code, msg)) => fail(code, msg),
    };
    let mut result = result;
    result.wall_seconds = t0.elapsed().as_secs_f64();
    result.finished_unix = now_unix();
    // The record last: the entry is done when it is there.
    let text = serde_json::to_string_pretty(&result).unwrap_or_default() + "\n";
    if let Err(err) = crate::output::sink::write_file_atomically(&files.result(), |w| {
        w.write_all(text.as_bytes())
    }) {
        result = fail(4, err.to_string());
    }
    Done {
        result,
        up_to_date: false,
    }
}

enum Attempt {
    UpToDate(EntryResult),
    Ran(EntryResult),
}

type Failure = (u8, String);

fn attempt(
    run: &Run,
    e: &Entry,
    files: &EntryFiles,
    progress: &dyn Progress,
    base: &EntryResult,
) -> Result<Attempt, Failure> {
    let input = e.path.display().to_string();
    let meta = std::fs::metadata(&e.path).map_err(|err| (3, format!("{input}: {err}")))?;
    let options = options_digest(e, run.today).map_err(|err| {
        let req = e.request.as_deref().unwrap_or(Path::new("")).display();
        (2, format!("request file {req}: {err}"))
    })?;
    let size = meta.len();
    let mtime = mtime_ns(&meta);
    if let Some(prev) = read_result(files, e) {
        if let Some(k) = &prev.key {
            let same = k.input_size == size
                && k.input_mtime_ns == mtime
                && k.options_digest == options
                && k.rules_digest == run.rules_digest
                && matches!(
                    prev.status,
                    Status::Clean | Status::Written | Status::Blocked
                )
                && files_present(files, &prev);
            if same {
                let h = pipeline::hash_file(&e.path).map_err(|err| (3, err.to_string()))?;
                if h.to_hex().as_str() == k.input_blake3 {
                    return Ok(Attempt::UpToDate(prev));
                }
            }
        }
    }
    files
        .clear()
        .map_err(|err| (4, format!("{}: {err}", run.outdir.display())))?;

    let inputs = Inputs::load(&CheckOptions {
        name: Some(e.name.clone()),
        description: e.description.clone(),
        request: e.request.clone(),
        featured_names: None,
        existing_names: None,
        today: Some(run.today),
        rules_dir: run.manifest.rules_dir.clone(),
    })
    .map_err(|err| (2, err.to_string()))?;
    let image = Image::open(&e.path, &Default::default())
        .map_err(|err| (exit_code_of(err.kind()), format!("{input}: {err}")))?;
    let opts = SanitizeOptions {
        rules: crate::sanitize::Options {
            disabled: e.disable.iter().cloned().collect(),
            keep_users: e.keep_user.iter().cloned().collect(),
            ..Default::default()
        },
        force: e.force,
        size: if e.shrink {
            DiskSize::Shrink { margin: None }
        } else {
            DiskSize::Same
        },
        // A batch entry says whether to shrink; it is not guessed from the guest.
        size_choice: if e.shrink {
            crate::upload::SizeChoice::Shrink
        } else {
            crate::upload::SizeChoice::Keep
        },
        lvm: Default::default(),
        keep_partitions: Default::default(),
        keep_unmounted: false,
        dry_run: false,
        manifest: e.manifest,
    };
    let tmp_raw = files.temporary("raw");
    let outcome = pipeline::sanitize(
        &image,
        &inputs,
        &opts,
        &Target::File(tmp_raw.clone()),
        progress,
    );
    let mut outcome = match outcome {
        Ok(o) => o,
        Err(SanitizeError::Rules(err)) => return Err((2, err.to_string())),
        Err(SanitizeError::Usage(m)) => return Err((2, m)),
        Err(SanitizeError::Image(err)) => {
            return Err((exit_code_of(err.kind()), format!("{input}: {err}")))
        }
    };
    drop(image);
    let written = !outcome.blocked;
    // Every file under a temporary name first; renamed together at the end.
    let out_err = |p: &Path, err: &dyn std::fmt::Display| (4, format!("{}: {err}", p.display()));
    let mut renames: Vec<(PathBuf, PathBuf)> = Vec::new();
    if written {
        renames.push((tmp_raw.clone(), files.raw()));
        if let Some(o) = outcome.report.output.as_mut() {
            o["path"] = serde_json::Value::String(files.raw().display().to_string());
        }
        if e.manifest {
            let tmp = files.temporary("manifest");
            pipeline::write_manifest(&outcome.manifest, &tmp).map_err(|err| out_err(&tmp, &err))?;
            renames.push((tmp, files.manifest()));
            if let Some(o) = outcome.report.output.as_mut() {
                o["manifest"] = serde_json::Value::String(files.manifest().display().to_string());
            }
        }
    }
    let report_text = crate::output::report::render_json(&outcome.report);
    let tmp = files.temporary("report.json");
    crate::output::sink::write_file_atomically(&tmp, |w| w.write_all(report_text.as_bytes()))
        .map_err(|err| out_err(&tmp, &err))?;
    renames.push((tmp, files.report()));
    for (from, to) in &renames {
        std::fs::rename(from, to).map_err(|err| out_err(to, &err))?;
    }

    let mut blocking: Vec<String> = outcome
        .report
        .blocking()
        .map(|f| f.check_id.clone())
        .collect();
    blocking.dedup();
    let passed = outcome.report.summary.passed;
    let (status, exit_code) = match (written, passed) {
        (true, true) => (Status::Clean, 0),
        (true, false) => (Status::Written, 1),
        (false, _) => (Status::Blocked, 1),
    };
    let output = outcome
        .output
        .as_ref()
        .filter(|_| written)
        .map(|o| OutputFile {
            file: files.name("raw"),
            size_bytes: o.size_bytes,
            blake3: o.blake3.clone(),
        });
    let input_blake3 = outcome.report.image.blake3.clone().unwrap_or_default();
    Ok(Attempt::Ran(EntryResult {
        status,
        exit_code,
        blocking,
        output,
        report: Some(files.name("report.json")),
        manifest: (written && e.manifest).then(|| files.name("manifest")),
        key: Some(Key {
            input_size: size,
            input_mtime_ns: mtime,
            input_blake3,
            options_digest: options,
            rules_digest: run.rules_digest.clone(),
        }),
        ..base.clone()
    }))
}

/// Whether the files a result names are still there (the image with its size).
fn files_present(files: &EntryFiles, r: &EntryResult) -> bool {
    let report = files.report().is_file();
    let manifest = r.manifest.is_none() || files.manifest().is_file();
    let image = match &r.output {
        Some(o) => std::fs::metadata(files.raw()).is_ok_and(|m| m.len() == o.size_bytes),
        None => true,
    };
    report && manifest && image
}

/// Hears about a batch as it runs (the CLI shows it).
pub trait Observer: Sync {
    /// Entry `e` starts; the returned progress receives its pipeline's phases.
    fn started(&self, e: &Entry) -> Box<dyn Progress + '_>;
    /// Entry `e` is done.
    fn finished(&self, e: &Entry, done: &Done);
    /// The summary could not be rewritten after an entry.
    fn summary_failed(&self, _err: &crate::Error) {}
}

/// How a local run shares the machine.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Entries run at once.
    pub jobs: usize,
    /// Worker threads in all; each job's pool gets its share.
    pub threads: usize,
}

/// Threads for job slot `slot` of `plan`: `threads / jobs`, the remainder
/// going to the first slots; at least one.
pub fn threads_for(plan: Plan, slot: usize) -> usize {
    let jobs = plan.jobs.max(1);
    let base = plan.threads / jobs;
    let extra = usize::from(slot < plan.threads % jobs);
    (base + extra).max(1)
}

/// Runs `indices` (every entry when `None`), `plan.jobs` at a time, each job in
/// its own thread pool of its share of the threads. The summary is rewritten
/// after each entry. Results come back in index order.
pub fn run_entries(run: &Run, indices: &[usize], plan: Plan, observer: &dyn Observer) -> Vec<Done> {
    let next = AtomicUsize::new(0);
    let slots = plan.jobs.clamp(1, indices.len().max(1));
    let results = std::sync::Mutex::new(Vec::with_capacity(indices.len()));
    std::thread::scope(|s| {
        for slot in 0..slots {
            let (next, results) = (&next, &results);
            s.spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads_for(
                        Plan {
                            jobs: slots,
                            ..plan
                        },
                        slot,
                    ))
                    .thread_name(move |i| format!("imgsan-job{slot}-{i}"))
                    .build()
                    .ok();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&idx) = indices.get(i) else { break };
                    let Some(e) = run.manifest.entries.get(idx) else {
                        continue;
                    };
                    let progress = observer.started(e);
                    let done = match &pool {
                        Some(p) => p.install(|| run_entry(run, e, progress.as_ref())),
                        None => run_entry(run, e, progress.as_ref()),
                    };
                    drop(progress);
                    if let Err(err) = rewrite_summary(run) {
                        observer.summary_failed(&err);
                    }
                    observer.finished(e, &done);
                    if let Ok(mut r) = results.lock() {
                        r.push(done);
                    }
                }
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_default();
    out.sort_by_key(|d| d.result.index);
    out
}
