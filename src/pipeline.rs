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
use crate::output::temp::OutputGroup;
use crate::output::write::{write_plan_into, Hashing, WriteStats};
use crate::policy::{Mode, Report};
use crate::progress::{Progress, Unit};
use crate::repack::{self, DiskSize, Others, PlanOptions, Rebuild, VolumeOutcome};
use crate::sanitize::resolve::is_below;
use crate::sanitize::{self, Context, Layout, SanitizeReport};
use crate::tree::{Kind, Tree};
use crate::upload::{self, ShrinkDecision, SizeChoice};

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
    /// Whether `size` was asked for, or left to the guest: with
    /// [`SizeChoice::Auto`] the disk shrinks when the guest grows its root
    /// filesystem at first boot ([`upload::grows_itself`]).
    pub size_choice: SizeChoice,
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
    let group = OutputGroup::new();
    let outcome = sanitize_into(image, inputs, opts, target, progress, &group)?;
    group.commit()?;
    Ok(outcome)
}

/// [`sanitize`], with the output image left in `group`: it becomes final when
/// the caller commits the group, after adding the run's other outputs (the
/// report, the manifest) to it. Dropping the group removes it.
pub fn sanitize_into(
    image: &Image,
    inputs: &Inputs,
    opts: &SanitizeOptions,
    target: &Target,
    progress: &dyn Progress,
    group: &OutputGroup,
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
        // The request's exclusions always run (they are the request's own).
        rule == sanitize::REQUEST_EXCLUDE
            || (inputs.rules.sanitize.enabled(rule)
                && !opts.rules.disabled.contains(rule)
                && inputs
                    .request
                    .as_ref()
                    .is_none_or(|r| r.excepts(rule).is_none()))
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
    let (layout, base, os) = {
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
        unknown_kept_users(&guest.ns, &opts.rules.keep_users)?;
        (
            Layout::of(&guest),
            os.as_ref()
                .and_then(|os| sanitize::base_for(&inputs.rules.policy, os)),
            os,
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
    // What the upload needs from the cleaned guest, read while the trees are here.
    let guest_part = {
        let ids: Vec<_> = volumes.iter().map(|v| v.id.clone()).collect();
        let view: Vec<Option<&Tree>> = volumes.iter().map(|v| v.tree.as_ref()).collect();
        let packages = package_names(&report.facts);
        match assemble(&ids, view)? {
            Some(g) => upload::read_guest(
                image,
                &g.ns,
                os.as_ref(),
                &packages,
                inputs.request.as_ref(),
            ),
            None => upload::GuestPart::default(),
        }
    };
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
    let (size, mut shrink) = choose_size(image, &layout, opts, &guest_part);
    progress.start("plan", 0, Unit::Items);
    let plan_opts = PlanOptions {
        size,
        keep_partitions: opts.keep_partitions.clone(),
        others: Others::Refuse,
        emptied,
        lvm: opts.lvm,
    };
    let repacked = repack::plan(image, &ext4, &plan_opts)?;
    progress.finish();
    if shrink.shrunk && repacked.plan.len >= image.disk.len() {
        shrink = ShrinkDecision {
            shrunk: false,
            reason: "no-gain",
            detail: format!(
                "{}; shrinking would not make the disk smaller",
                shrink.detail
            ),
        };
    }

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
        // A dry run writes nothing, forced or not.
        forced: opts.force && !report.summary.passed && !opts.dry_run,
        kept_partitions: opts.keep_partitions.iter().copied().collect(),
        manifest: None,
    };
    let mut manifest = Vec::new();
    let mut digests = None;
    if !opts.dry_run {
        let hashing = Hashing {
            output: true,
            files: opts.manifest,
            digests: true,
        };
        let stats = write_plan_into(&repacked.plan, target, progress, hashing, Some(group))?;
        summary.path = Some(match target {
            Target::File(p) => p.display().to_string(),
            Target::Stdout => "-".into(),
        });
        summary.data_bytes = Some(stats.data_bytes);
        summary.blake3 = stats.blake3.map(|h| h.to_hex().to_string());
        digests = stats.digests;
        if opts.manifest {
            manifest = manifest_entries(&ext4, &layout, image, &stats)?;
        }
    }
    report.output = serde_json::to_value(&summary).ok();
    let up = upload::upload(
        &guest_part,
        &upload::UploadInputs {
            request: inputs.request.as_ref(),
            name: report.image.name.as_deref(),
            description: report.image.description.as_deref(),
            size_bytes: repacked.plan.len,
            file: summary.path.as_deref(),
            digests,
            shrink,
        },
    );
    report.upload = serde_json::to_value(&up).ok();
    Ok(Outcome {
        report,
        blocked: false,
        output: Some(summary),
        manifest,
    })
}

/// The output's size: what was asked, or with [`SizeChoice::Auto`], shrunk when the
/// guest grows its root filesystem at first boot and that filesystem is the disk's
/// last partition (what growpart can grow), else kept; with the reason either way.
fn choose_size(
    image: &Image,
    layout: &Layout,
    opts: &SanitizeOptions,
    guest: &upload::GuestPart,
) -> (DiskSize, ShrinkDecision) {
    let decision = |shrunk, reason, detail: String| ShrinkDecision {
        shrunk,
        reason,
        detail,
    };
    match opts.size_choice {
        SizeChoice::Shrink => (
            opts.size,
            decision(true, "requested", "shrunk as asked (--shrink)".into()),
        ),
        SizeChoice::Keep => (
            opts.size,
            decision(
                false,
                "kept-by-option",
                match opts.size {
                    DiskSize::Bytes(n) => format!("the size asked for (--size {n})"),
                    _ => "kept the size as asked (--keep-size)".into(),
                },
            ),
        ),
        SizeChoice::Auto => {
            let last = (0..image.volumes.len())
                .max_by_key(|&i| image.volumes[i].start + image.volumes[i].len);
            match &guest.grows {
                Some(Ok(ev)) if last == Some(layout.root) => (
                    DiskSize::Shrink { margin: None },
                    decision(
                        true,
                        "guest-grows-itself",
                        format!(
                            "shrunk: the guest grows its root filesystem to the disk at first boot ({}); --keep-size keeps the size",
                            ev.join(", ")
                        ),
                    ),
                ),
                Some(Ok(_)) => (
                    DiskSize::Same,
                    decision(
                        false,
                        "guest-does-not-grow",
                        "kept the size: the root filesystem is not the disk's last partition, so growpart could not grow it into the space shrinking frees".into(),
                    ),
                ),
                Some(Err(why)) => (
                    DiskSize::Same,
                    decision(
                        false,
                        "guest-does-not-grow",
                        format!(
                            "kept the size: the guest would not grow its root filesystem at first boot ({why}); --shrink shrinks anyway"
                        ),
                    ),
                ),
                None => (
                    DiskSize::Same,
                    decision(
                        false,
                        "guest-does-not-grow",
                        "kept the size: no guest root filesystem".into(),
                    ),
                ),
            }
        }
    }
}

/// Refuses `--keep-user` names that are no account of the guest's /etc/passwd: a
/// typo would otherwise keep nothing, silently.
fn unknown_kept_users(
    ns: &crate::guest::namespace::Namespace<'_>,
    keep: &std::collections::BTreeSet<String>,
) -> std::result::Result<(), SanitizeError> {
    if keep.is_empty() {
        return Ok(());
    }
    let passwd = ns.read(b"/etc/passwd", FACT_FILE_LIMIT).unwrap_or_default();
    let names: std::collections::BTreeSet<&[u8]> = passwd
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b':').next())
        .filter(|n| !n.is_empty())
        .collect();
    let missing: Vec<&str> = keep
        .iter()
        .filter(|k| !names.contains(k.as_bytes()))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SanitizeError::Usage(format!(
            "--keep-user names no account of the guest's /etc/passwd: {}",
            missing.join(", ")
        )))
    }
}

/// Installed package names, from the facts' dpkg records (state installed) or rpm
/// records.
fn package_names(facts: &serde_json::Value) -> Vec<String> {
    let list = |k: &str| {
        facts
            .get("packages")
            .and_then(|p| p.get(k))
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let installed = |p: &serde_json::Value| {
        p.get("status")
            .and_then(|s| s.get("state"))
            .and_then(|s| s.as_str())
            .is_none_or(|s| matches!(s, "installed" | "triggers-pending" | "triggers-awaited"))
    };
    list("dpkg")
        .iter()
        .filter(|p| installed(p))
        .chain(list("rpm").iter())
        .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect()
}

/// BLAKE3 of a whole file: read in 16 MiB pieces (a memory map would make the
/// whole input resident in this process), each hashed on all threads.
pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
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

/// Writes the manifest under a temporary name; it becomes `path` when `group`
/// commits.
pub fn stage_manifest(entries: &[ManifestEntry], path: &Path, group: &OutputGroup) -> Result<()> {
    group.write_file(path, |w| render_manifest(entries, w))
}
