//! `imgsan repack`: its arguments and how its result becomes an exit code.

use std::path::PathBuf;

use anyhow::Context;
use imgsan::check::text::human;
use imgsan::disk;
use imgsan::output::convert::Target;

use super::args::SizeArgs;
use imgsan::output::guard::Named;

use super::{guard_outputs, image_inputs, progress::progress_for, Cli, EXIT_CLEAN};

/// Rebuild every ext4 filesystem of an image fresh, with no other change.
///
/// Each ext2/3/4 volume is read into a tree (a dirty journal is replayed in
/// memory) and built anew with the source's geometry: same UUID, label, block
/// and inode size, features, hash and checksum seeds. Free space becomes holes,
/// so nothing deleted survives. Swap is re-created empty with the same UUID and
/// label. Boot code, the partition table, GRUB's embedded core image, BIOS
/// boot and EFI partitions are copied; a partition imgsan cannot rebuild is
/// copied verbatim and named on standard error; gaps between partitions are
/// holes. An image with nothing to rebuild exits 3.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  imgsan repack disk.qcow2 -o disk.raw\n  imgsan repack disk.raw -o small.raw --shrink\n  imgsan repack disk.raw -o big.raw --size 20G"
)]
pub struct Args {
    /// The input image (RAW or QCOW2).
    input: PathBuf,
    /// The output RAW image, or "-" for standard output.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    #[command(flatten)]
    size: SizeArgs,
    /// Force the input format instead of detecting it.
    #[arg(long, value_parser = ["raw", "qcow2"])]
    format: Option<String>,
}

pub fn run(args: &Args, cli: &Cli) -> anyhow::Result<u8> {
    let Args {
        input,
        output,
        size,
        format,
    } = args;
    let opts = disk::OpenOptions {
        format: format.clone(),
    };
    let image =
        imgsan::image::Image::open(input, &opts).with_context(|| input.display().to_string())?;
    if let Err(code) = guard_outputs(
        &image_inputs(image.disk.as_ref()),
        &[Named::new(output, "the output image")],
    ) {
        return Ok(code);
    }
    let volumes = imgsan::repack::read_volumes(&image, &Default::default())
        .with_context(|| input.display().to_string())?;
    let plan_opts = imgsan::repack::PlanOptions {
        size: size.disk_size(),
        others: imgsan::repack::Others::CopyNoted,
        lvm: size.lvm_options(),
        ..Default::default()
    };
    let repacked = imgsan::repack::plan(&image, &volumes, &plan_opts)
        .with_context(|| input.display().to_string())?;
    let target = if output.as_os_str() == "-" {
        Target::Stdout
    } else {
        Target::File(output.clone())
    };
    let progress = progress_for(cli);
    let stats = imgsan::output::write::write_plan(&repacked.plan, &target, progress.as_ref())?;
    if !matches!(target, Target::Stdout) && !cli.quiet {
        for v in &repacked.volumes {
            let note = v
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            eprintln!(
                "imgsan: {}: {}, {} -> {}{note}",
                v.name,
                v.action,
                human(v.source_size),
                human(v.output_size)
            );
        }
        eprintln!(
            "imgsan: wrote {} ({} virtual, {} of data){}",
            output.display(),
            human(stats.len),
            human(stats.data_bytes),
            if repacked.table_rewritten {
                ", partition table rewritten"
            } else {
                ""
            }
        );
    }
    Ok(EXIT_CLEAN)
}
