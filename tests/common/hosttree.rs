//! A [`Tree`] made from a directory on the host, for tests that need a guest tree
//! without a filesystem reader: every file's bytes become an owned blob, and
//! metadata (mode, owner, times, symlink targets, device numbers, xattrs are left
//! out) comes from `lstat`.
//!
//! Must not: be used on large trees (contents are loaded), or follow symlinks
//! (they become symlink nodes with their target bytes, as a reader would make).
//!
//! Include it from an integration test as
//! ```ignore
//! #[path = "common/hosttree.rs"]
//! mod hosttree;
//! ```
#![allow(dead_code)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use imgsan::tree::{Dev, Flavor, Kind, Node, NodeId, Time, Tree};

fn time(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    }
}

fn node_for(path: &Path, md: &fs::Metadata) -> Node {
    let ft = md.file_type();
    let major = |d: u64| ((d >> 8) & 0xfff) as u32 | ((d >> 32) & !0xfff) as u32;
    let minor = |d: u64| (d & 0xff) as u32 | ((d >> 12) & !0xff) as u32;
    let kind = if ft.is_dir() {
        Kind::Dir(Vec::new())
    } else if ft.is_symlink() {
        let target = fs::read_link(path).unwrap();
        Kind::Symlink(target.as_os_str().as_bytes().into())
    } else if ft.is_file() {
        Kind::File(Vec::new())
    } else if ft.is_char_device() {
        Kind::CharDev(Dev {
            major: major(md.rdev()),
            minor: minor(md.rdev()),
        })
    } else if ft.is_block_device() {
        Kind::BlockDev(Dev {
            major: major(md.rdev()),
            minor: minor(md.rdev()),
        })
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let mut n = Node::new(kind);
    n.perm = (md.mode() & 0o7777) as u16;
    n.uid = md.uid();
    n.gid = md.gid();
    n.atime = time(md.atime(), md.atime_nsec());
    n.mtime = time(md.mtime(), md.mtime_nsec());
    n.ctime = time(md.ctime(), md.ctime_nsec());
    n.size = if ft.is_symlink() || ft.is_file() {
        md.len()
    } else {
        0
    };
    n.source_ino = md.ino();
    n
}

fn fill(t: &mut Tree, dir: NodeId, host: &Path) {
    let mut entries: Vec<_> = fs::read_dir(host)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let md = fs::symlink_metadata(&p).unwrap();
        let node = node_for(&p, &md);
        let id = t.add_node(node);
        t.link(dir, p.file_name().unwrap().as_bytes(), id).unwrap();
        if md.is_file() {
            let mtime = t.node(id).mtime;
            t.set_content(id, fs::read(&p).unwrap());
            t.node_mut(id).mtime = mtime;
        } else if md.is_dir() {
            fill(t, id, &p);
        }
    }
}

/// The tree of everything under `root` (the directory itself becomes the root
/// node, with its own metadata).
pub fn from_dir(root: &Path) -> Tree {
    let mut t = Tree::new(Flavor::Synthetic, None);
    let md = fs::symlink_metadata(root).unwrap();
    let r = node_for(root, &md);
    let rid = t.root;
    *t.node_mut(rid) = r;
    fill(&mut t, rid, root);
    t.finish().unwrap();
    t
}
