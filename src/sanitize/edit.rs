//! The edits rules make to volume trees: remove a directory entry (with what
//! it holds), empty a directory, truncate or replace a regular file's content,
//! create a file or directory. Each edit adds what it did to a [`Tally`].
//!
//! Accounting follows inodes, not names: every node carries the number of
//! directory entries naming it, so deleting one name of a hard-linked file
//! frees nothing, and a file's data counts as freed once, when its last name
//! goes. Edits keep a node's metadata (mode, owner, xattrs, times) unless they
//! replace the node itself.
//!
//! Nothing here resolves paths or knows about rules.

use crate::error::{Error, Location, Result};
use crate::tree::{Kind, Node, NodeId, Tree};

/// What edits did, in counts and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Non-directory nodes whose last name was removed.
    pub files_deleted: u64,
    pub dirs_deleted: u64,
    /// File data no longer referenced: of deleted files, and the old content of
    /// truncated and rewritten ones. Holes are not counted; each node once.
    pub bytes_freed: u64,
    pub files_truncated: u64,
    /// Regular files whose content a template or a transform replaced.
    pub files_overwritten: u64,
    pub files_created: u64,
    pub bytes_written: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.files_deleted += o.files_deleted;
        self.dirs_deleted += o.dirs_deleted;
        self.bytes_freed += o.bytes_freed;
        self.files_truncated += o.files_truncated;
        self.files_overwritten += o.files_overwritten;
        self.files_created += o.files_created;
        self.bytes_written += o.bytes_written;
    }
}

/// Bytes of file data a node references (regular files only; holes excluded).
pub fn data_bytes(node: &Node) -> u64 {
    match &node.kind {
        Kind::File(runs) => runs.iter().map(|r| r.len).sum(),
        _ => 0,
    }
}

/// Mutable access to the guest's trees, with per-node entry counts.
pub struct Editor<'t> {
    trees: &'t mut [Option<Tree>],
    /// For each volume, how many reachable directory entries name each node
    /// (the root counts 1). 0: unreachable.
    names: Vec<Vec<u32>>,
    /// Regular files that lost a name to an edit but kept another (a hard link
    /// from a kept directory into an emptied one): their data stays.
    pub lost_a_name: Vec<(usize, NodeId)>,
    /// Warnings for the report, gathered by the rules as they run.
    pub warnings: Vec<String>,
}

fn entry_counts(t: &Tree) -> Vec<u32> {
    let mut c = vec![0u32; t.nodes.len()];
    if let Some(r) = c.get_mut(t.root as usize) {
        *r = 1;
    }
    t.walk(|_, _, node| {
        if let Kind::Dir(entries) = &node.kind {
            for e in entries {
                if let Some(x) = c.get_mut(e.node as usize) {
                    *x = x.saturating_add(1);
                }
            }
        }
    });
    c
}

fn gone(what: &str) -> Error {
    Error::corrupt("tree", Location::Whole, format!("sanitize edit on {what}"))
}

impl<'t> Editor<'t> {
    pub fn new(trees: &'t mut [Option<Tree>]) -> Self {
        let names = trees
            .iter()
            .map(|t| t.as_ref().map(entry_counts).unwrap_or_default())
            .collect();
        Editor {
            trees,
            names,
            lost_a_name: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The trees, read-only (to build a namespace between edits).
    pub fn trees(&self) -> &[Option<Tree>] {
        self.trees
    }

    pub fn tree(&self, vol: usize) -> Result<&Tree> {
        self.trees
            .get(vol)
            .and_then(Option::as_ref)
            .ok_or_else(|| gone("a volume without a tree"))
    }

    fn tree_mut(&mut self, vol: usize) -> Result<&mut Tree> {
        self.trees
            .get_mut(vol)
            .and_then(Option::as_mut)
            .ok_or_else(|| gone("a volume without a tree"))
    }

    /// Whether the node is still reachable from its volume's root.
    pub fn alive(&self, vol: usize, node: NodeId) -> bool {
        self.names
            .get(vol)
            .and_then(|c| c.get(node as usize))
            .is_some_and(|&n| n > 0)
    }

    /// Whether `dir` still holds an entry `name` naming `node` and is itself
    /// reachable: a target found before earlier edits may have gone with them.
    pub fn still_there(&self, vol: usize, dir: NodeId, name: &[u8], node: NodeId) -> bool {
        self.alive(vol, dir)
            && self
                .tree(vol)
                .is_ok_and(|t| t.lookup(dir, name) == Some(node))
    }

    /// Removes the entry `name` from `dir`; what it named loses a name, and is
    /// freed (with everything below, for a directory) when that was its last.
    pub fn remove(
        &mut self,
        vol: usize,
        dir: NodeId,
        name: &[u8],
        tally: &mut Tally,
    ) -> Result<()> {
        let node = self
            .tree_mut(vol)?
            .unlink(dir, name)
            .ok_or_else(|| gone("a missing entry"))?;
        self.release(vol, node, tally)
    }

    /// Drops one name of `node`; frees it and its contents at zero. An explicit
    /// stack, not recursion: guest trees can be arbitrarily deep.
    fn release(&mut self, vol: usize, node: NodeId, tally: &mut Tally) -> Result<()> {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let counts = self
                .names
                .get_mut(vol)
                .ok_or_else(|| gone("an unknown volume"))?;
            let c = counts
                .get_mut(n as usize)
                .ok_or_else(|| gone("an unknown node"))?;
            if *c == 0 {
                continue;
            }
            *c -= 1;
            if *c > 0 {
                if matches!(self.tree(vol)?.node(n).kind, Kind::File(_)) {
                    self.lost_a_name.push((vol, n));
                }
                continue;
            }
            let t = self.tree(vol)?;
            let nd = t.node(n);
            match &nd.kind {
                Kind::Dir(entries) => {
                    tally.dirs_deleted += 1;
                    stack.extend(entries.iter().map(|e| e.node));
                }
                _ => {
                    tally.files_deleted += 1;
                    tally.bytes_freed += data_bytes(nd);
                }
            }
        }
        Ok(())
    }

    /// Removes every entry of directory `dir` except those `keep` selects by
    /// name, in one pass over the entries (a directory of a million temporary
    /// files must not cost a million shifts of its entry list). The directory
    /// keeps its metadata. Returns the removed names, in order.
    pub fn empty_dir(
        &mut self,
        vol: usize,
        dir: NodeId,
        mut keep: impl FnMut(&[u8]) -> bool,
        tally: &mut Tally,
    ) -> Result<Vec<Vec<u8>>> {
        let t = self.tree_mut(vol)?;
        let Kind::Dir(entries) = &mut t.nodes[dir as usize].kind else {
            return Err(gone("a non-directory (empty)"));
        };
        let all = std::mem::take(entries);
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        for e in all {
            if keep(t.name(e.name)) {
                kept.push(e);
            } else {
                removed.push(e);
            }
        }
        let names: Vec<Vec<u8>> = removed.iter().map(|e| t.name(e.name).to_vec()).collect();
        if let Kind::Dir(entries) = &mut t.nodes[dir as usize].kind {
            *entries = kept;
        }
        for e in removed {
            self.release(vol, e.node, tally)?;
        }
        Ok(names)
    }

    /// How many names the node has (hard links), 0 when unreachable.
    pub fn names_of(&self, vol: usize, node: NodeId) -> u32 {
        self.names
            .get(vol)
            .and_then(|c| c.get(node as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Empties a regular file, keeping its metadata. Returns whether it had
    /// any content.
    pub fn truncate(&mut self, vol: usize, node: NodeId, tally: &mut Tally) -> Result<bool> {
        let t = self.tree_mut(vol)?;
        let n = t.node(node);
        if !matches!(n.kind, Kind::File(_)) {
            return Err(gone("a non-file (truncate)"));
        }
        let had = n.size > 0;
        tally.bytes_freed += data_bytes(n);
        t.set_content(node, Vec::new());
        if had {
            tally.files_truncated += 1;
        }
        Ok(had)
    }

    /// Replaces a regular file's content, keeping its metadata. Returns false
    /// (and changes nothing) when the file already holds exactly `bytes`.
    pub fn replace(
        &mut self,
        vol: usize,
        node: NodeId,
        bytes: &[u8],
        tally: &mut Tally,
    ) -> Result<bool> {
        let t = self.tree(vol)?;
        let n = t.node(node);
        if !matches!(n.kind, Kind::File(_)) {
            return Err(gone("a non-file (replace)"));
        }
        if n.size == bytes.len() as u64 {
            // Compare before rewriting: small files only, as every caller's are.
            if t.read_all(node, bytes.len() as u64)? == bytes {
                return Ok(false);
            }
        }
        tally.bytes_freed += data_bytes(n);
        tally.files_overwritten += 1;
        tally.bytes_written += bytes.len() as u64;
        self.tree_mut(vol)?.set_content(node, bytes.to_vec());
        Ok(true)
    }

    /// Creates `name` in `dir` as a new node whose metadata comes from the
    /// directory: its times, and its SELinux label (what the kernel gives a new
    /// file without a type transition rule). Owner root, mode `perm`.
    fn create(
        &mut self,
        vol: usize,
        dir: NodeId,
        name: &[u8],
        kind: Kind,
        perm: u16,
    ) -> Result<NodeId> {
        let t = self.tree_mut(vol)?;
        if !t.node(dir).is_dir() {
            return Err(gone("a non-directory parent (create)"));
        }
        if t.lookup(dir, name).is_some() {
            return Err(gone("an existing name (create)"));
        }
        let p = t.node(dir);
        let label = p
            .xattrs
            .iter()
            .find(|x| t.xattr_name(x) == b"security.selinux")
            .copied();
        let mut n = Node::new(kind);
        n.perm = perm;
        n.atime = p.mtime;
        n.mtime = p.mtime;
        n.ctime = p.mtime;
        n.crtime = p.crtime.map(|_| p.mtime);
        n.xattrs = label.into_iter().collect();
        let id = t.add_node(n);
        t.link(dir, name, id)?;
        let counts = self
            .names
            .get_mut(vol)
            .ok_or_else(|| gone("an unknown volume"))?;
        counts.resize(id as usize + 1, 0);
        counts[id as usize] = 1;
        Ok(id)
    }

    /// Creates a regular file with `bytes` (see `create` for its metadata).
    pub fn create_file(
        &mut self,
        vol: usize,
        dir: NodeId,
        name: &[u8],
        bytes: &[u8],
        perm: u16,
        tally: &mut Tally,
    ) -> Result<NodeId> {
        let id = self.create(vol, dir, name, Kind::File(Vec::new()), perm)?;
        self.tree_mut(vol)?.set_content(id, bytes.to_vec());
        tally.files_created += 1;
        tally.bytes_written += bytes.len() as u64;
        Ok(id)
    }

    /// Creates an empty directory (see `create` for its metadata).
    pub fn create_dir(
        &mut self,
        vol: usize,
        dir: NodeId,
        name: &[u8],
        perm: u16,
    ) -> Result<NodeId> {
        self.create(vol, dir, name, Kind::Dir(Vec::new()), perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Flavor, Run, Src};

    fn file(t: &mut Tree, dir: NodeId, name: &[u8], len: u64) -> NodeId {
        let mut n = Node::new(Kind::File(vec![Run {
            logical: 0,
            len,
            src: Src::Volume(0),
        }]));
        n.size = len + 100; // a hole at the end
        let id = t.add_node(n);
        t.link(dir, name, id).unwrap();
        id
    }

    #[test]
    fn hard_links_free_their_data_once() {
        let mut t = Tree::new(Flavor::Synthetic, None);
        let r = t.root;
        let a = t.add_node(Node::new(Kind::Dir(vec![])));
        t.link(r, b"a", a).unwrap();
        let b = t.add_node(Node::new(Kind::Dir(vec![])));
        t.link(a, b"b", b).unwrap();
        let f = file(&mut t, b, b"f", 4096);
        t.link(r, b"f-link", f).unwrap();
        t.link(b, b"f-link2", f).unwrap();
        file(&mut t, a, b"g", 10);
        t.finish().unwrap();
        let mut trees = vec![Some(t)];
        let mut ed = Editor::new(&mut trees);
        let mut tally = Tally::default();
        ed.remove(0, r, b"a", &mut tally).unwrap();
        // f keeps a name at /f-link: only g (10 bytes) and the two directories go.
        assert_eq!(
            (tally.files_deleted, tally.dirs_deleted, tally.bytes_freed),
            (1, 2, 10)
        );
        assert!(ed.alive(0, f) && !ed.alive(0, b));
        ed.remove(0, r, b"f-link", &mut tally).unwrap();
        assert_eq!((tally.files_deleted, tally.bytes_freed), (2, 4106));
        assert!(ed.remove(0, r, b"f-link", &mut tally).is_err());
    }

    #[test]
    fn truncate_and_replace_keep_metadata() {
        let mut t = Tree::new(Flavor::Synthetic, None);
        let r = t.root;
        let f = file(&mut t, r, b"log", 50);
        let x = t.xattr(b"security.selinux", b"system_u:object_r:var_log_t:s0\0");
        t.node_mut(f).xattrs.push(x);
        t.node_mut(f).perm = 0o640;
        t.node_mut(f).uid = 104;
        t.node_mut(r).xattrs.push(x);
        t.finish().unwrap();
        let mut trees = vec![Some(t)];
        let mut ed = Editor::new(&mut trees);
        let mut tally = Tally::default();
        assert!(ed.truncate(0, f, &mut tally).unwrap());
        assert!(!ed.truncate(0, f, &mut tally).unwrap());
        assert_eq!((tally.files_truncated, tally.bytes_freed), (1, 50));
        assert!(ed.replace(0, f, b"new\n", &mut tally).unwrap());
        assert!(!ed.replace(0, f, b"new\n", &mut tally).unwrap());
        assert_eq!(tally.files_overwritten, 1);
        let d = ed.create_dir(0, r, b"d.d", 0o755).unwrap();
        ed.create_file(0, d, b"c.conf", b"[Unit]\n", 0o644, &mut tally)
            .unwrap();
        let t = trees[0].as_ref().unwrap();
        let n = t.node(f);
        assert_eq!((n.perm, n.uid, n.size), (0o640, 104, 4));
        assert_eq!(
            t.xattr_value(&n.xattrs[0]),
            b"system_u:object_r:var_log_t:s0\0"
        );
        assert_eq!(t.read_all(f, 10).unwrap(), b"new\n");
        let c = t.resolve(b"/d.d/c.conf", false).unwrap();
        assert_eq!(t.read_all(c, 10).unwrap(), b"[Unit]\n");
        // New nodes take their directory's SELinux label, as the kernel gives them.
        assert_eq!(t.node(c).xattrs, vec![x]);
        assert_eq!(t.node(c).uid, 0);
    }
}
