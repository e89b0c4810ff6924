//! The XFS reader against kernel-made images: for each mkfs.xfs variant of the
//! guests imgsan meets, a generated tree (xattrs in every namespace, ACLs,
//! SELinux labels, hard links, sparse files, a 6,000-entry directory, long
//! symlinks, devices) is copied in with `cp -a` on a loop mount, plus files the
//! kernel fragments and preallocates; the tree imgsan reads must equal what the
//! mounted filesystem showed (lstat, getxattr, statx) field by field, and agree
//! with `xfs_db` on a sample of inodes.
//!
//! Run: `cargo test --test xfs_read` (root; about a minute on two cores).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::check::{self, Expect};
use common::gen::{self, GenConfig, Model};
use common::xfs::{self as xfsimg, Filled, Variant};
use imgsan::fs::xfs::read::{self, ReadOptions, XfsVolume};
use imgsan::tree::{Kind, Tree};

struct Source {
    _dir: tempfile::TempDir,
    src: PathBuf,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

/// The generated source tree (made once per test binary).
fn source() -> &'static Path {
    &SOURCE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            let mut cfg = GenConfig::new(0x5f5_0011, 4096);
            cfg.files = 1200;
            cfg.dirs = 80;
            cfg.big_dir = 6000;
            cfg.max_file = 64 * 1024;
            cfg.max_symlink = 1000;
            let model = gen::generate(&src, &cfg);
            xfsimg::drop_unrepresentable(&model);
            Source { _dir: dir, src }
        })
        .src
}

/// Files only the kernel can lay out: two files written in alternation (many
/// extents, a block-map B+tree), and a preallocated file written in the
/// middle (unwritten extents around data).
fn kernel_layouts(mnt: &Path) {
    let d = mnt.join("kernel");
    std::fs::create_dir(&d).unwrap();
    let mut a = std::fs::File::create(d.join("frag-a")).unwrap();
    let mut b = std::fs::File::create(d.join("frag-b")).unwrap();
    for k in 0..400u32 {
        let chunk = vec![(k % 251) as u8; 4096];
        a.write_all(&chunk).unwrap();
        a.sync_data().unwrap();
        b.write_all(&chunk[..4000]).unwrap();
        b.sync_data().unwrap();
    }
    let p = d.join("prealloc");
    let out = std::process::Command::new("xfs_io")
        .arg("-f")
        .arg("-c")
        .arg("falloc 0 1m")
        .arg("-c")
        .arg("pwrite -S 0x5a 300k 20k")
        .arg("-c")
        .arg("truncate 2m")
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xfs_io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fill(img: &Path, v: &Variant, scratch: &Path) -> Filled {
    xfsimg::mkfs(img, v, "400M", &[]);
    let m = xfsimg::Mount::new(img, scratch, "");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", source().display()))
        .arg(&m.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    kernel_layouts(&m.dir);
    let filled = xfsimg::snapshot(&m.dir);
    m.unmount();
    filled
}

fn open(img: &Path) -> XfsVolume {
    let d = imgsan::disk::open(img).unwrap();
    read::open(d, &ReadOptions::default()).unwrap_or_else(|e| panic!("reading {img:?}: {e}"))
}

fn ts(t: imgsan::tree::Time) -> (i64, u32) {
    (t.sec, t.nsec)
}

/// ctime and crtime, which the shared comparison leaves to each filesystem.
fn check_times(tree: &Tree, model: &Model, times: &xfsimg::Times, v5: bool) -> Vec<String> {
    let mut errs = Vec::new();
    for rel in model.nodes.keys().filter(|r| !r.is_empty()) {
        let mut p = b"/".to_vec();
        p.extend_from_slice(rel);
        let Ok(id) = tree.resolve(&p, false) else {
            continue;
        };
        let n = tree.node(id);
        let (ctime, crtime) = times[rel];
        if ts(n.ctime) != ctime {
            errs.push(format!(
                "{}: ctime {:?} != {ctime:?}",
                String::from_utf8_lossy(rel),
                ts(n.ctime)
            ));
        }
        let want_cr = v5.then_some(crtime);
        if n.crtime.map(ts) != want_cr {
            errs.push(format!(
                "{}: crtime {:?} != {want_cr:?}",
                String::from_utf8_lossy(rel),
                n.crtime
            ));
        }
    }
    errs
}

/// A sample of inodes against `xfs_db -c 'inode N' -c print`.
fn check_xfs_db(img: &Path, vol: &XfsVolume, v: &Variant) {
    let tree = &vol.tree;
    let mut sample = Vec::new();
    for (path, id) in tree.paths().into_iter().step_by(97).take(25) {
        sample.push((path, id));
    }
    for p in [&b"/kernel/frag-a"[..], b"/kernel/prealloc"] {
        let id = tree.resolve(p, false).unwrap();
        sample.push((p.to_vec(), id));
    }
    let counts = tree.link_counts();
    for (path, id) in sample {
        let n = tree.node(id);
        let f = xfsimg::inode_fields(img, n.source_ino);
        let show = String::from_utf8_lossy(&path);
        let get = |k: &str| {
            f.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{show}: xfs_db has no {k}: {f:?}"))
        };
        assert_eq!(get("core.mode"), format!("0{:o}", n.mode()), "{show}: mode");
        assert_eq!(get("core.uid"), n.uid.to_string(), "{show}: uid");
        assert_eq!(get("core.gid"), n.gid.to_string(), "{show}: gid");
        assert_eq!(get("core.size"), n.size.to_string(), "{show}: size");
        let nlink = f
            .get("core.nlinkv2")
            .or(f.get("core.nlinkv1"))
            .cloned()
            .unwrap();
        assert_eq!(nlink, counts[id as usize].to_string(), "{show}: nlink");
        assert_eq!(
            get("core.gen"),
            n.generation.to_string(),
            "{show}: generation"
        );
        if v.v5 {
            assert_eq!(
                get("v3.flags2"),
                format!("{:#x}", n.fs_raw.flags2),
                "{show}: flags2"
            );
        }
        assert_eq!(
            get("core.forkoff"),
            n.fs_raw.forkoff.to_string(),
            "{show}: forkoff"
        );
    }
}

fn check_variant(name: &str) {
    let v = xfsimg::variant(name);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join(format!("{name}.img"));
    let filled = fill(&img, &v, dir.path());
    if let Some(keep) = std::env::var_os("XFSREAD_KEEP") {
        std::fs::copy(&img, Path::new(&keep).join(format!("{name}.img"))).unwrap();
    }
    let vol = open(&img);
    let ex = Expect {
        ns: true,
        crtime: false,
        projid: false,
        extra: false,
        root_extra: &[],
        structural_flags: 0,
    };
    check::assert_same(&vol.tree, &filled.model, &ex, name);
    let errs = check_times(&vol.tree, &filled.model, &filled.times, v.v5);
    assert!(
        errs.is_empty(),
        "{name}: {} time differences: {:?}",
        errs.len(),
        &errs[..errs.len().min(20)]
    );
    check_xfs_db(&img, &vol, &v);
    // The kernel's own layouts came out as the test meant them to.
    let frag = vol.tree.resolve(b"/kernel/frag-a", false).unwrap();
    let Kind::File(runs) = &vol.tree.node(frag).kind else {
        panic!("frag-a is not a file")
    };
    assert!(
        runs.len() > 30,
        "{name}: frag-a has only {} extents",
        runs.len()
    );
    let pre = vol.tree.resolve(b"/kernel/prealloc", false).unwrap();
    let Kind::File(runs) = &vol.tree.node(pre).kind else {
        panic!("prealloc is not a file")
    };
    assert_eq!(
        runs.iter().map(|r| (r.logical, r.len)).collect::<Vec<_>>(),
        vec![(300 * 1024, 20 * 1024)],
        "{name}: preallocated file's data runs"
    );
    let info = &vol.info;
    assert_eq!(info.version, if v.v5 { 5 } else { 4 });
    assert_eq!(u64::from(info.block_size), v.block_size);
    assert_eq!(
        info.rebuild_refusal.is_some(),
        !v.v5,
        "{name}: {:?}",
        info.rebuild_refusal
    );
    assert_eq!(info.unlinked, 0);
    // The features line agrees with xfs_db's.
    let db = xfsimg::xfs_db(&img, &["version"]);
    for f in &info.features {
        if f == "V4" || f == "V5" {
            continue;
        }
        assert!(
            db.contains(f.as_str()),
            "{name}: feature {f} not in xfs_db's {db}"
        );
    }
    let _ = BTreeMap::<u8, u8>::new();
    let _ = std::ffi::OsStr::from_bytes(b"");
}

#[test]
fn centos7() {
    check_variant("centos7");
}

#[test]
fn rocky8() {
    check_variant("rocky8");
}

#[test]
fn rocky9() {
    check_variant("rocky9");
}

#[test]
fn debian13() {
    check_variant("debian13");
}

#[test]
fn v4_read_only() {
    check_variant("v4");
}

#[test]
fn sectors_512_blocks_1k() {
    check_variant("sect512");
}

#[test]
fn sectors_4096_dirblocks_8k() {
    check_variant("sect4096");
}
