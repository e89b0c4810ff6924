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
        }
    }
}

/// Reads one volume's filesystem into a tree. The only call into filesystem
/// readers: `Ok(None)` for volumes that hold no filesystem imgsan reads.
pub fn read_filesystem(v: &ImageVolume) -> crate::Result<Option<(Tree, FsState)>> {
    if !v.is_ext() {
        return Ok(None);
    }
    Err(Error::unsupported(
        "reading ext2/3/4 filesystems (this build has no ext4 reader yet)",
    ))
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
                Ok(Some((tree, state))) => {
                    lv.tree = Some(tree);
                    lv.state = Some(state);
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
