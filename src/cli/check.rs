//! `imgsan check`: its arguments and how the report becomes output and an exit
//! code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use imgsan::check;
use imgsan::disk;
use imgsan::output::report;

use super::args::CheckArgs;
use super::{rules_error, write_atomically};

/// Check an image against the imaging policy and write a report.
///
/// Reads the guest (no VM, no mount), then checks: the OS and its end of
/// life, filesystem types, fstab volumes (detached volumes, network mounts
/// without nofail), the image name and description, licensed and
/// cloud-unsuitable software (denylist: packages, paths, known binaries,
/// licence files), post-boot scripts, sshd and python, software under /home,
/// open network daemons, hibernation and live capture. rules/README.md lists
/// every check id.
///
/// Exit codes: 0 no error-level finding; 1 policy violations found; 2 usage,
/// rules or request file error (reported as file:line:column); 3 image
/// unreadable or unsupported; 4 the report could not be written.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  imgsan check disk.qcow2 --name Genomics-v2 --description \"Ubuntu 22.04 with samtools and bcftools for the spring workshop\"\n  imgsan check disk.raw --request request.yaml --existing-names my-images.txt\n  imgsan check disk.raw --request request.yaml --format json -o report.json\n  imgsan check disk.raw --request request.yaml --format junit -o junit.xml --today 2024-06-01\n  imgsan check disk.raw --rules ./our-cloud-rules --name X --description \"...\"\n\nA request file mirrors the imaging request form: `imgsan rules show request` prints an example."
)]
pub struct Args {
    /// The image to check (RAW or QCOW2).
    input: PathBuf,
    #[command(flatten)]
    check: CheckArgs,
    /// Report format.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json", "junit"])]
    format: String,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "REPORT")]
    output: Option<PathBuf>,
    /// Force the image format instead of detecting it.
    #[arg(long, value_name = "FORMAT", value_parser = ["raw", "qcow2"])]
    image_format: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let Args {
        input,
        check: check_args,
        format,
        output,
        image_format,
    } = args;
    let opts = check_args.options();
    let inputs = match check::Inputs::load(&opts) {
        Ok(i) => i,
        Err(e) => return Ok(rules_error(&e)),
    };
    let dopts = disk::OpenOptions {
        format: image_format.clone(),
    };
    let image =
        imgsan::image::Image::open(input, &dopts).with_context(|| input.display().to_string())?;
    let report = match check::check(&image, &inputs) {
        Ok(r) => r,
        Err(check::CheckError::Rules(e)) => return Ok(rules_error(&e)),
        Err(e) => return Err(anyhow::Error::new(e).context(input.display().to_string())),
    };
    let fmt: report::Format = format.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let color = fmt == report::Format::Text
        && output.is_none()
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let text = report::render(&report, fmt, color);
    match output {
        Some(path) => write_atomically(path, text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(report::exit_code(&report))
}
