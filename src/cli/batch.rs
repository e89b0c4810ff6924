//! `imgsan batch`: the arguments, progress display and output of a batch run;
//! the work is the library's (`imgsan::batch`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use imgsan::batch::{self, emit, sizing, Done, Entry, Observer, Plan, Run, Status};
use imgsan::progress::{Progress, Silent, Unit};

use super::{rules_error, Cli, EXIT_OUTPUT, EXIT_USAGE};

/// Sanitize many images from one manifest, here or as a Slurm/Kubernetes array.
///
/// MANIFEST is a YAML file with `kind: batch` and `images:`, a list of entries
/// (image path relative to the manifest's folder, name, description, and the
/// sanitize options request, force, shrink, disable, keep_user, manifest);
/// `defaults:` sets entry fields once. `imgsan rules show batch` prints an
/// example, `imgsan rules check MANIFEST` validates one.
///
/// Entry NAME writes OUTDIR/NAME.raw, NAME.report.json, NAME.manifest (with
/// `manifest: true`) and, last, NAME.result.json; each under a temporary name
/// first, so a killed entry leaves nothing under its final names. One failing
/// image never stops the others. Every run (--index runs too) rewrites
/// OUTDIR/summary.json and OUTDIR/summary.xml (JUnit, one suite per image)
/// from the results present, and prints a table. Statuses: clean, written
/// (with force over findings), blocked, failed, pending.
///
/// Resuming: an entry whose result matches the input's size, modification
/// time and BLAKE3, its options and the rules is not redone ("up to date").
///
/// --jobs: by default, min(images, cores, available memory / 1 GiB), at
/// least 1; cores are --threads when given, memory is MemAvailable capped by
/// the cgroup limit. The threads are shared out: each job gets about
/// --threads / jobs. The same rule sizes the array (%K, CPUs and memory per
/// task) for --emit.
///
/// Exit code: the worst entry's (0 clean, 1 blocking findings, 2 request or
/// rules error, 3 image unreadable, 4 output not written; a pending entry
/// counts as 4 in a --summary run); with --index, that entry's; 2 when the
/// manifest does not validate.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  imgsan batch images.yaml -o out/\n  imgsan batch images.yaml -o out/ --jobs 2\n  imgsan batch images.yaml -o out/ --index 3\n  imgsan batch images.yaml -o out/ --summary\n  imgsan batch images.yaml -o out/ --emit slurm > job.sh && sbatch --wait job.sh\n  imgsan batch images.yaml -o /out --emit k8s --container registry.example/imgsan:1 > job.yaml\n  seq 0 4 | parallel -j2 imgsan batch images.yaml -o out/ --index {}"
)]
pub struct Args {
    /// The batch manifest (YAML, kind: batch).
    pub manifest: PathBuf,
    /// The output folder (created when missing).
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,
    /// Entries run at once (default: from cores and memory, see above); with
    /// --emit, the array's %K.
    #[arg(long, value_name = "N", conflicts_with_all = ["index", "summary"])]
    pub jobs: Option<usize>,
    /// Run entry I alone (0-based), e.g. as one array task.
    #[arg(long, value_name = "I", conflicts_with_all = ["summary", "emit"])]
    pub index: Option<usize>,
    /// Only rewrite the summary from the results present.
    #[arg(long, conflicts_with = "emit")]
    pub summary: bool,
    /// Print an array job running the batch, one task per entry: an sbatch
    /// script (slurm) or a minimal Kubernetes Indexed Job (k8s). Paths are made
    /// absolute; OUTDIR is created.
    #[arg(long, value_name = "KIND", value_parser = ["slurm", "k8s"])]
    pub emit: Option<String>,
    /// --emit k8s: the container image holding `imgsan` on its PATH.
    #[arg(long, value_name = "IMAGE", default_value = "imgsan:latest")]
    pub container: String,
    /// --emit k8s: the claim holding the manifest's folder (mounted read-only
    /// at /data).
    #[arg(long, value_name = "CLAIM", default_value = "imgsan-images")]
    pub images_claim: String,
    /// --emit k8s: the claim of the output folder (mounted at /out).
    #[arg(long, value_name = "CLAIM", default_value = "imgsan-output")]
    pub output_claim: String,
}

pub fn run(args: &Args, cli: &Cli) -> anyhow::Result<u8> {
    let manifest = match batch::manifest::load(&args.manifest) {
        Ok(m) => m,
        Err(e) => return Ok(rules_error(&e)),
    };
    let n = manifest.entries.len();
    if args.jobs == Some(0) {
        eprintln!("imgsan: --jobs must be at least 1");
        return Ok(EXIT_USAGE);
    }
    if let Some(i) = args.index {
        if i >= n {
            eprintln!(
                "imgsan: --index {i}: {} has {n} entries (0 to {})",
                args.manifest.display(),
                n - 1
            );
            return Ok(EXIT_USAGE);
        }
    }
    let run = match Run::new(manifest, &args.output) {
        Ok(r) => r,
        Err(batch::RunError::Rules(e)) => return Ok(rules_error(&e)),
        Err(batch::RunError::Usage(m)) => {
            eprintln!("imgsan: {m}");
            return Ok(EXIT_USAGE);
        }
        Err(batch::RunError::Output(e)) => {
            eprintln!("imgsan: {e}");
            return Ok(EXIT_OUTPUT);
        }
    };
    let mut size = sizing::this_machine(n, cli.threads);
    if let Some(j) = args.jobs {
        size.jobs = j.min(n.max(1));
        size.threads_per_job = (size.cores / size.jobs).max(1);
    }

    if let Some(kind) = &args.emit {
        let text = if kind == "slurm" {
            let exe = std::env::current_exe()?;
            emit::slurm(&run, &exe, size)
        } else {
            let outside = emit::outside_manifest_dir(&run);
            if !outside.is_empty() {
                eprintln!(
                    "imgsan: --emit k8s mounts only the manifest's folder, and these entries' images are outside it: {}",
                    outside.join(", ")
                );
                return Ok(EXIT_USAGE);
            }
            emit::k8s(
                &run,
                size,
                &emit::K8s {
                    container: args.container.clone(),
                    images_claim: args.images_claim.clone(),
                    output_claim: args.output_claim.clone(),
                },
            )
        };
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(0);
    }

    if args.summary {
        return finish(&run, None);
    }

    let indices: Vec<usize> = match args.index {
        Some(i) => vec![i],
        None => (0..n).collect(),
    };
    let plan = Plan {
        jobs: if args.index.is_some() { 1 } else { size.jobs },
        threads: size.cores,
    };
    let observer = Display::new(cli, indices.len());
    if !cli.quiet && args.index.is_none() {
        observer.line(&format!(
            "imgsan: batch of {n} images, {} at a time, {} threads each",
            plan.jobs,
            batch::threads_for(plan, 0)
        ));
    }
    let done = batch::run_entries(&run, &indices, plan, &observer);
    observer.close();
    match args.index {
        Some(_) => {
            let code = done.first().map_or(EXIT_OUTPUT, |d| d.result.exit_code);
            finish(&run, Some(code))
        }
        None => finish(&run, None),
    }
}

/// Rewrites the summary, prints the table, and gives the exit code: `code`
/// when given (an --index run), else the summary's.
fn finish(run: &Run, code: Option<u8>) -> anyhow::Result<u8> {
    let summary = match batch::rewrite_summary(run) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("imgsan: {e}");
            return Ok(EXIT_OUTPUT);
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(batch::summary::table(&summary).as_bytes())?;
    out.flush()?;
    Ok(code.unwrap_or(summary.exit_code))
}

/// How a running batch is shown: on a terminal, one line per running image
/// and an overall bar; in a log, one line per finished image; nothing with
/// --quiet.
struct Display {
    bars: Option<(indicatif::MultiProgress, indicatif::ProgressBar)>,
    quiet: bool,
    total: usize,
    finished: AtomicUsize,
}

impl Display {
    fn new(cli: &Cli, total: usize) -> Display {
        let terminal = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bars = (terminal && !cli.quiet).then(|| {
            let mp = indicatif::MultiProgress::new();
            let overall = mp.add(indicatif::ProgressBar::new(total as u64));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} images, {elapsed}",
            ) {
                overall.set_style(style.progress_chars("=> "));
            }
            overall.set_prefix("batch");
            (mp, overall)
        });
        Display {
            bars,
            quiet: cli.quiet,
            total,
            finished: AtomicUsize::new(0),
        }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn close(&self) {
        if let Some((_, overall)) = &self.bars {
            overall.finish_and_clear();
        }
    }
}

impl Observer for Display {
    fn started(&self, e: &Entry) -> Box<dyn Progress + '_> {
        match &self.bars {
            Some((mp, overall)) => {
                let bar = mp.insert_before(overall, indicatif::ProgressBar::new(0));
                bar.set_prefix(e.name.clone());
                Box::new(EntryBar { bar })
            }
            None if self.quiet => Box::new(Silent),
            None => Box::new(EntryNotes {
                name: e.name.clone(),
            }),
        }
    }

    fn finished(&self, e: &Entry, done: &Done) {
        let k = self.finished.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some((_, overall)) = &self.bars {
            overall.inc(1);
        }
        if self.quiet {
            return;
        }
        let r = &done.result;
        let what = if done.up_to_date {
            format!("up to date ({})", r.status.as_str())
        } else {
            let mut w = format!(
                "{} (exit {}) in {:.1} s",
                r.status.as_str(),
                r.exit_code,
                r.wall_seconds
            );
            if let Some(err) = &r.error {
                w.push_str(&format!(": {err}"));
            } else if matches!(r.status, Status::Blocked | Status::Written) {
                w.push_str(&format!(": blocking {}", r.blocking.join(", ")));
            }
            w
        };
        self.line(&format!(
            "imgsan: [{k}/{}] {}: {what}",
            self.total,
            imgsan::output::report::escape_terminal(&e.name)
        ));
    }

    fn summary_failed(&self, err: &imgsan::Error) {
        self.line(&format!("imgsan: summary not rewritten: {err}"));
    }
}

/// A running image's line on a terminal: its name, phase and position.
struct EntryBar {
    bar: indicatif::ProgressBar,
}

impl Progress for EntryBar {
    fn start(&self, phase: &str, total: u64, unit: Unit) {
        let template = match unit {
            Unit::Bytes => "{prefix:>12} {msg:<9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            Unit::Items => "{prefix:>12} {msg:<9} [{bar:30}] {pos}/{len}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(phase.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn finish(&self) {}
    fn note(&self, line: &str) {
        self.bar.println(format!("{}: {line}", self.bar.prefix()));
    }
}

impl Drop for EntryBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// In a log, an image's notes carry its name; phases are not shown.
struct EntryNotes {
    name: String,
}

impl Progress for EntryNotes {
    fn start(&self, _: &str, _: u64, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
    fn note(&self, line: &str) {
        eprintln!(
            "imgsan: {}: {line}",
            imgsan::output::report::escape_terminal(&self.name)
        );
    }
}
