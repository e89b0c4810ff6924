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
use imgsan::check;
use imgsan::check::text::human;
use imgsan::disk;
use imgsan::output::convert::{self, Target};
use imgsan::output::report;
use imgsan::progress::{Progress, Silent, Unit};
use imgsan::rules::RuleSet;
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
    #[command(
        after_help = "Examples:\n  imgsan sanitize disk.qcow2 -o clean.raw\n  imgsan sanitize disk.qcow2 -o clean.raw --shrink --manifest clean.manifest\n  imgsan sanitize disk.raw -o clean.raw --request request.yaml --report report.json --format json\n  imgsan sanitize disk.raw --dry-run --name Genomics-v2 --description \"Ubuntu 22.04 with samtools\"\n  imgsan sanitize disk.raw -o - --report report.txt | gzip > clean.raw.gz\n  imgsan sanitize disk.raw -o clean.raw --disable var-log --keep-user ubuntu\n\nThe manifest lists every kept file, one per line: blake3, mode (octal), uid, gid, size, path (tab-separated; non-printable bytes as \\xNN)."
    )]
    Sanitize {
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
    },
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
    #[command(
        after_help = "Examples:\n  imgsan inspect disk.qcow2\n  imgsan inspect disk.raw --json | jq '.facts.os'\n  imgsan inspect disk.raw --json | jq -r '.facts.packages.dpkg[].name'\n  imgsan inspect disk.raw --json | jq '.filesystems[] | {volume, features, state, journal}'"
    )]
    Inspect {
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
    },
    /// List a directory of the guest, as `ls -A` would.
    ///
    /// PATH is a path in the guest: the root filesystem with the others mounted
    /// where its /etc/fstab says. Symlinks (absolute ones too) and ".." resolve
    /// inside the guest, never on the host. An image without a guest root (a
    /// bare data filesystem) is browsed from its one readable filesystem; with
    /// several, --volume chooses. Names that are not printable are escaped
    /// (\xHH, and \\ for a backslash); times are UTC.
    ///
    /// Exit codes: 0 listed; 2 no such path in the guest (or a bad option);
    /// 3 image unreadable or unsupported.
    #[command(
        after_help = "Examples:\n  imgsan ls disk.qcow2\n  imgsan ls disk.qcow2 /etc -l\n  imgsan ls disk.raw /boot -R\n  imgsan ls data.raw / --volume 2 -lR"
    )]
    Ls {
        /// The image (RAW or QCOW2).
        input: PathBuf,
        /// A path in the guest (default: /).
        #[arg(default_value = "/")]
        path: PathBuf,
        /// Long format: mode, links, uid, gid, size (major, minor for
        /// devices), mtime, name (and "-> target" for symlinks). A symlink given
        /// as PATH is shown itself, not followed, unless PATH ends in "/".
        #[arg(short, long)]
        long: bool,
        /// List subdirectories too (not through symlinks, across mounts), each
        /// headed by its guest path and a colon.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Browse partition N alone as / (its number as `imgsan inspect` shows).
        #[arg(long, value_name = "N")]
        volume: Option<u32>,
        /// Force the input format instead of detecting it.
        #[arg(long, value_parser = ["raw", "qcow2"])]
        format: Option<String>,
    },
    /// Write a guest file's bytes to standard output.
    ///
    /// PATH resolves as for `imgsan ls`; symlinks are followed inside the guest.
    /// The content is streamed in chunks of at most 1 MiB; holes read as zeros.
    ///
    /// Exit codes: 0 written; 2 no such path in the guest, or a path that is a
    /// directory or special file, not a regular file; 3 image unreadable or
    /// unsupported; 4 standard output could not be written.
    #[command(
        after_help = "Examples:\n  imgsan cat disk.qcow2 /etc/os-release\n  imgsan cat disk.raw /etc/fstab | grep -v '^#'\n  imgsan cat disk.raw /var/log/syslog --volume 1 > syslog"
    )]
    Cat {
        /// The image (RAW or QCOW2).
        input: PathBuf,
        /// A path in the guest.
        path: PathBuf,
        /// Browse partition N alone as / (its number as `imgsan inspect` shows).
        #[arg(long, value_name = "N")]
        volume: Option<u32>,
        /// Force the input format instead of detecting it.
        #[arg(long, value_parser = ["raw", "qcow2"])]
        format: Option<String>,
    },
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
    #[command(
        after_help = "Examples:\n  imgsan check disk.qcow2 --name Genomics-v2 --description \"Ubuntu 22.04 with samtools and bcftools for the spring workshop\"\n  imgsan check disk.raw --request request.yaml --existing-names my-images.txt\n  imgsan check disk.raw --request request.yaml --format json -o report.json\n  imgsan check disk.raw --request request.yaml --format junit -o junit.xml --today 2024-06-01\n  imgsan check disk.raw --rules ./our-cloud-rules --name X --description \"...\"\n\nA request file mirrors the imaging request form: `imgsan rules show request` prints an example."
    )]
    Check {
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
    },
    /// Validate rules files, or print the built-in ones.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules file (policy, eol, denylist, featured-names, sanitize)
    /// or a request file. Every problem is printed as file:line:column: what was
    /// expected. Exit code 0 when valid, 2 otherwise.
    #[command(
        after_help = "Examples:\n  imgsan rules check rules/policy.yaml\n  imgsan rules check request.yaml\n\nThe kind comes from the file's `kind:` key, or else its name (policy.yaml, eol.yaml, denylist.yaml, sanitize.yaml, featured-names.yaml, request*.yaml)."
    )]
    Check {
        /// The file to validate.
        file: PathBuf,
    },
    /// Print the built-in rules as YAML: one kind, or all of them. With --rules,
    /// the effective rules after that directory's files replace the built-in
    /// ones (without comments).
    #[command(
        after_help = "Examples:\n  imgsan rules show                 # every built-in rules file\n  imgsan rules show policy > policy.yaml\n  imgsan rules show request         # an example request file\n  imgsan rules show denylist --rules ./our-cloud-rules"
    )]
    Show {
        /// policy, eol, denylist, featured-names, sanitize or request.
        #[arg(value_name = "KIND", value_parser = ["policy", "eol", "denylist", "featured-names", "sanitize", "request"])]
        kind: Option<String>,
        /// Show the effective rules with this rules directory.
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
    },
}

fn parse_date(s: &str) -> Result<imgsan::rules::Date, String> {
    imgsan::rules::Date::parse(s)
}

/// What the policy check needs besides the image (shared by `sanitize`).
#[derive(clap::Args, Debug, Clone)]
struct CheckArgs {
    /// The image name (overrides the request file's `name`).
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// The image description (overrides the request file's `description`).
    #[arg(long, value_name = "D")]
    description: Option<String>,
    /// An imaging request file (YAML): name, description, files to exclude,
    /// exceptions, ...
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// More featured image names, one per line (blank lines and # comments
    /// skipped), besides the rules' list.
    #[arg(long, value_name = "FILE")]
    featured_names: Option<PathBuf>,
    /// The user's existing image names, one per line: reusing one is a
    /// warning.
    #[arg(long, value_name = "FILE")]
    existing_names: Option<PathBuf>,
    /// The date end-of-life checks use, YYYY-MM-DD (default: today, UTC). Set
    /// it in CI for reproducible results.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    today: Option<imgsan::rules::Date>,
    /// A rules directory (policy.yaml, eol.yaml, denylist.yaml, ...) whose
    /// files replace the built-in ones, kind by kind.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

impl CheckArgs {
    fn options(&self) -> check::CheckOptions {
        check::CheckOptions {
            name: self.name.clone(),
            description: self.description.clone(),
            request: self.request.clone(),
            featured_names: self.featured_names.clone(),
            existing_names: self.existing_names.clone(),
            today: self.today,
            rules_dir: self.rules.clone(),
        }
    }
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
        Command::Sanitize {
            input,
            output,
            force,
            dry_run,
            size,
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
        } => {
            let inputs = match check::Inputs::load(&check_args.options()) {
                Ok(i) => i,
                Err(e) => return Ok(rules_error(&e)),
            };
            let fmt: report::Format = format.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let dopts = disk::OpenOptions {
                format: image_format.clone(),
            };
            let image = imgsan::image::Image::open(input, &dopts)
                .with_context(|| input.display().to_string())?;
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
                dry_run: *dry_run,
                manifest: manifest.is_some(),
                keep_partitions: keep_partition.iter().copied().collect(),
                keep_unmounted: *keep_unmounted,
            };
            let progress = progress_for(cli);
            let mut outcome = match imgsan::pipeline::sanitize(
                &image,
                &inputs,
                &opts,
                &target,
                progress.as_ref(),
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
                imgsan::pipeline::write_manifest(&outcome.manifest, path)?;
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
            match report_path {
                Some(path) => write_atomically(path, text.as_bytes())?,
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
            let plan_opts = imgsan::repack::PlanOptions {
                size: size.disk_size(),
                others: imgsan::repack::Others::CopyNoted,
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
            rules,
        } => {
            let rules = match RuleSet::load(rules.as_deref(), &[]) {
                Ok(r) => r,
                Err(e) => return Ok(rules_error(&e)),
            };
            let opts = disk::OpenOptions {
                format: format.clone(),
            };
            let image = imgsan::image::Image::open(input, &opts)
                .with_context(|| input.display().to_string())?;
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
        Command::Ls {
            input,
            path,
            long,
            recursive,
            volume,
            format,
        } => browse(input, format, *volume, |view, out| {
            let opts = imgsan::browse::LsOptions {
                long: *long,
                recursive: *recursive,
            };
            imgsan::browse::ls(view, path.as_os_str().as_encoded_bytes(), opts, out)
        }),
        Command::Cat {
            input,
            path,
            volume,
            format,
        } => browse(input, format, *volume, |view, out| {
            imgsan::browse::cat(view, path.as_os_str().as_encoded_bytes(), out).map(|_| ())
        }),
        Command::Check {
            input,
            check: check_args,
            format,
            output,
            image_format,
        } => {
            let opts = check_args.options();
            let inputs = match check::Inputs::load(&opts) {
                Ok(i) => i,
                Err(e) => return Ok(rules_error(&e)),
            };
            let dopts = disk::OpenOptions {
                format: image_format.clone(),
            };
            let image = imgsan::image::Image::open(input, &dopts)
                .with_context(|| input.display().to_string())?;
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
        Command::Rules(RulesCommand::Check { file }) => match imgsan::rules::check_file(file) {
            Ok(kind) => {
                println!("{}: valid {kind} file", file.display());
                Ok(EXIT_CLEAN)
            }
            Err(e) => Ok(rules_error(&e)),
        },
        Command::Rules(RulesCommand::Show { kind, rules }) => {
            let kind = kind.as_deref().and_then(imgsan::rules::Kind::from_name);
            let text = match rules {
                None => imgsan::rules::show(kind),
                Some(dir) => {
                    let rs = match RuleSet::load(Some(dir), &[]) {
                        Ok(r) => r,
                        Err(e) => return Ok(rules_error(&e)),
                    };
                    effective_rules(&rs, kind)
                }
            };
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            Ok(EXIT_CLEAN)
        }
    }
}

/// Opens the image, reads its filesystems and runs `ls` or `cat` over the guest.
/// A path or volume the guest does not have is a usage error (exit 2).
fn browse(
    input: &std::path::Path,
    format: &Option<String>,
    volume: Option<u32>,
    f: impl FnOnce(&imgsan::browse::View<'_>, &mut dyn Write) -> Result<(), imgsan::browse::BrowseError>,
) -> anyhow::Result<u8> {
    use imgsan::browse::BrowseError;
    let opts = disk::OpenOptions {
        format: format.clone(),
    };
    let image =
        imgsan::image::Image::open(input, &opts).with_context(|| input.display().to_string())?;
    let (volumes, errors) = check::read_volumes(&image);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let res = imgsan::browse::view(&volumes, errors, volume).and_then(|view| {
        for w in &view.warnings {
            eprintln!("imgsan: warning: {w}");
        }
        f(&view, &mut out)
    });
    match res {
        Ok(()) => {
            out.flush()
                .map_err(|e| imgsan::Error::output("standard output", e))?;
            Ok(EXIT_CLEAN)
        }
        Err(BrowseError::Request(msg)) => {
            let _ = out.flush();
            eprintln!("imgsan: {msg}");
            Ok(EXIT_USAGE)
        }
        Err(BrowseError::Failed(e)) => {
            let _ = out.flush();
            Err(anyhow::Error::new(e).context(input.display().to_string()))
        }
    }
}

/// The effective rules as YAML (the request kind has no effective form: the
/// example is shown).
fn effective_rules(rs: &RuleSet, kind: Option<imgsan::rules::Kind>) -> String {
    use imgsan::rules::{to_yaml, Kind};
    let one = |k: Kind| match k {
        Kind::Policy => to_yaml(&rs.policy),
        Kind::Eol => to_yaml(&rs.eol),
        Kind::Denylist => to_yaml(&rs.denylist),
        Kind::Sanitize => to_yaml(&rs.sanitize),
        Kind::FeaturedNames => to_yaml(&rs.featured),
        Kind::Request => imgsan::rules::show(Some(Kind::Request)),
    };
    match kind {
        Some(k) => one(k),
        None => [
            Kind::Policy,
            Kind::Eol,
            Kind::Denylist,
            Kind::FeaturedNames,
            Kind::Sanitize,
        ]
        .into_iter()
        .map(|k| format!("--- # {}\n{}", k.file_name(), one(k)))
        .collect(),
    }
}

/// Prints a rules problem (every one, as file:line:column: message) and gives
/// the usage exit code.
fn rules_error(e: &imgsan::rules::RulesError) -> u8 {
    for line in e.to_string().lines() {
        eprintln!("imgsan: {line}");
    }
    EXIT_USAGE
}

/// Writes `bytes` to `path` through a temporary file beside it, renamed when
/// complete: a failed run leaves nothing under the final name.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    imgsan::output::sink::write_file_atomically(path, |w| w.write_all(bytes))?;
    Ok(())
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
/// Bars on a terminal; one plain line per finished phase when standard error is
/// a log (CI, a pipe); nothing with --quiet.
fn progress_for(cli: &Cli) -> Box<dyn Progress> {
    let ci = std::env::var_os("CI").is_some();
    if cli.quiet {
        Box::new(Silent)
    } else if ci || !std::io::stderr().is_terminal() {
        Box::new(Lines::default())
    } else {
        Box::new(Bars::default())
    }
}

/// Plain progress for logs: "imgsan: write: 1.2 GiB in 3.4 s" when a phase ends.
#[derive(Default)]
struct Lines {
    phase: Mutex<Option<(String, std::time::Instant, u64, Unit)>>,
}

impl Progress for Lines {
    fn start(&self, phase: &str, total: u64, unit: Unit) {
        if let Ok(mut p) = self.phase.lock() {
            *p = Some((phase.to_string(), std::time::Instant::now(), total, unit));
        }
    }

    fn advance(&self, _: u64) {}

    fn finish(&self) {
        if let Some((phase, t0, total, unit)) = self.phase.lock().ok().and_then(|mut p| p.take()) {
            let what = match unit {
                _ if total == 0 => "done".to_string(),
                Unit::Bytes => human(total),
                Unit::Items => format!("{total} items"),
            };
            eprintln!(
                "imgsan: {phase}: {what} in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
        }
    }

    fn note(&self, line: &str) {
        eprintln!("{line}");
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
