//! Filesystems: reading a volume into a format-free [`Tree`] and building a fresh
//! volume from one. Nothing above this module names a filesystem's own types: the
//! check, sanitize, repack, browse and inspect layers see only what is here.
//!
//! - [`open`] reads a volume by its probed type and gives the [`Tree`] and an
//!   [`Info`]: the facts `inspect` shows ([`Facts`]), what journal or log replay
//!   did ([`Replay`]), and the opaque [`Geometry`] a rebuild needs.
//! - [`build`] turns a tree and a geometry into a layout [`Plan`] for a volume of
//!   the asked [`TargetSize`], with [`BuildStats`] for the report.
//!
//! Adding a filesystem touches this folder only: a module of its own with a
//! `volume.rs` that implements open and build for it, a variant in [`FsKind`] and
//! in the private geometry enum, and an arm in each function below. The layers
//! above match on nothing filesystem-specific, so they need no change.
//!
//! The tree stays format-free. What a filesystem needs that the others have no word
//! for (ext4 inode flags, XFS flags2 or extent size hints) travels in the tree's
//! per-filesystem raw fields, used only by a same-type rebuild.

pub mod codec;
pub mod ext4;

use std::sync::Arc;

use crate::disk::probe::FsType;
use crate::disk::Disk;
use crate::error::Result;
use crate::output::plan::Plan;
use crate::tree::Tree;

/// The filesystems imgsan reads and rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2, ext3 and ext4: one reader and one builder.
    Ext4,
    Xfs,
}

impl FsKind {
    /// The filesystem module for a probed type, if imgsan has one.
    pub fn of(fs: FsType) -> Option<FsKind> {
        match fs {
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => Some(FsKind::Ext4),
            FsType::Xfs => Some(FsKind::Xfs),
            _ => None,
        }
    }
}

/// How to read a volume.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Verify metadata checksums. On by default; off is for salvaging.
    pub verify_checksums: bool,
    /// Replay a journal or log that needs recovery into an in-memory overlay (the
    /// default). Off: read the volume as it lies, possibly stale, with a warning.
    pub replay: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksums: true,
            replay: true,
        }
    }
}

/// What a filesystem says about itself, for `inspect` and the reports.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub label: String,
    pub uuid: String,
    /// The superblock's own state: "clean", "not clean", "errors", ...
    pub state: String,
    /// The journal or log: "none", "internal", "external".
    pub journal: String,
    /// Things the user should know that did not stop the read.
    pub warnings: Vec<String>,
    /// `inspect`'s text lines for this filesystem (without the heading line).
    pub text: Vec<String>,
    /// `inspect --json`'s fields for this filesystem.
    pub json: serde_json::Map<String, serde_json::Value>,
}

/// What journal or log replay did.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The filesystem asked for recovery.
    pub needed: bool,
    /// Replay ran (it runs when needed, unless turned off).
    pub replayed: bool,
    /// Transactions replayed.
    pub transactions: u64,
    /// Blocks written into the overlay.
    pub blocks: u64,
    /// Torn transactions, skipped areas, and similar.
    pub notes: Vec<String>,
}

/// What a rebuild of the same filesystem type needs from its source: block and
/// inode sizes, features, UUIDs and seeds, journal or log geometry. Opaque above
/// this module.
#[derive(Debug, Clone)]
pub struct Geometry(GeometryOf);

#[derive(Debug, Clone)]
enum GeometryOf {
    Ext4(Box<ext4::volume::Ext4Geometry>),
}

impl Geometry {
    pub fn kind(&self) -> FsKind {
        match &self.0 {
            GeometryOf::Ext4(_) => FsKind::Ext4,
        }
    }

    /// Why this volume cannot be rebuilt faithfully, when it cannot (a feature the
    /// builder does not reproduce). `None`: [`build`] can rebuild it.
    pub fn rebuild_refusal(&self) -> Option<String> {
        match &self.0 {
            GeometryOf::Ext4(_) => None,
        }
    }
}

/// An opened volume's description.
#[derive(Debug, Clone)]
pub struct Info {
    pub kind: FsKind,
    pub facts: Facts,
    pub replay: Replay,
    pub geometry: Geometry,
}

/// Reads a volume of probed type `fs` into a tree. `Ok(None)` when imgsan has no
/// reader for that type.
pub fn open(disk: Arc<dyn Disk>, fs: FsType, opts: &OpenOptions) -> Result<Option<(Tree, Info)>> {
    match FsKind::of(fs) {
        Some(FsKind::Ext4) => {
            let (tree, facts, replay, geometry) = ext4::volume::open(disk, opts)?;
            Ok(Some((
                tree,
                Info {
                    kind: FsKind::Ext4,
                    facts,
                    replay,
                    geometry: Geometry(GeometryOf::Ext4(Box::new(geometry))),
                },
            )))
        }
        Some(FsKind::Xfs) | None => Ok(None),
    }
}

/// How big a rebuilt volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSize {
    /// The source's size.
    #[default]
    Source,
    /// This many bytes (rounded down to whole blocks). The plan covers exactly this
    /// length.
    Bytes(u64),
    /// The smallest size that holds the tree, plus `margin` bytes (default: the
    /// larger of 10 % and 256 MiB), rounded up as the filesystem needs.
    Shrink { margin: Option<u64> },
}

/// Figures about a build, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BuildStats {
    /// The plan's length in bytes.
    pub volume_bytes: u64,
    /// Bytes copied from the source (file data).
    pub data_bytes: u64,
    /// Bytes of metadata the builder produced.
    pub metadata_bytes: u64,
    /// The smallest volume that holds this tree with this geometry (no margin).
    pub min_bytes: u64,
    /// Source values the builder could not write as they were (a flag fsck
    /// rejects, a field below its minimum), each with what was written instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub normalised: Vec<String>,
    /// The filesystem's own figures (groups, inodes, directories by format, ...).
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// A built volume.
#[derive(Debug, Clone)]
pub struct Built {
    /// The writes that make up the volume (offsets relative to its start).
    pub plan: Plan,
    pub stats: BuildStats,
}

/// Builds a fresh volume of the geometry's type holding `tree`, or refuses with
/// [`Geometry::rebuild_refusal`]'s reason before anything is planned.
pub fn build(tree: &Tree, geometry: &Geometry, size: TargetSize) -> Result<Built> {
    if let Some(why) = geometry.rebuild_refusal() {
        return Err(crate::error::Error::unsupported(why));
    }
    match &geometry.0 {
        GeometryOf::Ext4(g) => ext4::volume::build(tree, g, size),
    }
}
