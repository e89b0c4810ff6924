//! One guest namespace over several volumes' trees: the root filesystem with the
//! others mounted where the guest's fstab puts them (/boot, /boot/efi, /home, ...).
//!
//! Resolution never leaves the guest: absolute symlink targets restart at the
//! guest's root, ".." at the root stays there, ".." at a mount's root goes to the
//! directory the mount sits on, and symlink chains are cut after
//! [`MAX_SYMLINKS`]. Nothing here touches the host.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Location, Result};
use crate::tree::{Kind, Node, NodeId, Tree, MAX_SYMLINKS};

/// A place in the namespace: which volume's tree, which node in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pos {
    pub vol: usize,
    pub node: NodeId,
}

/// Trees joined by mount points. The trees are borrowed: the namespace is a
/// view, the caller owns (and may later edit) the trees.
pub struct Namespace<'a> {
    trees: Vec<Option<&'a Tree>>,
    root_vol: usize,
    /// Absolute, normalised mount paths ("/boot") -> volume index.
    mounts: HashMap<Vec<u8>, usize>,
}

fn not_found(path: &[u8], why: &str) -> Error {
    Error::Io {
        what: format!("{}: {why}", String::from_utf8_lossy(path)),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

/// Split a path into its normal components (no empty, no ".").
fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Normalise an absolute mount path: "/boot/" -> "/boot", "//" -> "/".
pub fn normalise(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in components(path) {
        if c == b".." {
            if let Some(i) = out.iter().rposition(|&b| b == b'/') {
                out.truncate(i);
            }
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

impl<'a> Namespace<'a> {
    /// A namespace whose root is volume `root_vol`. `trees[i]` is volume i's tree,
    /// `None` for volumes without a readable filesystem.
    pub fn new(trees: Vec<Option<&'a Tree>>, root_vol: usize) -> Result<Self> {
        if trees.get(root_vol).and_then(|t| *t).is_none() {
            return Err(Error::corrupt(
                "guest",
                Location::Whole,
                "the root volume has no readable filesystem",
            ));
        }
        Ok(Namespace {
            trees,
            root_vol,
            mounts: HashMap::new(),
        })
    }

    /// Mount volume `vol` at `path`. Later mounts at the same path replace earlier
    /// ones, as with the kernel's stacking (only the top one is visible).
    pub fn mount(&mut self, path: &[u8], vol: usize) -> Result<()> {
        if self.trees.get(vol).and_then(|t| *t).is_none() {
            return Err(Error::corrupt(
                "guest",
                Location::Whole,
                format!("volume {vol} has no readable filesystem"),
            ));
        }
        let p = normalise(path);
        if p == b"/" {
            return Err(Error::corrupt(
                "guest",
                Location::Whole,
                "cannot mount over the guest root",
            ));
        }
        self.mounts.insert(p, vol);
        Ok(())
    }

    /// Mount points, sorted by path.
    pub fn mounts(&self) -> Vec<(Vec<u8>, usize)> {
        let mut v: Vec<_> = self.mounts.iter().map(|(p, v)| (p.clone(), *v)).collect();
        v.sort();
        v
    }

    pub fn tree(&self, vol: usize) -> &'a Tree {
        self.trees[vol].expect("positions only name volumes with trees")
    }

    pub fn node(&self, pos: Pos) -> &'a Node {
        self.tree(pos.vol).node(pos.node)
    }

    pub fn root(&self) -> Pos {
        let t = self.tree(self.root_vol);
        Pos {
            vol: self.root_vol,
            node: t.root,
        }
    }

    /// Where `path` leads; see the module comment for the rules. The last
    /// component's symlink is followed only if `follow_last`.
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<Pos> {
        Ok(self.resolve_with_path(path, follow_last)?.0)
    }

    /// Like [`resolve`](Self::resolve), also returning the canonical guest path of
    /// the result.
    pub fn resolve_with_path(&self, path: &[u8], follow_last: bool) -> Result<(Pos, Vec<u8>)> {
        let mut todo: VecDeque<Vec<u8>> = components(path).map(|c| c.to_vec()).collect();
        // (position, its canonical path) for every directory above the current one.
        let mut stack: Vec<(Pos, Vec<u8>)> = Vec::new();
        let mut cur = self.root();
        let mut cur_path: Vec<u8> = b"/".to_vec();
        let mut budget = MAX_SYMLINKS;
        while let Some(comp) = todo.pop_front() {
            if comp == b".." {
                if let Some((p, pp)) = stack.pop() {
                    cur = p;
                    cur_path = pp;
                }
                continue;
            }
            let tree = self.tree(cur.vol);
            if !tree.node(cur.node).is_dir() {
                return Err(not_found(path, "not a directory"));
            }
            let Some(next) = tree.lookup(cur.node, &comp) else {
                // A mount whose mount point directory is missing in the parent
                // (an image made without it) is still reachable by its path.
                let mut child_path = cur_path.clone();
                if child_path.len() > 1 {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(&comp);
                match self.mounts.get(&child_path) {
                    Some(&vol) => {
                        stack.push((cur, std::mem::replace(&mut cur_path, child_path)));
                        cur = Pos {
                            vol,
                            node: self.tree(vol).root,
                        };
                        continue;
                    }
                    None => return Err(not_found(path, "no such file or directory")),
                }
            };
            let last = todo.is_empty();
            if let Kind::Symlink(target) = &tree.node(next).kind {
                if !last || follow_last {
                    if budget == 0 {
                        return Err(Error::corrupt(
                            "path",
                            Location::Whole,
                            format!(
                                "too many levels of symbolic links resolving {}",
                                String::from_utf8_lossy(path)
                            ),
                        ));
                    }
                    budget -= 1;
                    for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                        todo.push_front(c.to_vec());
                    }
                    if target.first() == Some(&b'/') {
                        stack.clear();
                        cur = self.root();
                        cur_path = b"/".to_vec();
                    }
                    continue;
                }
            }
            let mut child_path = cur_path.clone();
            if child_path.len() > 1 {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&comp);
            stack.push((cur, std::mem::replace(&mut cur_path, child_path)));
            cur = Pos {
                vol: cur.vol,
                node: next,
            };
            // A mount point shadows the directory it sits on.
            if let Some(&vol) = self.mounts.get(&cur_path) {
                if tree.node(next).is_dir() {
                    cur = Pos {
                        vol,
                        node: self.tree(vol).root,
                    };
                }
            }
        }
        Ok((cur, cur_path))
    }

    /// Whether `path` exists (following symlinks).
    pub fn exists(&self, path: &[u8]) -> bool {
        self.resolve(path, true).is_ok()
    }

    /// The whole content of a regular file, refusing files above `limit` bytes.
    pub fn read(&self, path: &[u8], limit: u64) -> Result<Vec<u8>> {
        let pos = self.resolve(path, true)?;
        if !matches!(self.node(pos).kind, Kind::File(_)) {
            return Err(not_found(path, "not a regular file"));
        }
        self.tree(pos.vol).read_all(pos.node, limit)
    }

    /// The entries of a directory (following symlinks), with each entry's
    /// position, mount points substituted.
    pub fn list(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, Pos)>> {
        let (pos, canon) = self.resolve_with_path(path, true)?;
        let tree = self.tree(pos.vol);
        if !tree.node(pos.node).is_dir() {
            return Err(not_found(path, "not a directory"));
        }
        let mut out = Vec::new();
        for e in tree.entries(pos.node) {
            let name = tree.name(e.name).to_vec();
            let mut child_path = canon.clone();
            if child_path.len() > 1 {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&name);
            let mut p = Pos {
                vol: pos.vol,
                node: e.node,
            };
            if let Some(&vol) = self.mounts.get(&child_path) {
                if tree.node(e.node).is_dir() {
                    p = Pos {
                        vol,
                        node: self.tree(vol).root,
                    };
                }
            }
            out.push((name, p));
        }
        Ok(out)
    }

    /// Visit everything below `path` (not following symlinks, crossing mount
    /// points), depth-first, names sorted: `f(guest path, pos)`. Each directory is
    /// visited once even if mounted twice; `max_depth` bounds the descent.
    pub fn walk(&self, path: &[u8], max_depth: usize, mut f: impl FnMut(&[u8], Pos)) -> Result<()> {
        let (start, canon) = self.resolve_with_path(path, true)?;
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![(canon, start, 0usize)];
        while let Some((p, pos, depth)) = stack.pop() {
            f(&p, pos);
            if !self.node(pos).is_dir() || depth >= max_depth || !seen.insert(pos) {
                continue;
            }
            let mut children = self.list(&p)?;
            children.reverse();
            for (name, child) in children {
                let mut cp = p.clone();
                if cp.len() > 1 {
                    cp.push(b'/');
                }
                cp.extend_from_slice(&name);
                stack.push((cp, child, depth + 1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Flavor;

    fn dir(t: &mut Tree, parent: NodeId, name: &[u8]) -> NodeId {
        let d = t.add_node(Node::new(Kind::Dir(vec![])));
        t.link(parent, name, d).unwrap();
        d
    }

    fn file(t: &mut Tree, parent: NodeId, name: &[u8], body: &[u8]) -> NodeId {
        let f = t.add_node(Node::new(Kind::File(vec![])));
        t.link(parent, name, f).unwrap();
        t.set_content(f, body.to_vec());
        f
    }

    fn link(t: &mut Tree, parent: NodeId, name: &[u8], target: &[u8]) {
        let l = t.add_node(Node::new(Kind::Symlink(target.into())));
        t.link(parent, name, l).unwrap();
    }

    #[test]
    fn mounts_symlinks_and_dotdot() {
        let mut root = Tree::new(Flavor::Synthetic, None);
        let r = root.root;
        let etc = dir(&mut root, r, b"etc");
        file(&mut root, etc, b"os-release", b"ID=ubuntu\n");
        let boot_dir = dir(&mut root, r, b"boot");
        file(&mut root, boot_dir, b"hidden", b"shadowed by the mount");
        link(&mut root, r, b"abs", b"/boot/grub/grub.cfg");
        link(&mut root, etc, b"rel", b"../boot/grub/../grub/grub.cfg");
        link(&mut root, etc, b"escape", b"../../../../etc/os-release");
        link(&mut root, etc, b"loop1", b"loop2");
        link(&mut root, etc, b"loop2", b"loop1");
        root.finish().unwrap();

        let mut boot = Tree::new(Flavor::Synthetic, None);
        let b = boot.root;
        let grub = dir(&mut boot, b, b"grub");
        file(&mut boot, grub, b"grub.cfg", b"menuentry");
        link(&mut boot, grub, b"up", b"../../etc/os-release");
        boot.finish().unwrap();

        let mut ns = Namespace::new(vec![Some(&root), Some(&boot)], 0).unwrap();
        ns.mount(b"/boot/", 1).unwrap();
        assert_eq!(ns.read(b"/boot/grub/grub.cfg", 100).unwrap(), b"menuentry");
        assert_eq!(ns.read(b"/abs", 100).unwrap(), b"menuentry");
        assert_eq!(ns.read(b"/etc/rel", 100).unwrap(), b"menuentry");
        assert_eq!(ns.read(b"/etc/escape", 100).unwrap(), b"ID=ubuntu\n");
        // ".." from the mounted volume's root goes back to the root volume.
        assert_eq!(ns.read(b"/boot/grub/up", 100).unwrap(), b"ID=ubuntu\n");
        assert!(
            ns.read(b"/boot/hidden", 100).is_err(),
            "the mount shadows the directory"
        );
        let (_, canon) = ns.resolve_with_path(b"/etc/rel", true).unwrap();
        assert_eq!(canon, b"/boot/grub/grub.cfg");
        let e = ns.resolve(b"/etc/loop1", true).unwrap_err();
        assert!(e.to_string().contains("too many levels"), "{e}");
        let mut seen = Vec::new();
        ns.walk(b"/", 64, |p, _| {
            seen.push(String::from_utf8_lossy(p).into_owned())
        })
        .unwrap();
        assert!(
            seen.contains(&"/boot/grub/grub.cfg".to_string()),
            "{seen:?}"
        );
        assert!(!seen.contains(&"/boot/hidden".to_string()));
    }

    #[test]
    fn normalise_paths() {
        assert_eq!(normalise(b"/boot/"), b"/boot");
        assert_eq!(normalise(b"//"), b"/");
        assert_eq!(normalise(b"/a/../b/./c"), b"/b/c");
    }
}
