//! `imgsan sanitize`: its arguments and how its outcome becomes output files and
//! an exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use imgsan::check;
use imgsan::disk;
use imgsan::output::convert::Target;
use imgsan::output::report;

use imgsan::output::guard::Named;
use imgsan::output::temp::OutputGroup;

use super::args::{CheckArgs, SizeArgs};
use super::{guard_outputs, image_inputs, progress::progress_for, rules_error, Cli, EXIT_USAGE};

/// Sanitize an image for publishing: check it, clean it, write a fresh RAW disk.
///
/// The main job. In order: (1) check the image against the policy, as
/// `imgsan check` does, and refuse to write when error-level findings that no
/// sanitize rule fixes remain (unless --force); (2) apply the sanitize rules
/// (rules/sanitize.yaml) to the guest's files in memory: empty /home, /mnt,
/// /tmp and /root, reset account files, fstab, ssh host keys, logs, network
/// files, cloud hygiene; (3) check the cleaned files again, and refuse to
/// write when an error is still there (unless --force); (4) rebuild every
/// ext4 filesystem fresh from the cleaned files, so deleted data is gone, not
/// just unlinked; (5) write the
/// whole disk as sparse RAW under a temporary name, renamed when complete.
/// Only what can be accounted for is copied: boot code, the partition table,
/// GRUB's embedded core image, BIOS boot and EFI partitions; swap and volumes
/// the guest never mounts are re-created empty; every other byte is a hole.
/// A partition imgsan can neither rebuild nor classify is refused (exit 3)
/// unless --keep-partition names it. The input is never modified.
///
/// The report (text, JSON or JUnit) says what every rule did, the input's
/// and output's sizes and BLAKE3 hashes. Exit codes: 0 written and clean;
/// 1 blocking findings (nothing written; with --force, written anyway);
/// 2 usage or rules-file error (file:line:column); 3 image unreadable or
/// unsupported (nothing written); 4 the output could not be written (the
/// temporary file is removed).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  imgsan sanitize disk.qcow2 -o clean.raw\n  imgsan sanitize disk.qcow2 -o clean.raw --shrink --manifest clean.manifest\n  imgsan sanitize disk.raw -o clean.raw --request request.yaml --report report.json --format json\n  imgsan sanitize disk.raw --dry-run --name Genomics-v2 --description \"Ubuntu 22.04 with samtools\"\n  imgsan sanitize disk.raw -o - --report report.txt | gzip > clean.raw.gz\n  imgsan sanitize disk.raw -o clean.raw --disable var-log --keep-user ubuntu\n\nThe manifest lists every kept file, one per line: blake3, mode (octal), uid, gid, size, path (tab-separated; non-printable bytes as \\xNN)."
)]
pub struct Args {
    /// The input image (RAW or QCOW2).
    input: PathBuf,
    /// The output RAW image, or "-" for standard output (required unless
    /// --dry-run).
    #[arg(short, long, value_name = "OUT", required_unless_present = "dry_run")]
    output: Option<PathBuf>,
    /// Write even if blocking findings remain (the report keeps them).
    #[arg(long)]
    force: bool,
    /// Check, run the rules and plan the output; print the plan and report,
    /// write nothing.
    #[arg(long, conflicts_with = "output")]
    dry_run: bool,
    #[command(flatten)]
    size: SizeArgs,
    /// Keep the disk's size. Without --shrink, --size or this, the disk is
    /// shrunk when the guest grows its root filesystem at first boot
    /// (cloud-init's growpart and resizefs, and the growpart program), and
    /// kept otherwise; the report says which and why.
    #[arg(long, conflicts_with_all = ["shrink", "size"])]
    keep_size: bool,
    /// Write a manifest of every kept file (path, mode, owner, size, BLAKE3),
    /// hashed while the output is written.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Write the report to this file (default: standard output, or standard
    /// error when the image goes to standard output).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json", "junit"])]
    format: String,
    /// Do not run this sanitize rule (repeatable; `imgsan rules show sanitize`
    /// lists the ids).
    #[arg(long, value_name = "RULE")]
    disable: Vec<String>,
    /// Skip the whole cloud-hygiene group (machine-id, histories, caches, ...).
    #[arg(long)]
    no_hygiene: bool,
    /// Keep this human account (repeatable).
    #[arg(long, value_name = "NAME")]
    keep_user: Vec<String>,
    /// Copy partition N verbatim although imgsan cannot rebuild it or tell
    /// that it holds only boot code (repeatable; the report records it).
    /// Without it such a partition refuses the run (exit 3).
    #[arg(long, value_name = "N")]
    keep_partition: Vec<u32>,
    /// Keep Linux volumes the guest's fstab never mounts (the "anywhere"
    /// rules, such as shell histories, still run on them). By default they
    /// are re-created empty with the same UUID and label.
    #[arg(long)]
    keep_unmounted: bool,
    #[command(flatten)]
    check: CheckArgs,
    /// Force the image format instead of detecting it.
    #[arg(long, value_name = "FORMAT", value_parser = ["raw", "qcow2"])]
    image_format: Option<String>,
}

pub fn run(args: &Args, cli: &Cli) -> anyhow::Result<u8> {
    let Args {
        input,
        output,
        force,
        dry_run,
        size,
        keep_size,
        manifest,
        report: report_path,
        format,
        disable,
        no_hygiene,
        keep_user,
        keep_partition,
        keep_unmounted,
        check: check_args,
        image_format,
    } = args;
    let inputs = match check::Inputs::load(&check_args.options()) {
        Ok(i) => i,
        Err(e) => return Ok(rules_error(&e)),
    };
    let fmt: report::Format = format.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let dopts = disk::OpenOptions {
        format: image_format.clone(),
    };
    let image =
        imgsan::image::Image::open(input, &dopts).with_context(|| input.display().to_string())?;
    let mut inputs_read = image_inputs(image.disk.as_ref());
    inputs_read.extend(check_args.input_files());
    let outputs: Vec<Named> = [
        (output, "the output image"),
        (manifest, "the --manifest file"),
        (report_path, "the --report file"),
    ]
    .into_iter()
    .filter_map(|(p, what)| p.as_ref().map(|p| Named::new(p, what)))
    .collect();
    if let Err(code) = guard_outputs(&inputs_read, &outputs) {
        return Ok(code);
    }
    let target = match output {
        Some(p) if p.as_os_str() == "-" => Target::Stdout,
        Some(p) => Target::File(p.clone()),
        None => Target::Stdout,
    };
    let opts = imgsan::pipeline::SanitizeOptions {
        rules: imgsan::sanitize::Options {
            disabled: disable.iter().cloned().collect(),
            no_hygiene: *no_hygiene,
            keep_users: keep_user.iter().cloned().collect(),
            ..Default::default()
        },
        force: *force,
        size: size.disk_size(),
        lvm: size.lvm_options(),
        dry_run: *dry_run,
        manifest: manifest.is_some(),
        size_choice: if size.shrink {
            imgsan::upload::SizeChoice::Shrink
        } else if size.size.is_some() || *keep_size {
            imgsan::upload::SizeChoice::Keep
        } else {
            imgsan::upload::SizeChoice::Auto
        },
        keep_partitions: keep_partition.iter().copied().collect(),
        keep_unmounted: *keep_unmounted,
    };
    let progress = progress_for(cli);
    // The image, the manifest and the report become final together, or none.
    let group = OutputGroup::new();
    let mut outcome = match imgsan::pipeline::sanitize_into(
        &image,
        &inputs,
        &opts,
        &target,
        progress.as_ref(),
        &group,
    ) {
        Ok(o) => o,
        Err(imgsan::pipeline::SanitizeError::Rules(e)) => return Ok(rules_error(&e)),
        Err(imgsan::pipeline::SanitizeError::Usage(m)) => {
            eprintln!("imgsan: {m}");
            return Ok(EXIT_USAGE);
        }
        Err(imgsan::pipeline::SanitizeError::Image(e)) => {
            return Err(anyhow::Error::new(e).context(input.display().to_string()))
        }
    };
    if let (Some(path), false) = (manifest, outcome.blocked || *dry_run) {
        imgsan::pipeline::stage_manifest(&outcome.manifest, path, &group)?;
        if let Some(o) = outcome.report.output.as_mut() {
            o["manifest"] = serde_json::Value::String(path.display().to_string());
        }
    }
    let to_stdout = report_path.is_none() && !matches!(target, Target::Stdout) || *dry_run;
    let color = fmt == report::Format::Text
        && report_path.is_none()
        && to_stdout
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let text = report::render(&outcome.report, fmt, color);
    if let Some(path) = report_path {
        group.write_file(path, |w| w.write_all(text.as_bytes()))?;
    }
    group.commit()?;
    match report_path {
        Some(_) => {}
        None if to_stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        None => eprint!("{text}"),
    }
    if outcome.blocked {
        let mut ids: Vec<&str> = outcome
            .report
            .blocking()
            .map(|f| f.check_id.as_str())
            .collect();
        ids.dedup();
        let when = if outcome.report.recheck.is_some() {
            " still there after the sanitize rules ran"
        } else {
            ""
        };
        eprintln!(
            "imgsan: {}: nothing written: blocking findings {}{when} (fix them, or pass --force)",
            input.display(),
            ids.join(", ")
        );
    }
    Ok(report::exit_code(&outcome.report))
}
