//! The filesystem-independent model of one volume's contents: every inode that is
//! reachable from the root, with its metadata, and its bytes as *references* to
//! ranges of the source volume (or small owned blobs). Readers (ext4, XFS) produce
//! a `Tree`; rules edit it; builders consume it.
//!
//! It knows nothing of on-disk formats. Two invariants every producer keeps, and
//! [`Tree::finish`] establishes:
//! - directory entries are sorted by name bytes, names are unique in a directory,
//!   and no entry is named "." or "..";
//! - directories have exactly one entry naming them (no directory hard links), and
//!   the root has none.
//!
//! Memory stays proportional to metadata: names live in one arena, xattr names and
//! values are interned (SELinux labels repeat thousands of times), and file data is
//! never loaded.
//!
//! Shared extents (XFS reflink, ext4 has none): a block range that several files
//! share appears once in each sharing file's runs, as an ordinary `Src::Volume`
//! run. The tree does not mark sharing; a builder that wants to keep it finds
//! runs of different nodes naming the same volume range, and one that does not
//! simply writes each file's bytes (the content is the same either way).

use std::collections::HashMap;
use std::sync::Arc;

use crate::disk::Disk;
use crate::error::{Error, Location, Result};

/// Index of a node in [`Tree::nodes`].
pub type NodeId = u32;

/// A timestamp: seconds since the epoch (may be negative) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// Device numbers of a character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

/// Where a run of file bytes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// A byte offset in the tree's source volume ([`Tree::source`]).
    Volume(u64),
    /// A byte offset into one of the tree's owned blobs ([`Tree::blobs`]): inline
    /// data, blocks replayed from a journal, replacement content from a rule.
    Blob { blob: u32, offset: u64 },
}

/// `len` bytes of a file at logical offset `logical`, read from `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub len: u64,
    pub src: Src,
}

/// A directory entry. The name lives in the tree's name arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub name: NameRef,
    pub node: NodeId,
}

/// A name in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRef {
    off: u32,
    len: u16,
}

/// An extended attribute: interned full name (with its namespace prefix, as the
/// xattr system calls show it: "user.x", "security.selinux",
/// "system.posix_acl_access") and interned value. POSIX ACLs are kept in the VFS
/// xattr format, not in any filesystem's on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Xattr {
    pub name: u32,
    pub value: u32,
}

/// What a node is, with its type-specific content.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Regular file: its data runs, sorted by logical offset, not overlapping.
    /// Gaps (and the tail past the last run up to `size`) are holes.
    File(Vec<Run>),
    /// Directory entries (sorted, see the module invariants).
    Dir(Vec<Entry>),
    Symlink(Box<[u8]>),
    CharDev(Dev),
    BlockDev(Dev),
    Fifo,
    Socket,
}

impl Kind {
    /// The S_IFMT bits of this kind.
    pub fn mode_type(&self) -> u32 {
        match self {
            Kind::File(_) => 0o100000,
            Kind::Dir(_) => 0o040000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev(_) => 0o020000,
            Kind::BlockDev(_) => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Dir(_) => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev(_) => "char device",
            Kind::BlockDev(_) => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One inode.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (mask 0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// Creation time, when the source format records one.
    pub crtime: Option<Time>,
    /// Size in bytes. For regular files and symlinks this is the content length;
    /// for directories it is what the source filesystem said and is not part of
    /// the fidelity contract (builders lay directories out their own way).
    pub size: u64,
    /// The source filesystem's inode flags, raw. Their meaning depends on
    /// [`Tree::flavor`]; builders of the same type reproduce the non-structural
    /// ones (see each builder for which bits are structural).
    pub flags: u32,
    pub generation: u32,
    pub projid: u32,
    /// Further per-inode fields that only some formats have, raw, for same-type
    /// rebuilds (meaning given by [`Tree::flavor`], like `flags`).
    pub fs_raw: FsRaw,
    /// Sorted by (name bytes, value bytes) after [`Tree::finish`].
    pub xattrs: Vec<Xattr>,
    /// The inode number in the source, for messages and reports. Not part of the
    /// fidelity contract; 0 for nodes created by edits.
    pub source_ino: u64,
}

impl Node {
    /// A node with all metadata zero and the given kind.
    pub fn new(kind: Kind) -> Self {
        Node {
            kind,
            perm: 0,
            uid: 0,
            gid: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            crtime: None,
            size: 0,
            flags: 0,
            generation: 0,
            projid: 0,
            fs_raw: FsRaw::default(),
            xattrs: Vec::new(),
            source_ino: 0,
        }
    }

    /// The full st_mode: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_type() | u32::from(self.perm & 0o7777)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

/// Inode fields beyond [`Node::flags`] that a same-type builder reproduces and
/// that have no format-free meaning. Zero for formats (and nodes) without them.
///
/// For XFS (`Flavor::Xfs`): `flags2` is `di_flags2` (DAX, REFLINK, COWEXTSIZE,
/// BIGTIME, NREXT64; the last three describe the on-disk encoding and a builder
/// decides them itself), `extsize` and `cowextsize` are `di_extsize` and
/// `di_cowextsize` in filesystem blocks, and `forkoff` is `di_forkoff` (the
/// attribute fork's offset in 8-byte units, 0 without an attribute fork): a hint
/// only, since the builder's own attribute layout decides where the fork starts.
/// The XFS `di_flags` are in [`Node::flags`], the project id in [`Node::projid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsRaw {
    pub flags2: u64,
    pub extsize: u32,
    pub cowextsize: u32,
    pub forkoff: u8,
}

/// Which filesystem a tree was read from; gives meaning to [`Node::flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Flavor {
    Ext4,
    Xfs,
    /// Built by hand (tests, synthetic trees).
    Synthetic,
}

/// Interns byte strings: equal strings get the same id.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<Arc<[u8]>, u32>,
    values: Vec<Arc<[u8]>>,
}

impl Interner {
    pub fn intern(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(bytes) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("more than 4G distinct xattr strings");
        let a: Arc<[u8]> = Arc::from(bytes);
        self.values.push(a.clone());
        self.ids.insert(a, id);
        id
    }

    pub fn get(&self, id: u32) -> &[u8] {
        &self.values[id as usize]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The tree of one volume.
pub struct Tree {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    pub flavor: Flavor,
    /// The volume that `Src::Volume` offsets refer to.
    pub source: Option<Arc<dyn Disk>>,
    /// Owned byte blobs that `Src::Blob` runs refer to.
    pub blobs: Vec<Arc<[u8]>>,
    /// Interned xattr names and values.
    pub strings: Interner,
    names: Vec<u8>,
}

/// The largest name a directory entry may have (ext4 and XFS both allow 255).
pub const MAX_NAME: usize = 255;

/// How many symlinks a path resolution may follow (Linux's MAXSYMLINKS is 40).
pub const MAX_SYMLINKS: usize = 40;

impl Tree {
    /// An empty tree whose root is a directory with mode 0755.
    pub fn new(flavor: Flavor, source: Option<Arc<dyn Disk>>) -> Self {
        let mut root = Node::new(Kind::Dir(Vec::new()));
        root.perm = 0o755;
        Tree {
            nodes: vec![root],
            root: 0,
            flavor,
            source,
            blobs: Vec::new(),
            strings: Interner::default(),
            names: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Add a node (not yet linked anywhere) and return its id.
    pub fn add_node(&mut self, node: Node) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).expect("more than 4G nodes");
        self.nodes.push(node);
        id
    }

    /// Store a name in the arena. Fails on names that no filesystem allows.
    pub fn add_name(&mut self, name: &[u8]) -> Result<NameRef> {
        if name.is_empty() || name.len() > MAX_NAME || name.contains(&b'/') || name.contains(&0) {
            return Err(Error::corrupt(
                "directory entry",
                Location::Whole,
                format!("invalid name {:?}", String::from_utf8_lossy(name)),
            ));
        }
        let off = u32::try_from(self.names.len())
            .map_err(|_| Error::unsupported("more than 4 GiB of file names in one volume"))?;
        self.names.extend_from_slice(name);
        Ok(NameRef {
            off,
            len: name.len() as u16,
        })
    }

    pub fn name(&self, r: NameRef) -> &[u8] {
        &self.names[r.off as usize..r.off as usize + r.len as usize]
    }

    /// Add an owned blob and return its index.
    pub fn add_blob(&mut self, bytes: Arc<[u8]>) -> u32 {
        let id = u32::try_from(self.blobs.len()).expect("more than 4G blobs");
        self.blobs.push(bytes);
        id
    }

    /// Intern an xattr name/value pair.
    pub fn xattr(&mut self, name: &[u8], value: &[u8]) -> Xattr {
        Xattr {
            name: self.strings.intern(name),
            value: self.strings.intern(value),
        }
    }

    pub fn xattr_name(&self, x: &Xattr) -> &[u8] {
        self.strings.get(x.name)
    }

    pub fn xattr_value(&self, x: &Xattr) -> &[u8] {
        self.strings.get(x.value)
    }

    /// The entries of a directory node (empty for other kinds).
    pub fn entries(&self, dir: NodeId) -> &[Entry] {
        match &self.node(dir).kind {
            Kind::Dir(e) => e,
            _ => &[],
        }
    }

    /// Look a name up in a directory (binary search; needs sorted entries).
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let entries = self.entries(dir);
        entries
            .binary_search_by(|e| self.name(e.name).cmp(name))
            .ok()
            .map(|i| entries[i].node)
    }

    /// Link `node` into `dir` under `name`, replacing an existing entry of that
    /// name (the old node stays in `nodes`, unreferenced).
    pub fn link(&mut self, dir: NodeId, name: &[u8], node: NodeId) -> Result<()> {
        let name_ref = self.add_name(name)?;
        let names = &self.names;
        let get = |r: NameRef| &names[r.off as usize..r.off as usize + r.len as usize];
        let Kind::Dir(entries) = &mut self.nodes[dir as usize].kind else {
            return Err(Error::corrupt(
                "tree",
                Location::Whole,
                "link into a non-directory",
            ));
        };
        match entries.binary_search_by(|e| get(e.name).cmp(name)) {
            Ok(i) => entries[i].node = node,
            Err(i) => entries.insert(
                i,
                Entry {
                    name: name_ref,
                    node,
                },
            ),
        }
        Ok(())
    }

    /// Remove the entry `name` from `dir`, returning the node it named. The node
    /// and everything below it stay in `nodes` but become unreachable.
    pub fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let names = &self.names;
        let get = |r: NameRef| &names[r.off as usize..r.off as usize + r.len as usize];
        let Kind::Dir(entries) = &mut self.nodes[dir as usize].kind else {
            return None;
        };
        let i = entries.binary_search_by(|e| get(e.name).cmp(name)).ok()?;
        Some(entries.remove(i).node)
    }

    /// Sort every directory's entries and every node's xattrs, and check the
    /// invariants: unique names, no directory reachable twice, no cycles. Readers
    /// call this once after filling the tree.
    pub fn finish(&mut self) -> Result<()> {
        let names = std::mem::take(&mut self.names);
        let get = |r: NameRef| &names[r.off as usize..r.off as usize + r.len as usize];
        let strings = &self.strings;
        let mut dup = None;
        for n in self.nodes.iter_mut() {
            if let Kind::Dir(entries) = &mut n.kind {
                entries.sort_by(|a, b| get(a.name).cmp(get(b.name)));
                if dup.is_none() {
                    if let Some(w) = entries
                        .windows(2)
                        .find(|w| get(w[0].name) == get(w[1].name))
                    {
                        dup = Some((
                            n.source_ino,
                            String::from_utf8_lossy(get(w[0].name)).into_owned(),
                        ));
                    }
                }
            }
            n.xattrs.sort_by(|a, b| {
                (strings.get(a.name), strings.get(a.value))
                    .cmp(&(strings.get(b.name), strings.get(b.value)))
            });
        }
        self.names = names;
        if let Some((ino, name)) = dup {
            return Err(Error::corrupt(
                "directory",
                Location::Inode(ino),
                format!("name {name:?} appears twice"),
            ));
        }
        // Each directory must be named by exactly one entry, reached from the root.
        let mut seen = vec![false; self.nodes.len()];
        seen[self.root as usize] = true;
        let mut stack = vec![self.root];
        while let Some(d) = stack.pop() {
            for e in self.entries(d) {
                let child = self.node(e.node);
                if child.is_dir() {
                    if std::mem::replace(&mut seen[e.node as usize], true) {
                        return Err(Error::corrupt(
                            "directory",
                            Location::Inode(child.source_ino),
                            "directory is reachable by two paths (hard-linked directory or cycle)",
                        ));
                    }
                    stack.push(e.node);
                }
            }
        }
        Ok(())
    }

    /// Link counts of every node reachable from the root, as a filesystem would
    /// store them: files count their entries; directories count 2 plus their
    /// subdirectories. Unreachable nodes get 0.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        counts[self.root as usize] = 2;
        self.walk(|_, id, node| {
            if let Kind::Dir(entries) = &node.kind {
                for e in entries {
                    if self.node(e.node).is_dir() {
                        counts[e.node as usize] += 2;
                        counts[id as usize] += 1;
                    } else {
                        counts[e.node as usize] += 1;
                    }
                }
            }
        });
        counts
    }

    /// Visit every directory reachable from the root, breadth-first, children in
    /// name order: `f(depth, id, node)`. Each directory is visited once.
    pub fn walk(&self, mut f: impl FnMut(usize, NodeId, &Node)) {
        let mut queue = std::collections::VecDeque::new();
        queue.push_back((0usize, self.root));
        while let Some((depth, id)) = queue.pop_front() {
            let node = self.node(id);
            f(depth, id, node);
            for e in self.entries(id) {
                if self.node(e.node).is_dir() {
                    queue.push_back((depth + 1, e.node));
                }
            }
        }
    }

    /// Every reachable (path, node) pair, breadth-first, names sorted; the root is
    /// "/" and hard links appear once per path.
    pub fn paths(&self) -> Vec<(Vec<u8>, NodeId)> {
        let mut out = vec![(b"/".to_vec(), self.root)];
        let mut i = 0;
        while i < out.len() {
            let (ref p, id) = out[i];
            let p = p.clone();
            for e in self.entries(id) {
                let mut child = p.clone();
                if child.len() > 1 {
                    child.push(b'/');
                }
                child.extend_from_slice(self.name(e.name));
                out.push((child, e.node));
            }
            i += 1;
        }
        out
    }

    /// Resolve an absolute or relative (to the root) path inside this tree.
    /// Symlinks are followed (the last component only if `follow_last`); absolute
    /// targets restart at this tree's root, ".." at the root stays at the root, so
    /// resolution never leaves the tree. Loops are cut after [`MAX_SYMLINKS`].
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<NodeId> {
        let mut budget = MAX_SYMLINKS;
        self.resolve_from(self.root, Vec::new(), path, follow_last, &mut budget)
    }

    fn resolve_from(
        &self,
        start: NodeId,
        mut stack: Vec<NodeId>,
        path: &[u8],
        follow_last: bool,
        budget: &mut usize,
    ) -> Result<NodeId> {
        let not_found = |what: &str| Error::Io {
            what: format!("{}: {what}", String::from_utf8_lossy(path)),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let mut cur = if path.first() == Some(&b'/') {
            stack.clear();
            self.root
        } else {
            start
        };
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            if *comp == b".." {
                cur = stack.pop().unwrap_or(self.root);
                continue;
            }
            if !self.node(cur).is_dir() {
                return Err(not_found("not a directory"));
            }
            let next = self
                .lookup(cur, comp)
                .ok_or_else(|| not_found("no such file or directory"))?;
            if let Kind::Symlink(target) = &self.node(next).kind {
                if !last || follow_last {
                    if *budget == 0 {
                        return Err(Error::corrupt(
                            "path",
                            Location::Whole,
                            format!(
                                "too many levels of symbolic links resolving {}",
                                String::from_utf8_lossy(path)
                            ),
                        ));
                    }
                    *budget -= 1;
                    let target = target.clone();
                    let resolved = self.resolve_from(cur, stack.clone(), &target, true, budget)?;
                    // The path below the link continues from what it resolved to;
                    // rebuild the parent stack by resolving the same way.
                    stack = self.parents_of(resolved);
                    cur = resolved;
                    continue;
                }
            }
            stack.push(cur);
            cur = next;
        }
        Ok(cur)
    }

    /// The chain of directories from the root down to (not including) `target`,
    /// found by search. Used after a symlink jump so that ".." works.
    fn parents_of(&self, target: NodeId) -> Vec<NodeId> {
        if target == self.root {
            return Vec::new();
        }
        let parent = self.parent_map();
        let mut chain = Vec::new();
        let mut cur = target;
        while let Some(&p) = parent.get(&cur) {
            chain.push(p);
            if p == self.root {
                break;
            }
            cur = p;
        }
        chain.reverse();
        chain
    }

    /// Parent of every reachable directory (and of each non-directory, one of its
    /// parents).
    pub fn parent_map(&self) -> HashMap<NodeId, NodeId> {
        let mut parent = HashMap::new();
        self.walk(|_, id, node| {
            if let Kind::Dir(entries) = &node.kind {
                for e in entries {
                    parent.entry(e.node).or_insert(id);
                }
            }
        });
        parent
    }

    /// Read `buf.len()` bytes of a regular file at `offset`. Holes read as zeros;
    /// reading past the size is an error.
    pub fn read_file(&self, id: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let node = self.node(id);
        let Kind::File(runs) = &node.kind else {
            return Err(Error::corrupt(
                "tree",
                Location::Inode(node.source_ino),
                "read of a non-file",
            ));
        };
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= node.size)
            .ok_or_else(|| {
                Error::corrupt(
                    "file",
                    Location::Inode(node.source_ino),
                    "read past end of file",
                )
            })?;
        buf.fill(0);
        let first = runs.partition_point(|r| r.logical + r.len <= offset);
        for r in &runs[first..] {
            if r.logical >= end {
                break;
            }
            let s = r.logical.max(offset);
            let e = (r.logical + r.len).min(end);
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            let within = s - r.logical;
            match r.src {
                Src::Volume(at) => {
                    let src = self.source.as_ref().ok_or_else(|| {
                        Error::corrupt(
                            "tree",
                            Location::Inode(node.source_ino),
                            "volume run in a tree without a source",
                        )
                    })?;
                    src.read_at(at + within, dst)?;
                }
                Src::Blob { blob, offset: bo } => {
                    let b = self.blobs.get(blob as usize).ok_or_else(|| {
                        Error::corrupt(
                            "tree",
                            Location::Inode(node.source_ino),
                            "run names a missing blob",
                        )
                    })?;
                    let st = (bo + within) as usize;
                    let piece = b.get(st..st + dst.len()).ok_or_else(|| {
                        Error::corrupt(
                            "tree",
                            Location::Inode(node.source_ino),
                            "run passes the end of its blob",
                        )
                    })?;
                    dst.copy_from_slice(piece);
                }
            }
        }
        Ok(())
    }

    /// A whole file's bytes. Only for small files (configuration, databases the
    /// inspector reads): fails above `limit` bytes instead of allocating.
    pub fn read_all(&self, id: NodeId, limit: u64) -> Result<Vec<u8>> {
        let size = self.node(id).size;
        if size > limit {
            return Err(Error::unsupported(format!(
                "reading a {size}-byte file whole (limit {limit} bytes)"
            )));
        }
        let mut v = vec![0u8; size as usize];
        self.read_file(id, 0, &mut v)?;
        Ok(v)
    }

    /// Replace a regular file's content with owned bytes (a rule's template or
    /// transform output). Keeps all metadata but size.
    pub fn set_content(&mut self, id: NodeId, bytes: Vec<u8>) {
        let len = bytes.len() as u64;
        let runs = if bytes.is_empty() {
            Vec::new()
        } else {
            let blob = self.add_blob(Arc::from(bytes));
            vec![Run {
                logical: 0,
                len,
                src: Src::Blob { blob, offset: 0 },
            }]
        };
        let n = self.node_mut(id);
        n.kind = Kind::File(runs);
        n.size = len;
    }

    /// Total bytes of file data referenced by reachable regular files (holes not
    /// counted), each inode once.
    pub fn data_bytes(&self) -> u64 {
        let mut seen = vec![false; self.nodes.len()];
        let mut total = 0;
        self.walk(|_, _, node| {
            for e in node_entries(node) {
                if !std::mem::replace(&mut seen[e.node as usize], true) {
                    if let Kind::File(runs) = &self.node(e.node).kind {
                        total += runs.iter().map(|r| r.len).sum::<u64>();
                    }
                }
            }
        });
        total
    }
}

fn node_entries(n: &Node) -> &[Entry] {
    match &n.kind {
        Kind::Dir(e) => e,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::new(Flavor::Synthetic, None);
        let etc = t.add_node(Node::new(Kind::Dir(vec![])));
        t.link(t.root, b"etc", etc).unwrap();
        let f = t.add_node(Node::new(Kind::File(vec![])));
        t.link(etc, b"hosts", f).unwrap();
        t.set_content(f, b"127.0.0.1 localhost\n".to_vec());
        let l = t.add_node(Node::new(Kind::Symlink(Box::from(&b"/etc/hosts"[..]))));
        t.link(etc, b"abs", l).unwrap();
        let l2 = t.add_node(Node::new(Kind::Symlink(Box::from(&b"../../../etc"[..]))));
        t.link(etc, b"up", l2).unwrap();
        let lp = t.add_node(Node::new(Kind::Symlink(Box::from(&b"loop"[..]))));
        t.link(etc, b"loop", lp).unwrap();
        t.link(t.root, b"hardlink", f).unwrap();
        t.finish().unwrap();
        t
    }

    #[test]
    fn resolution_stays_inside_the_tree() {
        let t = sample();
        let hosts = t.resolve(b"/etc/hosts", true).unwrap();
        assert_eq!(t.resolve(b"/etc/abs", true).unwrap(), hosts);
        assert_eq!(t.resolve(b"etc/up/hosts", true).unwrap(), hosts);
        assert_eq!(t.resolve(b"/../../etc/./hosts", true).unwrap(), hosts);
        assert_ne!(t.resolve(b"/etc/abs", false).unwrap(), hosts);
        assert!(t.resolve(b"/etc/loop", true).is_err());
        assert!(t.resolve(b"/etc/hosts/x", true).is_err());
        assert_eq!(t.read_all(hosts, 1024).unwrap(), b"127.0.0.1 localhost\n");
        assert_eq!(t.link_counts()[hosts as usize], 2);
        assert_eq!(t.link_counts()[t.root as usize], 3);
    }

    #[test]
    fn unlink_and_duplicate_names() {
        let mut t = sample();
        let etc = t.resolve(b"/etc", true).unwrap();
        assert!(t.unlink(etc, b"hosts").is_some());
        assert!(t.resolve(b"/etc/hosts", true).is_err());
        assert!(t.add_name(b"a/b").is_err());
        assert!(t.add_name(&[b'x'; 256]).is_err());
    }
}
