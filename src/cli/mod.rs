//! Argument parsing and the mapping from library results to exit codes and output.
//!
//! One file per command (as ripgrep keeps its flags apart from its main): each
//! holds the command's clap arguments and turns its result into output and an
//! exit code. This file holds the top-level parser, the dispatch, and the
//! mapping of library errors to exit codes that every command shares.
//!
//! Exit codes (documented in the README):
//! 0 clean; 1 policy violations found; 2 usage or rules-file error; 3 image unreadable
//! or unsupported; 4 output could not be written.

mod args;
mod browse;
mod check;
mod convert;
mod inspect;
mod progress;
mod repack;
mod rules;
mod sanitize;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use imgsan::disk;
use imgsan::ErrorKind;

pub const EXIT_CLEAN: u8 = 0;
#[allow(dead_code)] // `check` returns it through `report::exit_code`
pub const EXIT_VIOLATIONS: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREADABLE: u8 = 3;
pub const EXIT_OUTPUT: u8 = 4;

#[derive(Parser)]
#[command(
    name = "imgsan",
    version,
    about = "Offline disk-image sanitizer for cloud images (RAW/QCOW2, ext4/XFS)",
    long_about = "imgsan reads a VM disk image in userspace (no VM, no root, no kernel mount), \
inspects the guest, checks it against an imaging policy, strips user data and writes \
a sparse RAW image ready for upload.\n\n\
Exit codes: 0 clean, 1 policy violations found, 2 usage or rules-file error, \
3 image unreadable or unsupported, 4 output could not be written.",
    after_help = "Examples:\n  imgsan inspect disk.qcow2\n  imgsan check disk.qcow2 --name Genomics-v2 --description \"Ubuntu 22.04 with samtools for the workshop\"\n  imgsan check disk.qcow2 --request request.yaml --format junit -o check.xml\n  imgsan rules show policy > policy.yaml && imgsan rules check policy.yaml\n  imgsan convert disk.qcow2 -o disk.raw\n  imgsan convert disk.qcow2 -o - | gzip > disk.raw.gz"
)]
pub struct Cli {
    /// Worker threads for parallel work (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    /// Never show progress bars, even on a terminal.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Convert(convert::Args),
    Sanitize(sanitize::Args),
    Repack(repack::Args),
    Inspect(inspect::Args),
    Ls(browse::LsArgs),
    Cat(browse::CatArgs),
    Check(check::Args),
    /// Validate rules files, or print the built-in ones.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_CLEAN
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(n) = cli.threads {
        if n == 0 {
            eprintln!("imgsan: --threads must be at least 1");
            return ExitCode::from(EXIT_USAGE);
        }
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("imgsan: cannot start {n} threads: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe downstream (`imgsan ... | head`) is not a failure.
            if is_broken_pipe(&e) {
                return ExitCode::from(EXIT_CLEAN);
            }
            eprintln!("imgsan: {}", one_line(&e));
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// Whether an error is a write to a closed pipe, however it was wrapped.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = if let Some(io) = c.downcast_ref::<std::io::Error>() {
            Some(io.kind())
        } else if let Some(j) = c.downcast_ref::<serde_json::Error>() {
            j.io_error_kind()
        } else if let Some(imgsan::Error::Output { source, .. }) = c.downcast_ref::<imgsan::Error>()
        {
            Some(source.kind())
        } else {
            None
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line. Library errors already print their
/// cause (a file name and the I/O error, a backing file and what is wrong in it),
/// so a cause whose text is already there is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        // A context that only names a file the error names too adds nothing.
        if parts
            .last()
            .is_some_and(|last| text.starts_with(last.as_str()))
        {
            parts.pop();
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// The exit code for an error, from the library's error kind.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(le) = cause.downcast_ref::<imgsan::Error>() {
            return match le.kind() {
                ErrorKind::Output => EXIT_OUTPUT,
                ErrorKind::Io
                | ErrorKind::NotThisFormat
                | ErrorKind::Corrupt
                | ErrorKind::Checksum
                | ErrorKind::Unsupported => EXIT_UNREADABLE,
            };
        }
    }
    EXIT_UNREADABLE
}

pub(crate) fn open_disk(
    path: &std::path::Path,
    format: &Option<String>,
) -> anyhow::Result<std::sync::Arc<dyn disk::Disk>> {
    let opts = disk::OpenOptions {
        format: format.clone(),
    };
    disk::open_with(path, &opts).with_context(|| path.display().to_string())
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Convert(a) => convert::run(a, cli),
        Command::Sanitize(a) => sanitize::run(a, cli),
        Command::Repack(a) => repack::run(a, cli),
        Command::Inspect(a) => inspect::run(a),
        Command::Ls(a) => browse::ls(a),
        Command::Cat(a) => browse::cat(a),
        Command::Check(a) => check::run(a),
        Command::Rules(c) => rules::run(c),
    }
}

/// Prints a rules problem (every one, as file:line:column: message) and gives
/// the usage exit code.
pub(crate) fn rules_error(e: &imgsan::rules::RulesError) -> u8 {
    for line in e.to_string().lines() {
        eprintln!("imgsan: {line}");
    }
    EXIT_USAGE
}

/// Writes `bytes` to `path` through a temporary file beside it, renamed when
/// complete: a failed run leaves nothing under the final name.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    imgsan::output::sink::write_file_atomically(path, |w| w.write_all(bytes))?;
    Ok(())
}
