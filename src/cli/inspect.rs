//! `imgsan inspect`: its arguments, the text form of the disk summary, and the
//! exit code.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use imgsan::check;
use imgsan::check::text::human;
use imgsan::disk;
use imgsan::rules::RuleSet;

use super::{rules_error, EXIT_CLEAN};

/// Show what an image holds: format, sizes, partitions, filesystems, and the
/// guest's facts.
///
/// For each ext2/3/4 filesystem: features, block and inode size, inodes and
/// blocks used and free, state, the journal (needs_recovery, what replay
/// applied) and orphan inodes.
///
/// The facts: OS and version, filesystems and whether they were unmounted
/// cleanly, every fstab entry and how it resolved, users and groups, home
/// directories with sizes, installed packages (dpkg or rpm), software under
/// /opt and /usr/local, cloud components (cloud-init, sshd, python, kernels),
/// post-boot scripts, daemon configurations and denylist matches. Nothing is
/// judged here; `imgsan check` applies the policy.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  imgsan inspect disk.qcow2\n  imgsan inspect disk.raw --json | jq '.facts.os'\n  imgsan inspect disk.raw --json | jq -r '.facts.packages.dpkg[].name'\n  imgsan inspect disk.raw --json | jq '.filesystems[] | {volume, features, state, journal}'"
)]
pub struct Args {
    /// The image to inspect.
    input: PathBuf,
    /// Print JSON instead of text: the disk summary's fields, and `facts`.
    #[arg(long)]
    json: bool,
    /// Force the input format instead of detecting it.
    #[arg(long, value_parser = ["raw", "qcow2"])]
    format: Option<String>,
    /// Rules directory whose denylist and post-scripts folder to use
    /// (default: the built-in rules).
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let Args {
        input,
        json,
        format,
        rules,
    } = args;
    let rules = match RuleSet::load(rules.as_deref(), &[]) {
        Ok(r) => r,
        Err(e) => return Ok(rules_error(&e)),
    };
    let opts = disk::OpenOptions {
        format: format.clone(),
    };
    let image =
        imgsan::image::Image::open(input, &opts).with_context(|| input.display().to_string())?;
    let summary = image.summary();
    let (volumes, _) = check::read_volumes(&image);
    let facts = check::gather(&volumes, &rules);
    let filesystems = imgsan::browse::fs_details(&volumes);
    let mut out = std::io::stdout().lock();
    if *json {
        #[derive(serde::Serialize)]
        struct Inspected<'a> {
            #[serde(flatten)]
            disk: &'a imgsan::image::DiskSummary,
            /// Per ext2/3/4 volume: features, sizes, counts, journal.
            filesystems: &'a [imgsan::browse::FsDetails],
            facts: &'a check::Facts,
        }
        let doc = Inspected {
            disk: &summary,
            filesystems: &filesystems,
            facts: &facts,
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        print_disk_summary(&mut out, &summary)?;
        out.write_all(imgsan::browse::render_fs_details(&filesystems).as_bytes())?;
        out.write_all(check::text::render(&facts).as_bytes())?;
    }
    Ok(EXIT_CLEAN)
}

fn print_disk_summary(out: &mut impl Write, s: &imgsan::image::DiskSummary) -> std::io::Result<()> {
    writeln!(out, "image:          {}", s.image)?;
    writeln!(out, "format:         {}", s.format)?;
    writeln!(
        out,
        "virtual size:   {} ({} bytes)",
        human(s.virtual_size),
        s.virtual_size
    )?;
    writeln!(
        out,
        "allocated size: {} ({} bytes)",
        human(s.allocated_size),
        s.allocated_size
    )?;
    for (k, v) in &s.details {
        writeln!(out, "{:<15} {v}", format!("{k}:"))?;
    }
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    let t = &s.partition_table;
    let scheme = serde_json::to_value(t.scheme)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    write!(
        out,
        "partition table: {scheme}, {}-byte sectors",
        t.sector_size
    )?;
    if let Some(id) = &t.id {
        write!(out, ", id {id}")?;
    }
    writeln!(out)?;
    for w in &t.warnings {
        writeln!(out, "warning: {w}")?;
    }
    writeln!(
        out,
        "{:>4} {:>14} {:>10}  {:<22} {:<12} {:<38} label",
        "#", "start", "size", "type", "filesystem", "uuid"
    )?;
    for v in &s.volumes {
        let (num, ptype) = match (&v.partition, &v.lv) {
            (Some(p), _) => (p.index.to_string(), p.part_type.name.to_string()),
            (None, Some(lv)) => ("-".to_string(), format!("LV {lv}")),
            (None, None) => ("-".to_string(), "(whole disk)".to_string()),
        };
        writeln!(
            out,
            "{:>4} {:>14} {:>10}  {:<22} {:<12} {:<38} {}",
            num,
            v.start,
            human(v.size),
            ptype,
            v.filesystem.blkid_type(),
            v.filesystem.uuid.as_deref().unwrap_or("-"),
            v.filesystem.label.as_deref().unwrap_or("")
        )?;
        for w in &v.filesystem.warnings {
            writeln!(out, "     warning: {w}")?;
        }
    }
    if let Some(lvm) = &s.lvm {
        lvm.render(out)?;
    }
    Ok(())
}
