//! Test and benchmark support: a [`Tree`] read from a directory of the host, the
//! stand-in for the ext4 reader until it lands. Metadata comes from lstat/statx,
//! readlink and the xattr calls; file contents become runs into [`HostFiles`], a
//! virtual disk that concatenates the files (holes found with SEEK_DATA stay
//! holes). Nothing is loaded into memory but metadata.

#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgsan::disk::{check_range, Alloc, Disk, DiskInfo, Extent};
use imgsan::tree::{Dev, Flavor, Kind, Node, NodeId, Run, Src, Time, Tree};

/// The host files a tree's runs point into, laid end to end: file `i` occupies
/// `start..start + len` of the virtual disk.
pub struct HostFiles {
    files: Vec<(u64, PathBuf, u64)>,
    len: u64,
}

impl HostFiles {
    fn locate(&self, offset: u64) -> Option<&(u64, PathBuf, u64)> {
        let i = self.files.partition_point(|f| f.0 + f.2 <= offset);
        self.files.get(i).filter(|f| f.0 <= offset)
    }
}

impl Disk for HostFiles {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, mut offset: u64, mut buf: &mut [u8]) -> imgsan::Result<()> {
        check_range("host files", self.len, offset, buf.len() as u64)?;
        while !buf.is_empty() {
            let (start, path, len) = self.locate(offset).ok_or_else(|| {
                imgsan::Error::corrupt("host files", imgsan::Location::Byte(offset), "no file here")
            })?;
            let n = ((start + len - offset) as usize).min(buf.len());
            let f = std::fs::File::open(path)
                .map_err(|e| imgsan::Error::io(path.display().to_string(), e))?;
            f.read_exact_at(&mut buf[..n], offset - start)
                .map_err(|e| imgsan::Error::io(path.display().to_string(), e))?;
            offset += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> imgsan::Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len);
        Ok(if offset < end {
            vec![Extent {
                offset,
                len: end - offset,
                alloc: Alloc::Data,
            }]
        } else {
            Vec::new()
        })
    }
    fn info(&self) -> DiskInfo {
        DiskInfo {
            format: "host files".into(),
            virtual_size: self.len,
            ..Default::default()
        }
    }
}

fn time(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: nsec as u32,
    }
}

/// Data segments of a host file (SEEK_DATA / SEEK_HOLE), as (offset, len).
pub fn data_segments(path: &Path, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::SeekFrom;
    let f = std::fs::File::open(path).unwrap();
    let mut v = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match rustix::fs::seek(&f, SeekFrom::Data(at)) {
            Ok(s) => s,
            Err(_) => break,
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(&f, SeekFrom::Hole(start))
            .unwrap()
            .min(size);
        v.push((start, end - start));
        at = end;
    }
    v
}

/// Read `root` into a tree. Hard links (same device and inode) become one node.
/// Generations are made up (a counter) so that their encoding is exercised.
pub fn tree_from_dir(root: &Path) -> Tree {
    let mut files: Vec<(u64, PathBuf, u64)> = Vec::new();
    let mut next = 0u64;
    let mut tree = Tree::new(Flavor::Synthetic, None);
    let mut by_inode: HashMap<(u64, u64), NodeId> = HashMap::new();
    let root_id = tree.root;
    fill_node(&mut tree, root_id, root, &mut files, &mut next);
    let mut stack = vec![(root_id, root.to_path_buf())];
    while let Some((dir_id, dir)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let md = std::fs::symlink_metadata(&path).unwrap();
            let key = (md.dev(), md.ino());
            if !md.is_dir() {
                if let Some(&id) = by_inode.get(&key) {
                    tree.link(dir_id, name.as_bytes(), id).unwrap();
                    continue;
                }
            }
            let id = tree.add_node(Node::new(Kind::Fifo));
            by_inode.insert(key, id);
            fill_node(&mut tree, id, &path, &mut files, &mut next);
            tree.link(dir_id, name.as_bytes(), id).unwrap();
            if md.is_dir() {
                stack.push((id, path));
            }
        }
    }
    tree.source = Some(Arc::new(HostFiles { files, len: next }));
    tree.finish().unwrap();
    tree
}

fn fill_node(
    tree: &mut Tree,
    id: NodeId,
    path: &Path,
    files: &mut Vec<(u64, PathBuf, u64)>,
    next: &mut u64,
) {
    let md = std::fs::symlink_metadata(path).unwrap();
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        Kind::Dir(Vec::new())
    } else if ft.is_symlink() {
        Kind::Symlink(
            std::fs::read_link(path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .into(),
        )
    } else if ft.is_file() {
        let size = md.len();
        let mut runs = Vec::new();
        if size > 0 {
            let start = *next;
            for (off, len) in data_segments(path, size) {
                runs.push(Run {
                    logical: off,
                    len,
                    src: Src::Volume(start + off),
                });
            }
            files.push((start, path.to_path_buf(), size));
            *next += size;
        }
        Kind::File(runs)
    } else {
        let dev = Dev {
            major: rustix::fs::major(md.rdev()),
            minor: rustix::fs::minor(md.rdev()),
        };
        if ft.is_char_device() {
            Kind::CharDev(dev)
        } else if ft.is_block_device() {
            Kind::BlockDev(dev)
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        }
    };
    let stx = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::BTIME,
    )
    .unwrap();
    let mut xattrs = Vec::new();
    let mut list = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut list[..]).unwrap_or(0);
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
        xattrs.push((name.to_vec(), value[..len].to_vec()));
    }
    let node = tree.node_mut(id);
    node.kind = kind;
    node.perm = (md.mode() & 0o7777) as u16;
    node.uid = md.uid();
    node.gid = md.gid();
    node.atime = time(md.atime(), md.atime_nsec());
    node.mtime = time(md.mtime(), md.mtime_nsec());
    node.ctime = time(md.ctime(), md.ctime_nsec());
    if stx.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0 {
        node.crtime = Some(time(stx.stx_btime.tv_sec, i64::from(stx.stx_btime.tv_nsec)));
    }
    node.size = if ft.is_file() || ft.is_symlink() {
        md.len()
    } else {
        0
    };
    node.generation = id.wrapping_mul(2_654_435_761);
    node.source_ino = md.ino();
    for (n, v) in xattrs {
        let x = tree.xattr(&n, &v);
        tree.node_mut(id).xattrs.push(x);
    }
}
