//! From rule paths to directory entries: literal paths and globs are resolved
//! through the guest namespace (mounts honoured, symlinks in the leading
//! components followed but never out of the guest) into [`Target`]s that name a
//! directory entry by volume, parent directory node and entry name.
//!
//! No symlink is followed, in any component: a rule that names a symlink acts on
//! the link, not on what it points to, and a path whose leading components pass
//! through a symlink (a guest whose /var/log links to /etc/keepdir) names no
//! target at all, so a rule never changes a file outside its own path.
//! [`symlink_on`] finds the link, for the warning. Mount points are crossed:
//! they are not links. Nothing here edits a tree; targets own their data so the
//! namespace (which borrows the trees) can be dropped before the edits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Result;
use crate::guest::{Guest, MountResolution, Namespace, Pos};
use crate::rules::PathGlob;
use crate::tree::{Kind, NodeId, Tree};

/// How the guest's volumes fit together, kept apart from the [`Namespace`] so the
/// trees can be edited and a fresh namespace built over the edited trees.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The volume holding `/`.
    pub root: usize,
    /// Mount points (normalised absolute paths) and the volume mounted there,
    /// sorted by path.
    pub mounts: Vec<(Vec<u8>, usize)>,
    /// How each fstab entry resolved against the image (for the fstab transform).
    pub fstab: Vec<MountResolution>,
    /// Volumes with a tree that the guest never mounts and the operator keeps
    /// (`--keep-unmounted`): the "anywhere" rules run on each, as its own root.
    pub unmounted: Vec<usize>,
    /// Names of the volumes for reports ("partition 4"); "volume N" when unset.
    pub volume_names: Vec<String>,
}

impl Layout {
    /// The layout of an assembled guest.
    pub fn of(guest: &Guest<'_>) -> Layout {
        Layout {
            root: guest.root,
            mounts: guest.ns.mounts(),
            fstab: guest.mounts.clone(),
            unmounted: Vec::new(),
            volume_names: Vec::new(),
        }
    }

    /// A volume's name for reports.
    pub fn volume_name(&self, vol: usize) -> String {
        self.volume_names
            .get(vol)
            .cloned()
            .unwrap_or_else(|| format!("volume {vol}"))
    }

    /// A path inside volume `vol`'s tree as the guest sees it: below its mount
    /// point, or prefixed with the volume's name when the guest does not mount
    /// it.
    pub fn guest_path(&self, vol: usize, path: &[u8]) -> String {
        if vol == self.root {
            return show(path);
        }
        match self.mounts.iter().find(|(_, v)| *v == vol) {
            Some((mp, _)) if path == b"/" => show(mp),
            Some((mp, _)) => format!("{}{}", show(mp), show(path)),
            None => format!("{}:{}", self.volume_name(vol), show(path)),
        }
    }

    /// Volumes that have a tree but are neither the root nor mounted by the
    /// guest's fstab. None when the guest has no fstab (nothing then says what it
    /// mounts); a volume holding a boot loader or kernels is not one (the
    /// firmware reads it).
    pub fn unmounted_volumes(&self, trees: &[Option<Tree>]) -> Vec<usize> {
        if self.fstab.is_empty() {
            return Vec::new();
        }
        (0..trees.len())
            .filter(|&i| {
                trees[i]
                    .as_ref()
                    .is_some_and(|t| !crate::guest::assemble::holds_boot_files(t))
                    && i != self.root
                    && !self.mounts.iter().any(|(_, v)| *v == i)
            })
            .collect()
    }

    /// This layout without the mount at `path` and those below it: the guest as
    /// it looks with that volume unmounted, so that the directory it covers is
    /// seen.
    pub fn uncovering(&self, path: &[u8]) -> Layout {
        Layout {
            root: self.root,
            mounts: self
                .mounts
                .iter()
                .filter(|(p, _)| p.as_slice() != path && !is_below(p, path))
                .cloned()
                .collect(),
            fstab: self.fstab.clone(),
            unmounted: Vec::new(),
            volume_names: self.volume_names.clone(),
        }
    }

    /// Volume `vol` alone, as its own root.
    pub fn alone(vol: usize) -> Layout {
        Layout {
            root: vol,
            ..Layout::default()
        }
    }

    /// A namespace over `trees` with this layout's mounts.
    pub fn namespace<'a>(&self, trees: &'a [Option<Tree>]) -> Result<Namespace<'a>> {
        let mut ns = Namespace::new(trees.iter().map(Option::as_ref).collect(), self.root)?;
        for (path, vol) in &self.mounts {
            ns.mount(path, *vol)?;
        }
        Ok(ns)
    }

    /// The volume mounted exactly at `path` (a canonical guest path).
    pub fn mounted_at(&self, path: &[u8]) -> Option<usize> {
        self.mounts
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, v)| *v)
    }

    /// Mount points strictly below `dir` (a canonical guest path).
    pub fn mounts_below(&self, dir: &[u8]) -> Vec<(Vec<u8>, usize)> {
        self.mounts
            .iter()
            .filter(|(p, _)| is_below(p, dir))
            .cloned()
            .collect()
    }
}

/// Whether `path` lies strictly below `dir` (both canonical, absolute).
pub fn is_below(path: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return path.len() > 1 && path.first() == Some(&b'/');
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// `dir` + "/" + `name`, for guest paths.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A guest path for messages and reports (lossy UTF-8).
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// One directory entry a rule acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The guest path as the rule reached it (its leading components as written,
    /// so reports show the rule's own spelling).
    pub path: Vec<u8>,
    /// The canonical guest path (symlinks in leading components resolved).
    pub canonical: Vec<u8>,
    pub vol: usize,
    /// The directory node holding the entry.
    pub parent: NodeId,
    pub name: Vec<u8>,
    /// The node the entry names.
    pub node: NodeId,
    /// When the entry is a mount point: the volume the guest sees there.
    pub mounted: Option<usize>,
}

impl Target {
    /// The entry's identity: the same entry reached by two spellings is one.
    pub fn key(&self) -> (usize, NodeId, Vec<u8>) {
        (self.vol, self.parent, self.name.clone())
    }

    /// What the guest sees at the path: the mounted volume's root for a mount
    /// point, else the entry's node.
    pub fn seen(&self, trees: &[Option<Tree>]) -> Pos {
        match self
            .mounted
            .and_then(|v| trees.get(v)?.as_ref().map(|t| (v, t.root)))
        {
            Some((vol, node)) => Pos { vol, node },
            None => Pos {
                vol: self.vol,
                node: self.node,
            },
        }
    }
}

fn split_parent(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let i = trimmed.iter().rposition(|&b| b == b'/')?;
    let name = &trimmed[i + 1..];
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    let parent = if i == 0 { &trimmed[..1] } else { &trimmed[..i] };
    Some((parent, name))
}

/// The first symlink among the components of `dir` (the last included), as the
/// link's path and its target. `None` when there is none or `dir` does not
/// resolve.
pub fn symlink_on(ns: &Namespace<'_>, dir: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut at = Vec::new();
    for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        at.push(b'/');
        at.extend_from_slice(c);
        let pos = ns.resolve(&at, false).ok()?;
        if let Kind::Symlink(to) = &ns.node(pos).kind {
            return Some((at, to.to_vec()));
        }
    }
    None
}

/// The directory above `path` ("/" for "/x"), for [`symlink_on`].
pub fn parent_of(path: &[u8]) -> Option<&[u8]> {
    split_parent(path).map(|(p, _)| p)
}

/// The entry at `path`, following no symlink. `None` when a leading component
/// is missing, is not a directory, is a symlink, or loops; or when `path` is the
/// root.
pub fn lookup(ns: &Namespace<'_>, layout: &Layout, path: &[u8]) -> Option<Target> {
    let (parent, name) = split_parent(path)?;
    let (pos, canon) = ns.resolve_with_path(parent, true).ok()?;
    if canon != crate::guest::namespace::normalise(parent) {
        return None;
    }
    let tree = ns.tree(pos.vol);
    if !tree.node(pos.node).is_dir() {
        return None;
    }
    let node = tree.lookup(pos.node, name)?;
    let canonical = join(&canon, name);
    let mounted = match &tree.node(node).kind {
        Kind::Dir(_) => layout.mounted_at(&canonical),
        _ => None,
    };
    Some(Target {
        path: path.to_vec(),
        canonical,
        vol: pos.vol,
        parent: pos.node,
        name: name.to_vec(),
        node,
        mounted,
    })
}

/// The leading components of a glob that hold no glob syntax, and whether the
/// rest is bounded in depth (no `**`) and by how many components.
pub(crate) fn literal_prefix(glob: &str) -> (String, Option<usize>) {
    let meta = |c: &str| c.contains(['*', '?', '[', '{', '\\']);
    let comps: Vec<&str> = glob.split('/').filter(|c| !c.is_empty()).collect();
    let n = comps.iter().position(|c| meta(c)).unwrap_or(comps.len());
    let prefix = format!("/{}", comps[..n].join("/"));
    let rest = &comps[n..];
    let depth = if rest.iter().any(|c| c.contains("**")) {
        None
    } else {
        Some(rest.len())
    };
    (prefix, depth)
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Every entry matching any of `globs`, sorted by path, each entry once. A
/// matching directory is one target (its contents go with it); the walk does
/// not descend into it. Symlinks below a glob's literal prefix are not followed;
/// mount points are crossed.
pub fn expand(ns: &Namespace<'_>, layout: &Layout, globs: &[&PathGlob]) -> Vec<Target> {
    let mut out = Vec::new();
    // Literal paths are looked up; globs are grouped by literal prefix so that
    // the shell-history rule's fourteen `/**/...` patterns cost one walk.
    let mut walks: BTreeMap<String, (Vec<globset::Glob>, Option<usize>)> = BTreeMap::new();
    for g in globs {
        if g.is_literal() {
            out.extend(lookup(ns, layout, g.as_str().as_bytes()));
            continue;
        }
        let (prefix, depth) = literal_prefix(g.as_str());
        let w = walks.entry(prefix).or_insert((Vec::new(), Some(0)));
        w.0.push(g.glob().clone());
        w.1 = match (w.1, depth) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    for (prefix, (globs, depth)) in walks {
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            b.add(g);
        }
        let Ok(set) = b.build() else { continue };
        walk_matches(ns, layout, prefix.as_bytes(), depth, &set, &mut out);
    }
    sort_dedup(&mut out);
    out
}

/// Sorts targets by path and keeps the first of entries reached twice.
pub fn sort_dedup(v: &mut Vec<Target>) {
    v.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = HashSet::new();
    v.retain(|t| seen.insert(t.key()));
}

fn walk_matches(
    ns: &Namespace<'_>,
    layout: &Layout,
    prefix: &[u8],
    max_depth: Option<usize>,
    set: &globset::GlobSet,
    out: &mut Vec<Target>,
) {
    let Ok((start, canon)) = ns.resolve_with_path(prefix, true) else {
        return;
    };
    if canon != crate::guest::namespace::normalise(prefix) {
        // The prefix passes through a symlink: not walked.
        return;
    }
    // (path as written, canonical path, directory, depth of its children)
    let mut stack = vec![(prefix.to_vec(), canon, start, 1usize)];
    let mut seen: HashSet<Pos> = HashSet::new();
    let mounts: HashMap<&[u8], usize> = layout
        .mounts
        .iter()
        .map(|(p, v)| (p.as_slice(), *v))
        .collect();
    while let Some((path, canon, dir, depth)) = stack.pop() {
        if !seen.insert(dir) {
            continue;
        }
        let tree = ns.tree(dir.vol);
        let mut subdirs = Vec::new();
        for e in tree.entries(dir.node) {
            let name = tree.name(e.name);
            let child_path = join(&path, name);
            let child_canon = join(&canon, name);
            let is_dir = tree.node(e.node).is_dir();
            let mounted = if is_dir {
                mounts.get(child_canon.as_slice()).copied()
            } else {
                None
            };
            if set.is_match(as_path(&child_path)) {
                out.push(Target {
                    path: child_path,
                    canonical: child_canon,
                    vol: dir.vol,
                    parent: dir.node,
                    name: name.to_vec(),
                    node: e.node,
                    mounted,
                });
                continue;
            }
            if is_dir && max_depth.is_none_or(|m| depth < m) {
                let pos = match mounted {
                    Some(v) => Pos {
                        vol: v,
                        node: ns.tree(v).root,
                    },
                    None => Pos {
                        vol: dir.vol,
                        node: e.node,
                    },
                };
                subdirs.push((child_path, child_canon, pos, depth + 1));
            }
        }
        // Reverse so that popping visits names in order (for stable notes).
        stack.extend(subdirs.into_iter().rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_depths() {
        assert_eq!(literal_prefix("/**/.bash_history"), ("/".into(), None));
        assert_eq!(
            literal_prefix("/var/lib/dhcp/*.leases"),
            ("/var/lib/dhcp".into(), Some(1))
        );
        assert_eq!(
            literal_prefix("/etc/ssh/ssh_host_*key*"),
            ("/etc/ssh".into(), Some(1))
        );
        assert_eq!(literal_prefix("/a/*/b/c"), ("/a".into(), Some(3)));
        assert_eq!(literal_prefix("/opt/x/**"), ("/opt/x".into(), None));
    }

    #[test]
    fn parents_and_below() {
        assert_eq!(
            split_parent(b"/etc/hosts"),
            Some((&b"/etc"[..], &b"hosts"[..]))
        );
        assert_eq!(split_parent(b"/x"), Some((&b"/"[..], &b"x"[..])));
        assert_eq!(split_parent(b"/"), None);
        assert_eq!(split_parent(b"/a/.."), None);
        assert!(is_below(b"/home/a", b"/home"));
        assert!(!is_below(b"/homer", b"/home"));
        assert!(!is_below(b"/home", b"/home"));
        assert!(is_below(b"/home", b"/"));
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x"), b"/a/x");
    }
}
