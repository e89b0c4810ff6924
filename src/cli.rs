//! Argument parsing and the mapping from library results to exit codes and output.
//!
//! Exit codes (documented in the README):
//! 0 clean; 1 policy violations found; 2 usage or rules-file error; 3 image unreadable
//! or unsupported; 4 output could not be written.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use clap::{Parser, Subcommand};
use imgsan::disk;
use imgsan::output::convert::{self, Target};
use imgsan::progress::{Progress, Silent, Unit};
use imgsan::ErrorKind;

pub const EXIT_CLEAN: u8 = 0;
#[allow(dead_code)] // returned by `check` and `sanitize`
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
    after_help = "Examples:\n  imgsan inspect disk.qcow2\n  imgsan convert disk.qcow2 -o disk.raw\n  imgsan convert disk.qcow2 -o - | gzip > disk.raw.gz"
)]
struct Cli {
    /// Worker threads for parallel work (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    /// Never show progress bars, even on a terminal.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an image (RAW or QCOW2) to a sparse RAW image.
    ///
    /// Unallocated and zero ranges, and data blocks that are all zeros, become holes.
    /// The output is written under a temporary name beside OUT and renamed when
    /// complete; the input is never modified.
    Convert {
        /// The input image (RAW or QCOW2; the format is detected).
        input: PathBuf,
        /// The output RAW image, or "-" to stream to standard output (zeros are
        /// written out on a stream).
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Force the input format instead of detecting it.
        #[arg(long, value_parser = ["raw", "qcow2"])]
        format: Option<String>,
    },
    /// Rebuild every ext4 filesystem of an image fresh, with no other change.
    ///
    /// Each ext2/3/4 volume is read into a tree (a dirty journal is replayed in
    /// memory) and built anew with the source's geometry: same UUID, label, block
    /// and inode size, features, hash and checksum seeds. Free space becomes holes,
    /// so nothing deleted survives. Swap is re-created empty with the same UUID and
    /// label. Everything else (partition table, boot code, BIOS boot and EFI
    /// partitions, unknown partitions) is copied verbatim.
    #[command(
        after_help = "Examples:\n  imgsan repack disk.qcow2 -o disk.raw\n  imgsan repack disk.raw -o small.raw --shrink\n  imgsan repack disk.raw -o big.raw --size 20G"
    )]
    Repack {
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
    },
    /// Show what an image holds: format, sizes, partitions and filesystems.
    Inspect {
        /// The image to inspect.
        input: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Force the input format instead of detecting it.
        #[arg(long, value_parser = ["raw", "qcow2"])]
        format: Option<String>,
    },
}

/// How big the output disk is. Only the physically last volume changes size, and
/// only if imgsan rebuilds it (ext2/3/4).
#[derive(clap::Args, Debug, Clone)]
struct SizeArgs {
    /// Make the disk as small as its last filesystem allows, plus a margin.
    #[arg(long, conflicts_with = "size")]
    shrink: bool,
    /// Free space kept by --shrink (default: the larger of 10% and 256M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "shrink")]
    margin: Option<u64>,
    /// Make the disk exactly SIZE bytes (suffixes K, M, G, T: powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
}

impl SizeArgs {
    fn disk_size(&self) -> imgsan::repack::DiskSize {
        use imgsan::repack::DiskSize;
        match (self.shrink, self.size) {
            (true, _) => DiskSize::Shrink {
                margin: self.margin,
            },
            (false, Some(n)) => DiskSize::Bytes(n),
            (false, None) => DiskSize::Same,
        }
    }
}

/// "10G" -> 10 GiB; plain numbers are bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
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

fn open_disk(
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
        Command::Convert {
            input,
            output,
            format,
        } => {
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
        Command::Repack {
            input,
            output,
            size,
            format,
        } => {
            let opts = disk::OpenOptions {
                format: format.clone(),
            };
            let image = imgsan::image::Image::open(input, &opts)
                .with_context(|| input.display().to_string())?;
            let volumes = imgsan::repack::read_volumes(&image, &Default::default())
                .with_context(|| input.display().to_string())?;
            let repacked = imgsan::repack::plan(&image, &volumes, size.disk_size())
                .with_context(|| input.display().to_string())?;
            let target = if output.as_os_str() == "-" {
                Target::Stdout
            } else {
                Target::File(output.clone())
            };
            let progress = progress_for(cli);
            let stats =
                imgsan::output::write::write_plan(&repacked.plan, &target, progress.as_ref())?;
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
        Command::Inspect {
            input,
            json,
            format,
        } => {
            let opts = disk::OpenOptions {
                format: format.clone(),
            };
            let image = imgsan::image::Image::open(input, &opts)
                .with_context(|| input.display().to_string())?;
            let summary = image.summary();
            let mut out = std::io::stdout().lock();
            if *json {
                serde_json::to_writer_pretty(&mut out, &summary)?;
                writeln!(out)?;
            } else {
                print_disk_summary(&mut out, &summary)?;
            }
            Ok(EXIT_CLEAN)
        }
    }
}

/// Sizes for people: 1.5 GiB, 512 MiB, 300 KiB.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
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
        let (num, ptype) = match &v.partition {
            Some(p) => (p.index.to_string(), p.part_type.name.to_string()),
            None => ("-".to_string(), "(whole disk)".to_string()),
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
    Ok(())
}

/// Progress bars on a terminal, nothing otherwise (CI, pipes, --quiet).
fn progress_for(cli: &Cli) -> Box<dyn Progress> {
    let ci = std::env::var_os("CI").is_some();
    if cli.quiet || ci || !std::io::stderr().is_terminal() {
        Box::new(Silent)
    } else {
        Box::new(Bars::default())
    }
}

/// indicatif bars, one per phase.
#[derive(Default)]
struct Bars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64, unit: Unit) {
        let bar = indicatif::ProgressBar::new(total);
        let template = match unit {
            Unit::Bytes => {
                "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            }
            Unit::Items => "{prefix:>12} [{bar:40}] {pos}/{len} eta {eta}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(b) = b.as_ref() {
                b.inc(n);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        }
    }

    fn note(&self, line: &str) {
        if let Ok(b) = self.bar.lock() {
            match b.as_ref() {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
    }
}
