//! `imgsan sanitize`, end to end: check the image, apply the sanitize rules to the
//! guest's trees, rebuild every ext4 volume from the edited trees, and write the
//! whole disk, hashing the output and every kept file as the bytes pass.
//!
//! The order is the design's: nothing is written before the check and the rules
//! have run on the in-memory trees, so a refusal (blocking findings, a volume
//! imgsan cannot rebuild) leaves no output at all. The input is only read.
//!
//! Must not: parse anything (the readers, `inspect` and `rules` do), or decide
//! policy (`policy`, `sanitize`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::check::{self, CheckError, Inputs, LoadedVolume};
use crate::disk::probe::FsType;
use crate::error::{Error, Result};
use crate::guest::assemble::{assemble, NsFiles, FACT_FILE_LIMIT};
use crate::image::Image;
use crate::inspect::os::identify_guest;
use crate::output::convert::Target;
use crate::output::hash;
use crate::output::write::{write_plan_hashed, Hashing, WriteStats};
use crate::policy::{Mode, Report};
use crate::progress::{Progress, Unit};
use crate::repack::{self, DiskSize, Others, PlanOptions, Rebuild, VolumeOutcome};
use crate::sanitize::resolve::is_below;
use crate::sanitize::{self, Context, Layout, SanitizeReport};
use crate::tree::{Kind, Tree};

/// What a sanitize run is asked, besides the image.
#[derive(Debug, Clone, Default)]
pub struct SanitizeOptions {
    /// Rule switches (`--disable`, `--no-hygiene`, `--keep-user`).
    pub rules: sanitize::Options,
    /// Write even when error-level findings block.
    pub force: bool,
    /// The output disk's size.
    pub size: DiskSize,
    /// LVM choices (`--new-lvm-uuids`).
    pub lvm: repack::lvm::LvmOptions,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Hash every kept file for a manifest.
    pub manifest: bool,
    /// Partitions (by number) imgsan cannot rebuild or classify that are copied
    /// verbatim anyway (`--keep-partition N`); any other such partition refuses
    /// the run.
    pub keep_partitions: BTreeSet<u32>,
    /// Keep the Linux volumes the guest never mounts (`--keep-unmounted`)
    /// instead of re-creating them empty; the "anywhere" rules run on them.
    pub keep_unmounted: bool,
}

/// Why a run stopped before writing.
#[derive(Debug, thiserror::Error)]
pub enum SanitizeError {
    /// Rules, request, name lists, or an unknown rule id (exit code 2).
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error("{0}")]
    Usage(String),
    /// The image or a filesystem could not be read or rebuilt (exit code 3),
    /// or the output could not be written (exit code 4).
    #[error(transparent)]
    Image(#[from] Error),
}

impl From<CheckError> for SanitizeError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Rules(r) => SanitizeError::Rules(r),
            CheckError::Image(e) => SanitizeError::Image(e),
            CheckError::Volume { volume, source } => {
                SanitizeError::Image(Error::within(volume, source))
            }
        }
    }
}

/// One kept regular file, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Guest path (through the mount table), or "partition N:/path" for a volume
    /// the guest does not mount.
    pub path: Vec<u8>,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// `None` for a file with more holes than [`hash::MAX_HASHED_HOLES`].
    pub blake3: Option<blake3::Hash>,
}

/// What the output is, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputSummary {
    /// The output file, or "-" for standard output; null on a dry run.
    pub path: Option<String>,
    pub size_bytes: u64,
    /// Bytes written as data (holes not counted); null on a dry run.
    pub data_bytes: Option<u64>,
    /// BLAKE3 of the whole output as written; null on a dry run.
    pub blake3: Option<String>,
    pub table_rewritten: bool,
    pub volumes: Vec<VolumeOutcome>,
    /// Regular files kept, and their bytes.
    pub files_kept: u64,
    pub bytes_kept: u64,
    /// Bytes the plan writes (before all-zero blocks are skipped).
    pub planned_data_bytes: u64,
    pub dry_run: bool,
    /// Written although blocking findings were reported (`--force`).
    pub forced: bool,
    /// Partitions copied verbatim because the operator named them
    /// (`--keep-partition`).
    pub kept_partitions: Vec<u32>,
    /// The manifest file, when one was written.
    pub manifest: Option<String>,
}

/// The result of a run.
pub struct Outcome {
    /// The policy report in sanitize mode, with `sanitize` and `output` filled
    /// once the rules ran.
    pub report: Report,
    /// Set when blocking findings stopped the run before anything was written:
    /// the input's (before the rules ran) or the re-check's (after).
    pub blocked: bool,
    pub output: Option<OutputSummary>,
    pub manifest: Vec<ManifestEntry>,
}

/// Runs the pipeline on an opened image. `target` is ignored on a dry run.
pub fn sanitize(
    image: &Image,
    inputs: &Inputs,
    opts: &SanitizeOptions,
    target: &Target,
    progress: &dyn Progress,
) -> std::result::Result<Outcome, SanitizeError> {
    let unknown = opts.rules.unknown_rules(&inputs.rules.sanitize);
    if !unknown.is_empty() {
        return Err(SanitizeError::Usage(format!(
            "--disable names no sanitize rule: {} (`imgsan rules show sanitize` lists them)",
            unknown.join(", ")
        )));
    }
    for &n in &opts.keep_partitions {
        let Some(v) = image
            .volumes
            .iter()
            .find(|v| v.partition.as_ref().is_some_and(|p| p.index == n))
        else {
            return Err(SanitizeError::Usage(format!(
                "--keep-partition {n}: the image has no partition {n}"
            )));
        };
        if v.is_ext() || v.probed.fs == FsType::Swap {
            return Err(SanitizeError::Usage(format!(
                "--keep-partition {n}: partition {n} holds {}, which sanitize rebuilds or re-creates; \
                 --keep-partition is for partitions it cannot",
                v.probed.blkid_type()
            )));
        }
    }
    // The input's hash runs beside the reading; it only reads the file.
    let input_path = image.path.clone();
    let (input_hash, read) = std::thread::scope(|s| {
        let h = s.spawn(|| hash_file(&input_path));
        progress.start("read", image.volumes.len() as u64, Unit::Items);
        let read = check::read_volumes(image);
        progress.finish();
        (h.join(), read)
    });
    let (mut volumes, errors) = read;
    if let Some((volume, source)) = errors.into_iter().next() {
        // A filesystem that cannot be read cannot be cleaned; copying it as it is
        // would publish whatever it holds.
        return Err(CheckError::Volume { volume, source }.into());
    }
    refuse_unrebuildable(image, &volumes)?;
    repack::refuse_unaccounted(image, |i| volumes[i].fs.is_some(), &opts.keep_partitions)?;

    let mut info = check::image_info(image);
    info.blake3 = match input_hash {
        Ok(Ok(h)) => Some(h.to_hex().to_string()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => None,
    };
    let mut report = check::report(&volumes, inputs, info);
    report.set_mode(Mode::Sanitize);
    let rule_runs = |rule: &str| {
        inputs.rules.sanitize.enabled(rule)
            && !opts.rules.disabled.contains(rule)
            && inputs
                .request
                .as_ref()
                .is_none_or(|r| r.excepts(rule).is_none())
    };
    report.resolve_fixers(rule_runs);
    if !report.summary.passed && !opts.force {
        return Ok(Outcome {
            report,
            blocked: true,
            output: None,
            manifest: Vec::new(),
        });
    }

    // The rules, on the trees.
    progress.start("sanitize", 0, Unit::Items);
    let (layout, base) = {
        let ids: Vec<_> = volumes.iter().map(|v| v.id.clone()).collect();
        let trees: Vec<Option<&Tree>> = volumes.iter().map(|v| v.tree.as_ref()).collect();
        let guest = assemble(&ids, trees)?.ok_or_else(|| {
            Error::unsupported(
                "sanitizing an image without a guest root filesystem (no volume holds /etc/os-release)",
            )
        })?;
        let os = identify_guest(&NsFiles {
            ns: &guest.ns,
            limit: FACT_FILE_LIMIT,
        })?;
        (
            Layout::of(&guest),
            os.and_then(|os| sanitize::base_for(&inputs.rules.policy, &os)),
        )
    };
    let mut layout = layout;
    layout.volume_names = image.volumes.iter().map(|v| v.name()).collect();
    let cx = Context::new(&inputs.rules, base, inputs.request.as_ref(), &opts.rules);
    let mut trees: Vec<Option<Tree>> = volumes.iter_mut().map(|v| v.tree.take()).collect();
    // Linux volumes the guest never mounts: leftover data disks. Emptied unless
    // the operator keeps them; kept ones get the "anywhere" rules.
    let unmounted = layout.unmounted_volumes(&trees);
    let mut emptied = BTreeSet::new();
    if opts.keep_unmounted {
        layout.unmounted = unmounted;
    } else {
        for &i in &unmounted {
            if let Some(t) = trees[i].as_mut() {
                sanitize::empty_volume(t)?;
                emptied.insert(i);
            }
        }
    }
    let mut sreport: SanitizeReport = sanitize::apply(&mut trees, &layout, &cx)?;
    for &i in &emptied {
        sreport.warnings.push(format!(
            "{}: not mounted by the guest: re-created empty with its UUID and label (--keep-unmounted keeps it)",
            image.volumes[i].name()
        ));
    }
    progress.finish();
    report.resolve_fixers(|rule| sreport.ran(rule));
    report.sanitize = serde_json::to_value(&sreport).ok();

    // The checks again, on the sanitized trees: a rule's "fixed by" was a
    // prediction, and what blocks from here on is what is still there. How the
    // image was captured (a replayed journal, a hibernated swap) stays as read:
    // sanitizing does not make a live capture consistent.
    progress.start("re-check", 0, Unit::Items);
    for (v, t) in volumes.iter_mut().zip(trees.iter_mut()) {
        v.tree = t.take();
    }
    report.set_recheck(check::findings(&volumes, inputs));
    let trees: Vec<Option<Tree>> = volumes.iter_mut().map(|v| v.tree.take()).collect();
    progress.finish();
    if !report.summary.passed && !opts.force {
        return Ok(Outcome {
            report,
            blocked: true,
            output: None,
            manifest: Vec::new(),
        });
    }

    // Rebuild.
    let ext4: Vec<Option<Rebuild>> = volumes
        .iter_mut()
        .zip(trees)
        .map(|(v, t)| {
            let info = v.fs.take()?;
            Some(Rebuild {
                // A tree the rules removed rebuilds as an empty filesystem.
                tree: t.unwrap_or_else(|| Tree::new(crate::tree::Flavor::Synthetic, None)),
                geometry: info.geometry,
            })
        })
        .collect();
    progress.start("plan", 0, Unit::Items);
    let plan_opts = PlanOptions {
        size: opts.size,
        keep_partitions: opts.keep_partitions.clone(),
        others: Others::Refuse,
        emptied,
        lvm: opts.lvm,
    };
    let repacked = repack::plan(image, &ext4, &plan_opts)?;
    progress.finish();

    let (files_kept, bytes_kept) = kept(&ext4);
    let mut summary = OutputSummary {
        path: None,
        size_bytes: repacked.plan.len,
        data_bytes: None,
        blake3: None,
        table_rewritten: repacked.table_rewritten,
        volumes: repacked.volumes.clone(),
        files_kept,
        bytes_kept,
        planned_data_bytes: repacked.plan.data_bytes(),
        dry_run: opts.dry_run,
        forced: opts.force && !report.summary.passed,
        kept_partitions: opts.keep_partitions.iter().copied().collect(),
        manifest: None,
    };
    let mut manifest = Vec::new();
    if !opts.dry_run {
        let hashing = Hashing {
            output: true,
            files: opts.manifest,
        };
        let stats = write_plan_hashed(&repacked.plan, target, progress, hashing)?;
        summary.path = Some(match target {
            Target::File(p) => p.display().to_string(),
            Target::Stdout => "-".into(),
        });
        summary.data_bytes = Some(stats.data_bytes);
        summary.blake3 = stats.blake3.map(|h| h.to_hex().to_string());
        if opts.manifest {
            manifest = manifest_entries(&ext4, &layout, image, &stats)?;
        }
    }
    report.output = serde_json::to_value(&summary).ok();
    Ok(Outcome {
        report,
        blocked: false,
        output: Some(summary),
        manifest,
    })
}

/// BLAKE3 of a whole file: read in 16 MiB pieces (a memory map would make the
/// whole input resident in this process), each hashed on all threads.
fn hash_file(path: &Path) -> Result<blake3::Hash> {
    use std::io::Read;
    let what = || format!("hashing {}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(what(), e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 16 << 20];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(what(), e)),
            }
        }
        if n == 0 {
            break;
        }
        h.update_rayon(&buf[..n]);
    }
    Ok(h.finalize())
}

/// Refuses a disk that holds a Linux filesystem imgsan would have to copy
/// verbatim (XFS, an ext volume that was not read): its user data would pass
/// through uncleaned.
fn refuse_unrebuildable(image: &Image, volumes: &[LoadedVolume]) -> Result<()> {
    for (v, lv) in image.volumes.iter().zip(volumes) {
        let rebuildable = lv.fs.is_some();
        let linux_fs = matches!(
            v.probed.fs,
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Xfs
        );
        if linux_fs && !rebuildable {
            return Err(Error::unsupported(format!(
                "sanitizing {}: it holds {}, which imgsan cannot rebuild yet, and copying it verbatim would keep its user data",
                v.name(),
                v.probed.blkid_type()
            )));
        }
    }
    Ok(())
}

/// Regular files in the rebuilt trees, counted once per inode, and their bytes.
fn kept(ext4: &[Option<Rebuild>]) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for e in ext4.iter().flatten() {
        let mut seen = std::collections::HashSet::new();
        for (_, id) in e.tree.paths() {
            let node = e.tree.node(id);
            if matches!(node.kind, Kind::File(_)) && seen.insert(id) {
                n += 1;
                bytes += node.size;
            }
        }
    }
    (n, bytes)
}

/// The manifest: every regular file of every rebuilt volume, by every name, with
/// the hash the writer computed (or, for files the plan does not copy, one
/// computed here from the tree: inline data, empty or all-hole files).
fn manifest_entries(
    ext4: &[Option<Rebuild>],
    layout: &Layout,
    image: &Image,
    stats: &WriteStats,
) -> Result<Vec<ManifestEntry>> {
    let mut out = Vec::new();
    for (vi, e) in ext4.iter().enumerate() {
        let Some(e) = e else { continue };
        let prefix: Vec<u8> = if layout.root == vi {
            Vec::new()
        } else {
            match layout.mounts.iter().find(|(_, v)| *v == vi) {
                Some((mp, _)) => mp.clone(),
                None => format!("{}:", image.volumes[vi].name()).into_bytes(),
            }
        };
        let mut own: HashMap<u32, Option<blake3::Hash>> = HashMap::new();
        for (path, id) in e.tree.paths() {
            let node = e.tree.node(id);
            let Kind::File(runs) = &node.kind else {
                continue;
            };
            let h = match stats.files.get(&(vi as u32, id)) {
                Some(h) => Some(*h),
                None => match own.get(&id) {
                    Some(h) => *h,
                    None => {
                        let h = if runs.is_empty() {
                            hash::zeros(node.size)
                        } else {
                            // Not copied by the plan (inline data), or every
                            // run past the end of the file.
                            hash_from_tree(&e.tree, id, node.size)?
                        };
                        own.insert(id, h);
                        h
                    }
                },
            };
            let mut p = prefix.clone();
            p.extend_from_slice(&path);
            // A file under a directory that another volume's mount covers: the
            // guest never sees it by this path, so name it by its volume.
            let covered = layout.mounts.iter().any(|(m, v)| {
                *v != vi
                    && (layout.root == vi || is_below(m, &prefix))
                    && (p == *m || is_below(&p, m))
            });
            if covered {
                p = format!("{}:", image.volumes[vi].name()).into_bytes();
                p.extend_from_slice(&path);
            }
            out.push(ManifestEntry {
                path: p,
                mode: node.perm,
                uid: node.uid,
                gid: node.gid,
                size: node.size,
                blake3: h,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A file's hash read through the tree, in 1 MiB pieces; `None` past
/// [`hash::MAX_HASHED_HOLES`] bytes.
fn hash_from_tree(tree: &Tree, id: u32, size: u64) -> Result<Option<blake3::Hash>> {
    if size > hash::MAX_HASHED_HOLES {
        return Ok(None);
    }
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        tree.read_file(id, at, &mut buf[..n])?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Some(h.finalize()))
}

/// Writes the manifest as text, one file per line, tab-separated:
/// `blake3  mode(octal)  uid  gid  size  path`; the hash is `-` for a file
/// with more than [`hash::MAX_HASHED_HOLES`] of holes. Bytes of a path that are not
/// printable ASCII, and backslashes, are written as `\xNN`.
pub fn render_manifest(
    entries: &[ManifestEntry],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    writeln!(out, "# imgsan manifest: blake3\tmode\tuid\tgid\tsize\tpath")?;
    for e in entries {
        let mut p = String::with_capacity(e.path.len());
        for &b in &e.path {
            if b.is_ascii_graphic() && b != b'\\' || b == b' ' {
                p.push(b as char);
            } else {
                p.push_str(&format!("\\x{b:02x}"));
            }
        }
        writeln!(
            out,
            "{}\t{:04o}\t{}\t{}\t{}\t{}",
            e.blake3
                .map_or_else(|| "-".to_string(), |h| h.to_hex().to_string()),
            e.mode,
            e.uid,
            e.gid,
            e.size,
            p
        )?;
    }
    Ok(())
}

/// Writes the manifest to `path` through a temporary name.
pub fn write_manifest(entries: &[ManifestEntry], path: &Path) -> Result<()> {
    crate::output::sink::write_file_atomically(path, |w| render_manifest(entries, w))
}
