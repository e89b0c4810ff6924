//! Host directory trees as imgsan [`Tree`]s: the tests' stand-in for a filesystem
//! reader. Every inode under a directory (read with lstat, readlink, llistxattr and
//! lgetxattr) becomes a node; file data is copied into one RAW "volume" file and the
//! nodes reference it by runs, with holes found by SEEK_DATA / SEEK_HOLE, exactly as
//! a reader's runs reference the source volume.
//!
//! Must not: interpret anything (no rules, no guest semantics), or write outside the
//! data file it is given.
//!
//! Include it from an integration test as
//! ```ignore
//! #[path = "common/hostvol.rs"]
//! mod hostvol;
//! ```
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgsan::disk::raw::Raw;
use imgsan::tree::{Dev, Flavor, Kind, Node, NodeId, Run, Src, Time, Tree};

/// The data segments of an open file: (offset, length), holes skipped.
fn data_segments(f: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < size {
        let start = match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(off)) {
            Ok(s) => s,
            Err(e) if e == rustix::io::Errno::NXIO => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(f, rustix::fs::SeekFrom::Hole(start))
            .expect("SEEK_HOLE")
            .min(size);
        out.push((start, end - start));
        off = end;
    }
    out
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).expect("llistxattr");
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let mut value = vec![0u8; 64 * 1024];
        let cname = std::ffi::OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr(path, cname, &mut value[..]).expect("lgetxattr");
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out
}

fn time(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: u32::try_from(nsec).expect("nanoseconds"),
    }
}

/// Reads `dir` into a tree whose file data lives in `data_file` (created). Paths
/// relative to `dir` listed in `skip` are left out (as if deleted before packing).
pub fn read(dir: &Path, data_file: &Path, skip: &[PathBuf]) -> Tree {
    let mut data = File::create(data_file).expect("create data file");
    // A header so the volume is never empty (RAW refuses to map 0 bytes).
    data.write_all(&[0u8; 4096]).unwrap();
    let mut at: u64 = 4096;
    let mut tree = Tree::new(Flavor::Synthetic, None);
    let skip: BTreeSet<PathBuf> = skip.iter().cloned().collect();
    let mut inodes: HashMap<(u64, u64), NodeId> = HashMap::new();

    let mut node_of = |tree: &mut Tree, path: &Path, md: &fs::Metadata, at: &mut u64| -> Node {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir(Vec::new())
        } else if ft.is_symlink() {
            Kind::Symlink(fs::read_link(path).unwrap().as_os_str().as_bytes().into())
        } else if ft.is_file() {
            let mut f = File::open(path).unwrap();
            let mut runs = Vec::new();
            for (off, len) in data_segments(&f, md.len()) {
                f.seek(SeekFrom::Start(off)).unwrap();
                let mut buf = vec![0u8; usize::try_from(len).unwrap()];
                f.read_exact(&mut buf).unwrap();
                data.write_all(&buf).unwrap();
                runs.push(Run {
                    logical: off,
                    len,
                    src: Src::Volume(*at),
                });
                *at += len;
            }
            Kind::File(runs)
        } else if ft.is_char_device() || ft.is_block_device() {
            let d = Dev {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            };
            if ft.is_char_device() {
                Kind::CharDev(d)
            } else {
                Kind::BlockDev(d)
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let mut n = Node::new(kind);
        n.perm = u16::try_from(md.mode() & 0o7777).unwrap();
        n.uid = md.uid();
        n.gid = md.gid();
        n.atime = time(md.atime(), md.atime_nsec());
        n.mtime = time(md.mtime(), md.mtime_nsec());
        n.ctime = time(md.ctime(), md.ctime_nsec());
        n.size = if ft.is_file() || ft.is_symlink() {
            md.len()
        } else {
            0
        };
        n.source_ino = md.ino();
        for (name, value) in xattrs(path) {
            let x = tree.xattr(&name, &value);
            n.xattrs.push(x);
        }
        n
    };

    let root_md = fs::symlink_metadata(dir).unwrap();
    let root = node_of(&mut tree, dir, &root_md, &mut at);
    let r = tree.root;
    *tree.node_mut(r) = root;
    let mut stack = vec![(dir.to_path_buf(), PathBuf::new(), r)];
    while let Some((host, rel, id)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let child_rel = rel.join(&name);
            if skip.contains(&child_rel) {
                continue;
            }
            let child = host.join(&name);
            let md = fs::symlink_metadata(&child).unwrap();
            let key = (md.dev(), md.ino());
            let node = match inodes.get(&key) {
                Some(&n) if !md.is_dir() => n,
                _ => {
                    let n = node_of(&mut tree, &child, &md, &mut at);
                    let nid = tree.add_node(n);
                    inodes.insert(key, nid);
                    nid
                }
            };
            tree.link(id, name.as_bytes(), node).unwrap();
            if md.is_dir() {
                stack.push((child, child_rel, node));
            }
        }
    }
    data.flush().unwrap();
    drop(data);
    tree.finish().unwrap();
    tree.source = Some(Arc::new(Raw::open(data_file).expect("open data file")));
    tree
}
