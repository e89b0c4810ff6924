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

use std::io::Write;
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
    // noatime: scanning the mount must not change the atimes it records;
    // allocsize: no speculative preallocation, so alternating writes fragment.
    let m = xfsimg::Mount::new(img, scratch, "noatime,allocsize=4096");
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
    let mut filled = xfsimg::snapshot(&m.dir);
    m.unmount();
    xfsimg::drop_acl_aliases(&mut filled.model);
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
            let raw = get("v3.flags2");
            let f2 = match raw.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).unwrap(),
                None => raw.parse().unwrap(),
            };
            assert_eq!(f2, n.fs_raw.flags2, "{show}: flags2");
        }
        if path == b"/kernel/frag-a" {
            assert_eq!(get("core.format"), "3 (btree)", "{show}: not a B+tree fork");
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
        // Preallocation is the kernel's doing (fallocate), not the model's.
        structural_flags: u32::from(imgsan::fs::xfs::ondisk::diflag::PREALLOC),
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
    assert_eq!(
        vol.tree.node(pre).flags,
        u32::from(imgsan::fs::xfs::ondisk::diflag::PREALLOC),
        "{name}: prealloc's flags"
    );
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

/// V4 (CentOS 7.0-7.2): the kernel here no longer mounts it, so the image is
/// made by `mkfs.xfs -p` from a protofile (no xattrs, no hard links, times of
/// the mkfs run) and checked against the protofile's own content and against
/// xfs_db.
#[test]
fn v4_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let mut want: Vec<(String, Vec<u8>, u32, u32, u32)> = Vec::new();
    for k in 0..40u32 {
        let size = [0usize, 1, 4095, 4096, 4097, 70_000, 300_000][k as usize % 7];
        let data: Vec<u8> = (0..size).map(|i| (i as u32 * 31 + k) as u8).collect();
        let src = d.join(format!("src{k}"));
        std::fs::write(&src, &data).unwrap();
        let mode = [0o644, 0o600, 0o4755, 0o2750][k as usize % 4];
        let m = format!(
            "-{}{}{:03o}",
            if mode & 0o4000 != 0 { 'u' } else { '-' },
            if mode & 0o2000 != 0 { 'g' } else { '-' },
            mode & 0o777
        );
        proto.push_str(&format!(
            "f{k} {m} {} {} {}\n",
            1000 + k,
            2000 + k,
            src.display()
        ));
        want.push((format!("/f{k}"), data, mode, 1000 + k, 2000 + k));
    }
    let long: String = (0..900).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    proto.push_str(&format!("short l--777 0 0 f1\nlong l--777 0 0 {long}\n"));
    proto.push_str("cdev c--640 0 6 4 70\nbdev b--660 0 6 8 1\npipe p--600 0 0\n");
    proto.push_str("big d--750 10 20\n");
    for k in 0..600 {
        proto.push_str(&format!("entry-with-a-longish-name-{k:05} p--644 0 0\n"));
    }
    proto.push_str("$\n$\n");
    let pf = d.join("proto");
    std::fs::write(&pf, proto).unwrap();
    let img = d.join("v4.img");
    let v = xfsimg::variant("v4");
    xfsimg::mkfs(&img, &v, "400M", &["-p", pf.to_str().unwrap()]);
    let vol = open(&img);
    let t = &vol.tree;
    for (path, data, mode, uid, gid) in &want {
        let id = t.resolve(path.as_bytes(), false).unwrap();
        let n = t.node(id);
        assert_eq!(t.read_all(id, 1 << 20).unwrap(), *data, "{path}: content");
        assert_eq!(
            (u32::from(n.perm), n.uid, n.gid),
            (*mode, *uid, *gid),
            "{path}"
        );
        assert_eq!(n.crtime, None, "{path}: V4 has no creation time");
    }
    let sym = |p: &[u8]| match &t.node(t.resolve(p, false).unwrap()).kind {
        Kind::Symlink(s) => s.to_vec(),
        k => panic!("{k:?}"),
    };
    assert_eq!(sym(b"/short"), b"f1");
    assert_eq!(sym(b"/long"), long.as_bytes());
    match t.node(t.resolve(b"/cdev", false).unwrap()).kind {
        Kind::CharDev(dv) => assert_eq!((dv.major, dv.minor), (4, 70)),
        ref k => panic!("{k:?}"),
    }
    match t.node(t.resolve(b"/bdev", false).unwrap()).kind {
        Kind::BlockDev(dv) => assert_eq!((dv.major, dv.minor), (8, 1)),
        ref k => panic!("{k:?}"),
    }
    let big = t.resolve(b"/big", false).unwrap();
    assert_eq!(t.entries(big).len(), 600);
    assert!(matches!(
        t.node(t.lookup(big, b"entry-with-a-longish-name-00599").unwrap())
            .kind,
        Kind::Fifo
    ));
    check_xfs_db_v4(&img, &vol);
    assert_eq!(vol.info.version, 4);
    let why = vol.info.rebuild_refusal.as_deref().unwrap();
    assert!(why.contains("V4"), "{why}");
}

/// Times of a V4 sample against xfs_db (the protofile gives no times to check).
fn check_xfs_db_v4(img: &Path, vol: &XfsVolume) {
    let t = &vol.tree;
    for p in [&b"/f5"[..], b"/long", b"/big", b"/pipe"] {
        let n = t.node(t.resolve(p, false).unwrap());
        let f = xfsimg::inode_fields(img, n.source_ino);
        assert_eq!(f["core.mtime.nsec"], n.mtime.nsec.to_string(), "mtime nsec");
        assert_eq!(f["core.atime.nsec"], n.atime.nsec.to_string(), "atime nsec");
        assert_eq!(f["core.size"], n.size.to_string(), "size");
        assert_eq!(f["core.version"], "2", "inode version");
    }
}

#[test]
fn sectors_512_blocks_1k() {
    check_variant("sect512");
}

#[test]
fn sectors_4096_dirblocks_8k() {
    check_variant("sect4096");
}
