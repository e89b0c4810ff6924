//! `imgsan convert`: its arguments and how its result becomes an exit code.

use std::path::PathBuf;

use anyhow::Context;
use imgsan::output::convert::{self, Target};

use super::{open_disk, progress::progress_for, Cli, EXIT_CLEAN};

/// Convert an image (RAW or QCOW2) to a sparse RAW image.
///
/// Unallocated and zero ranges, and data blocks that are all zeros, become holes.
/// The output is written under a temporary name beside OUT and renamed when
/// complete; the input is never modified.
#[derive(clap::Args)]
pub struct Args {
    /// The input image (RAW or QCOW2; the format is detected).
    input: PathBuf,
    /// The output RAW image, or "-" to stream to standard output (zeros are
    /// written out on a stream).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Force the input format instead of detecting it.
    #[arg(long, value_parser = ["raw", "qcow2"])]
    format: Option<String>,
}

pub fn run(args: &Args, cli: &Cli) -> anyhow::Result<u8> {
    let Args {
        input,
        output,
        format,
    } = args;
    let d = open_disk(input, format)?;
    let target = if output.as_os_str() == "-" {
        Target::Stdout
    } else {
        Target::File(output.clone())
    };
    let progress = progress_for(cli);
    let stats = convert::convert(d.as_ref(), &target, progress.as_ref())
        .with_context(|| format!("converting {}", input.display()))?;
    if !matches!(target, Target::Stdout) && !cli.quiet {
        eprintln!(
            "imgsan: wrote {} ({} bytes virtual, {} bytes of data)",
            output.display(),
            stats.virtual_size,
            stats.data_bytes
        );
    }
    Ok(EXIT_CLEAN)
}
