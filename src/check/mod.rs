//! `imgsan check` and the facts half of `imgsan inspect`: from an opened image to
//! a policy report.
//!
//! The pipeline: [`Image`] (disk, partitions, probed volumes) -> every ext2/3/4
//! volume read into a [`Tree`] ([`read_filesystem`], the one place that calls a
//! filesystem reader) -> [`crate::guest::assemble`] (root, fstab mounts, one
//! namespace) -> [`facts::gather`] (facts through the namespace only) ->
//! [`evaluate`] (every policy check) -> [`Report`].
//!
//! This module wires the layers together; it owns no parsing (that is
//! `inspect`) and no policy (that is `policy`). Everything after
//! [`read_volumes`] is filesystem-independent: an XFS reader only has to add an
//! arm to [`read_filesystem`].

pub mod evaluate;
pub mod facts;
pub mod text;
mod walk;

use std::path::PathBuf;

use crate::disk::partition::types::TypeClass;
use crate::error::Error;
use crate::guest::VolumeId;
use crate::image::{Image, ImageVolume};
use crate::policy::{ImageInfo, Mode, Report};
use crate::rules::{parse_name_list, Date, Request, RuleSet, RulesError};
use crate::tree::Tree;

pub use evaluate::evaluate;
pub use facts::{gather, Facts, FsState};
pub use walk::WalkStats;

/// What `imgsan check` is asked, besides the image.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The image name (`--name`); overrides the request file's.
    pub name: Option<String>,
    /// The description (`--description`); overrides the request file's.
    pub description: Option<String>,
    /// The imaging request file (`--request`).
    pub request: Option<PathBuf>,
    /// More featured image names, one per line (`--featured-names`).
    pub featured_names: Option<PathBuf>,
    /// The user's existing image names, one per line (`--existing-names`).
    pub existing_names: Option<PathBuf>,
    /// The date for end-of-life checks (`--today`); the clock's when `None`.
    pub today: Option<Date>,
    /// An operator's rules directory (`--rules`).
    pub rules_dir: Option<PathBuf>,
}

/// The loaded, validated inputs of a check.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub rules: RuleSet,
    pub request: Option<Request>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub extra_featured: Vec<String>,
    pub existing: Vec<String>,
    pub today: Date,
}

fn read_list(path: &std::path::Path) -> Result<Vec<String>, RulesError> {
    std::fs::read_to_string(path)
        .map(|t| parse_name_list(&t))
        .map_err(|source| RulesError::Io {
            path: path.to_path_buf(),
            source,
        })
}

impl Inputs {
    /// Loads the rules, the request file and the name lists. Every failure is a
    /// rules or usage error (the CLI's exit code 2).
    pub fn load(o: &CheckOptions) -> Result<Inputs, RulesError> {
        let rules = RuleSet::load(o.rules_dir.as_deref(), &[])?;
        let request = match &o.request {
            Some(p) => Some(rules.load_request(p)?),
            None => None,
        };
        let from_request = |f: fn(&Request) -> Option<String>| request.as_ref().and_then(f);
        Ok(Inputs {
            name: o.name.clone().or_else(|| from_request(|r| r.name.clone())),
            description: o
                .description
                .clone()
                .or_else(|| from_request(|r| r.description.clone())),
            extra_featured: match &o.featured_names {
                Some(p) => read_list(p)?,
                None => Vec::new(),
            },
            existing: match &o.existing_names {
                Some(p) => read_list(p)?,
                None => Vec::new(),
            },
            today: o.today.unwrap_or_else(Date::today_utc),
            rules,
            request,
        })
    }
}

/// Why a check could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Rules, request or name-list files (exit code 2).
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The image could not be opened (exit code 3).
    #[error(transparent)]
    Image(#[from] Error),
    /// A filesystem that may hold the guest could not be read (exit code 3).
    #[error("{volume}: {source}")]
    Volume {
        volume: String,
        #[source]
        source: Error,
    },
}

/// One volume of the image after reading: identity, and its tree when it holds a
/// filesystem imgsan reads.
pub struct LoadedVolume {
    /// "partition 2", or "the whole disk".
    pub name: String,
    pub id: VolumeId,
    pub size: u64,
    pub partition_type: Option<String>,
    /// The partition type says EFI system partition.
    pub efi_partition: bool,
    /// A swap area holding a hibernation image.
    pub hibernated: bool,
    pub tree: Option<Tree>,
    pub state: Option<FsState>,
    /// Why the filesystem could not be read.
    pub error: Option<String>,
    /// The filesystem's facts, replay report and geometry (what a rebuild
    /// starts from); its tree is in `tree`.
    pub fs: Option<crate::fs::Info>,
}

impl LoadedVolume {
    /// A volume as the image layer describes it, not yet read.
    pub fn from_image(v: &ImageVolume) -> LoadedVolume {
        LoadedVolume {
            name: v.name(),
            id: v.id(),
            size: v.len,
            partition_type: v.partition.as_ref().map(|p| p.part_type.name.to_string()),
            efi_partition: v
                .partition
                .as_ref()
                .is_some_and(|p| p.part_type.class == TypeClass::Efi),
            hibernated: v.probed.hibernated(),
            tree: None,
            state: None,
            error: None,
            fs: None,
        }
    }
}

/// Reads one volume's filesystem into a tree, through the filesystem layer.
/// `Ok(None)` for volumes that hold no filesystem imgsan reads.
pub fn read_filesystem(v: &ImageVolume) -> crate::Result<Option<(Tree, FsState, crate::fs::Info)>> {
    let Some((tree, info)) = crate::fs::open(v.disk.clone(), v.probed.fs, &Default::default())?
    else {
        return Ok(None);
    };
    let mut notes = info.facts.warnings.clone();
    notes.extend(info.replay.notes.iter().cloned());
    let state = FsState {
        superblock_state: info.facts.state.clone(),
        journal: info.facts.journal.clone(),
        needs_recovery: info.replay.needed,
        replayed: info.replay.replayed,
        transactions_replayed: info.replay.transactions,
        blocks_replayed: info.replay.blocks,
        notes,
    };
    Ok(Some((tree, state, info)))
}

/// Reads every volume of the image. A volume whose filesystem cannot be read
/// keeps its error message; the errors themselves come back beside, with the
/// volume's name, for the caller to decide whether one is fatal.
pub fn read_volumes(image: &Image) -> (Vec<LoadedVolume>, Vec<(String, Error)>) {
    let mut errors = Vec::new();
    let volumes = image
        .volumes
        .iter()
        .map(|v| {
            let mut lv = LoadedVolume::from_image(v);
            match read_filesystem(v) {
                Ok(Some((tree, state, info))) => {
                    lv.tree = Some(tree);
                    lv.state = Some(state);
                    lv.fs = Some(info);
                }
                Ok(None) => {}
                Err(e) => {
                    lv.error = Some(e.to_string());
                    errors.push((v.name(), e));
                }
            }
            lv
        })
        .collect();
    (volumes, errors)
}

/// The report of a check over already read volumes.
pub fn report(volumes: &[LoadedVolume], inputs: &Inputs, mut image: ImageInfo) -> Report {
    let facts = gather(volumes, &inputs.rules);
    let (checks_run, findings) = evaluate(&facts, inputs);
    image.name = inputs.name.clone();
    image.description = inputs.description.clone();
    let facts_json = serde_json::to_value(&facts).unwrap_or(serde_json::Value::Null);
    let mut r = Report::new(
        Mode::Check,
        inputs.today,
        image,
        checks_run,
        findings,
        facts_json,
    );
    // A finding names the sanitize rule that would fix it; say so only when
    // that rule will run (enabled, and not excepted by the request).
    let sanitize = &inputs.rules.sanitize;
    let request = inputs.request.as_ref();
    r.resolve_fixers(|rule| {
        sanitize.enabled(rule) && request.is_none_or(|req| req.excepts(rule).is_none())
    });
    r
}

/// The findings of the checks over already read volumes, without a report around
/// them: what `sanitize` uses to check its sanitized trees again.
pub fn findings(volumes: &[LoadedVolume], inputs: &Inputs) -> Vec<crate::policy::Finding> {
    evaluate(&gather(volumes, &inputs.rules), inputs).1
}

/// What the report says about the image file itself.
pub fn image_info(image: &Image) -> ImageInfo {
    ImageInfo {
        path: Some(image.path.display().to_string()),
        format: Some(image.info.format.clone()),
        size_bytes: Some(image.info.virtual_size),
        blake3: None,
        name: None,
        description: None,
    }
}

/// `imgsan check`: read, gather, evaluate.
///
/// A filesystem that fails to read is fatal ([`CheckError::Volume`]) when no
/// guest root can be found without it: checking the rest would be meaningless.
/// Otherwise the failure is a warning in the facts.
pub fn check(image: &Image, inputs: &Inputs) -> Result<Report, CheckError> {
    let (volumes, mut errors) = read_volumes(image);
    if !errors.is_empty() {
        let trees: Vec<Option<&Tree>> = volumes.iter().map(|v| v.tree.as_ref()).collect();
        if crate::guest::assemble::find_root(&trees).is_none() {
            let (volume, source) = errors.remove(0);
            return Err(CheckError::Volume { volume, source });
        }
    }
    Ok(report(&volumes, inputs, image_info(image)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Flavor, Kind, Node};

    /// A tree of (path, content, mode) files; directories made on the way.
    fn tree_with(files: &[(&str, &[u8], u16)]) -> Tree {
        let mut t = Tree::new(Flavor::Synthetic, None);
        for (path, body, mode) in files {
            let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
            let mut cur = t.root;
            for (i, p) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    let mut n = Node::new(Kind::File(vec![]));
                    n.perm = *mode;
                    let f = t.add_node(n);
                    t.link(cur, p.as_bytes(), f).unwrap();
                    t.set_content(f, body.to_vec());
                } else {
                    cur = match t.lookup(cur, p.as_bytes()) {
                        Some(d) => d,
                        None => {
                            let mut n = Node::new(Kind::Dir(vec![]));
                            n.perm = 0o755;
                            let d = t.add_node(n);
                            t.link(cur, p.as_bytes(), d).unwrap();
                            d
                        }
                    };
                }
            }
        }
        t.finish().unwrap();
        t
    }

    fn volume(tree: Tree, uuid: &str) -> LoadedVolume {
        LoadedVolume {
            name: "partition 1".into(),
            id: VolumeId {
                partition: Some(1),
                fs_type: Some("ext4".into()),
                uuid: Some(uuid.into()),
                ..VolumeId::default()
            },
            size: 1 << 30,
            partition_type: Some("Linux filesystem".into()),
            efi_partition: false,
            hibernated: false,
            tree: Some(tree),
            state: Some(FsState {
                superblock_state: "clean".into(),
                journal: "internal".into(),
                ..FsState::default()
            }),
            error: None,
            fs: None,
        }
    }

    const FSTAB: &[u8] = b"UUID=aaaa / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n/lost.swap none swap sw 0 0\n/dev/disk/by-id/virtio-x /data ext4 defaults 0 2\n";
    const PASSWD: &[u8] =
        b"root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/bash\n";
    const LICENCE: &[u8] = b"SERVER lic.example.org 0050569A1B2C 27000\nVENDOR acmed\nUSE_SERVER\n";

    fn sample() -> Tree {
        tree_with(&[
            (
                "/etc/os-release",
                b"ID=ubuntu\nVERSION_ID=\"22.04\"\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n",
                0o644,
            ),
            ("/etc/fstab", FSTAB, 0o644),
            ("/etc/passwd", PASSWD, 0o644),
            ("/swapfile", &[0u8; 4096], 0o600),
            ("/home/alice/venv/pyvenv.cfg", b"home = /usr/bin\n", 0o644),
            ("/home/alice/venv/bin/tool", b"\x7fELF....", 0o755),
            ("/home/alice/notes.txt", b"hello", 0o644),
            ("/home/alice/\x1b[31mred", b"x", 0o644),
            ("/opt/acme/bin/acme", &[7u8; 1000], 0o755),
            ("/opt/acme/license.dat", LICENCE, 0o644),
            ("/usr/local/bin/.keep", b"", 0o644),
            ("/etc/mongod.conf", b"net:\n  bindIp: 0.0.0.0\n", 0o644),
            (
                "/etc/atmo/post-scripts.d/10-ok.sh",
                b"#!/bin/bash\necho ok\n",
                0o755,
            ),
        ])
    }

    #[test]
    fn facts_of_a_synthetic_guest() {
        let rules = RuleSet::embedded().unwrap();
        let f = gather(&[volume(sample(), "AAAA")], &rules);
        assert_eq!(f.root_volume, Some(0));
        assert_eq!(f.volumes[0].mount_point.as_deref(), Some("/"));
        let os = f.os.as_ref().unwrap();
        assert_eq!(
            (os.id.as_str(), os.version.as_ref().unwrap().text.as_str()),
            ("ubuntu", "22.04")
        );
        // The swap file exists, the other is missing, by-id cannot be resolved.
        let m: Vec<(bool, Option<bool>)> = f
            .mounts
            .iter()
            .map(|m| (m.resolved(), m.swap_file_present))
            .collect();
        assert_eq!(
            m,
            [
                (true, None),
                (true, Some(true)),
                (false, Some(false)),
                (true, None)
            ]
        );
        let home = f.homes.iter().find(|h| h.path == "/home/alice").unwrap();
        assert_eq!(home.owner.as_deref(), Some("alice"));
        assert_eq!((home.files, home.bytes), (4, 16 + 8 + 5 + 1));
        let sw: Vec<&str> = f.home_software.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(sw, ["/home/alice/venv"]);
        let out: Vec<(&str, u64, u64)> = f
            .outside_packages
            .iter()
            .map(|o| (o.path.as_str(), o.entry.size, o.entry.files))
            .collect();
        assert_eq!(
            out,
            [
                ("/opt/acme", 1000 + LICENCE.len() as u64, 2),
                ("/usr/local/bin", 0, 1)
            ]
        );
        assert_eq!(f.daemon_configs.len(), 1);
        assert_eq!(f.denylist.licence_files.len(), 1);
        assert_eq!(f.denylist.licence_files[0].vendors, ["acmed"]);
        assert_eq!(f.post_scripts.scripts.len(), 1);
        assert_eq!(f.walk.files, 13);
        assert!(f.cloud.sshd_binary.is_none() && f.cloud.python_binaries.is_empty());

        // The checks that follow from these facts.
        let inputs = Inputs {
            rules,
            request: None,
            name: Some("acme-box".into()),
            description: Some("An image for the acme workshop, with tools".into()),
            extra_featured: vec![],
            existing: vec![],
            today: Date::new(2024, 6, 1).unwrap(),
        };
        let (ran, findings) = evaluate(&f, &inputs);
        assert_eq!(ran.len(), crate::policy::ids::CHECKS.len());
        let mut ids: Vec<&str> = findings.iter().map(|f| f.check_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "access.python-missing",
                "access.sshd-missing",
                "network.open-daemon",
                "os.not-recommended",
                "software.in-home",
                "software.license-file",
                "volumes.detached",
            ]
        );
        let detached = findings
            .iter()
            .find(|f| f.check_id == "volumes.detached")
            .unwrap();
        assert!(detached.evidence[0].contains("/lost.swap"), "{detached:?}");

        // Guest names cannot drive the terminal.
        let text = text::render(&f);
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn no_guest_runs_only_the_image_wide_checks() {
        let rules = RuleSet::embedded().unwrap();
        let mut swap = volume(tree_with(&[("/x", b"", 0o644)]), "BBBB");
        swap.tree = None;
        swap.id.fs_type = Some("swsuspend".into());
        swap.hibernated = true;
        let f = gather(&[swap], &rules);
        assert!(f.root_volume.is_none());
        let inputs = Inputs {
            rules,
            request: None,
            name: None,
            description: None,
            extra_featured: vec![],
            existing: vec![],
            today: Date::new(2024, 6, 1).unwrap(),
        };
        let (ran, findings) = evaluate(&f, &inputs);
        assert!(!ran.iter().any(|r| r.starts_with("access.")));
        let ids: Vec<&str> = findings.iter().map(|f| f.check_id.as_str()).collect();
        assert!(
            ids.contains(&"os.unknown") && ids.contains(&"state.hibernated"),
            "{ids:?}"
        );
    }
}
