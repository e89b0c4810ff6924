//! The XFS reader on damaged and unsupported images: one test per rejection
//! path, each a copy of a small kernel-made image with one field changed (and,
//! on V5, its CRC recomputed so the intended check is the one that fires). The
//! reader must return the right kind of error, naming the structure or feature,
//! and never panic.
//!
//! Run: `cargo test --test xfs_hostile` (root; a few seconds).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::xfs as xfsimg;
use imgsan::error::ErrorKind;
use imgsan::fs::xfs::ondisk::{
    self, crc_set, ino_split, RawSuperblock, AGI_CRC_OFF, DINODE_CRC_OFF, SB_CRC_OFF,
};
use imgsan::fs::xfs::read::{self, ReadOptions};

struct Base {
    _dir: tempfile::TempDir,
    img: PathBuf,
}

static BASE: OnceLock<Base> = OnceLock::new();

/// A 300 MiB V5 image (the smallest mkfs.xfs makes) with a few files.
fn base() -> &'static Path {
    &BASE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("base.img");
            xfsimg::mkfs(&img, &xfsimg::variant("rocky9"), "300M", &[]);
            let m = xfsimg::Mount::new(&img, dir.path(), "");
            std::fs::create_dir(m.dir.join("d")).unwrap();
            std::fs::write(m.dir.join("d/f"), b"hello").unwrap();
            std::fs::write(m.dir.join("g"), vec![7u8; 100_000]).unwrap();
            m.unmount();
            Base { _dir: dir, img }
        })
        .img
}

/// A private copy of the base image.
fn copy(dir: &Path) -> PathBuf {
    let p = dir.join("t.img");
    let st = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(base())
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn write_at(p: &Path, off: u64, b: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(b, off).unwrap();
}

/// Change `len` bytes of a structure at `off` (of `size` bytes, CRC at
/// `crc_off`), then recompute its CRC if asked.
fn patch(p: &Path, off: u64, size: usize, crc_off: Option<usize>, f: impl FnOnce(&mut [u8])) {
    let mut b = read_at(p, off, size);
    f(&mut b);
    if let Some(c) = crc_off {
        crc_set(&mut b, c);
    }
    write_at(p, off, &b);
}

fn sb(p: &Path) -> RawSuperblock {
    let b = read_at(p, 0, RawSuperblock::SIZE);
    RawSuperblock::decode(b[..].try_into().unwrap())
}

fn patch_sb(p: &Path, f: impl FnOnce(&mut [u8])) {
    let ss = usize::from(sb(p).sb_sectsize);
    patch(p, 0, ss, Some(SB_CRC_OFF), f);
}

fn open(p: &Path) -> imgsan::Result<read::XfsVolume> {
    read::open(imgsan::disk::open(p).unwrap(), &ReadOptions::default())
}

fn expect_err(p: &Path, kind: ErrorKind, words: &[&str]) {
    match open(p) {
        Ok(_) => panic!("the damaged image was read without complaint (wanted {kind:?})"),
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(e.kind(), kind, "{msg}");
            for w in words {
                assert!(msg.contains(w), "{msg:?} does not name {w:?}");
            }
        }
    }
}

/// Byte offset of inode `ino`.
fn inode_at(p: &Path, ino: u64) -> u64 {
    let s = sb(p);
    let (agno, agbno, k) = ino_split(ino, s.sb_agblklog, s.sb_inopblog);
    (u64::from(agno) * u64::from(s.sb_agblocks) + u64::from(agbno)) * u64::from(s.sb_blocksize)
        + u64::from(k) * u64::from(s.sb_inodesize)
}

#[test]
fn the_base_image_reads() {
    let v = open(base()).unwrap();
    let f = v.tree.resolve(b"/d/f", false).unwrap();
    assert_eq!(v.tree.read_all(f, 100).unwrap(), b"hello");
    assert!(v.info.log.state.clean);
}

#[test]
fn wrong_magic_is_not_xfs() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    write_at(&p, 0, b"XFSX");
    expect_err(&p, ErrorKind::NotThisFormat, &["XFS"]);
}

#[test]
fn superblock_crc_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    write_at(&p, 130, &[0xAA]);
    expect_err(&p, ErrorKind::Checksum, &["XFS superblock"]);
}

#[test]
fn unknown_incompat_feature_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    patch_sb(&p, |b| b[216] |= 0x80); // bit 31 of sb_features_incompat
    expect_err(
        &p,
        ErrorKind::Unsupported,
        &["incompat", "unknown bits 0x80000000"],
    );
}

#[test]
fn metadir_and_parent_pointers_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    patch_sb(&p, |b| b[218] |= 0x01); // METADIR (1 << 8)
    expect_err(&p, ErrorKind::Unsupported, &["metadir"]);
    let p = copy(d.path());
    patch_sb(&p, |b| b[219] |= 0x80); // PARENT (1 << 7)
    expect_err(&p, ErrorKind::Unsupported, &["parent"]);
}

#[test]
fn unknown_ro_compat_feature_reads_but_refuses_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    patch_sb(&p, |b| b[212] |= 0x40);
    let v = open(&p).unwrap();
    let why = v.info.rebuild_refusal.unwrap();
    assert!(why.contains("ro_compat"), "{why}");
}

#[test]
fn realtime_volume_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    patch_sb(&p, |b| b[16..24].copy_from_slice(&100u64.to_be_bytes()));
    expect_err(&p, ErrorKind::Unsupported, &["realtime"]);
}

#[test]
fn external_log_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    patch_sb(&p, |b| b[48..56].copy_from_slice(&0u64.to_be_bytes()));
    expect_err(&p, ErrorKind::Unsupported, &["external log"]);
}

#[test]
fn bad_block_size_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    patch_sb(&p, |b| b[4..8].copy_from_slice(&3000u32.to_be_bytes()));
    expect_err(
        &p,
        ErrorKind::Corrupt,
        &["XFS superblock", "block size 3000"],
    );
}

#[test]
fn truncated_image_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(200 << 20).unwrap();
    expect_err(&p, ErrorKind::Corrupt, &["truncated"]);
}

#[test]
fn agi_crc_mismatch_names_the_agi() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let agi = 2 * u64::from(s.sb_sectsize);
    write_at(&p, agi + 33, &[0x55]);
    expect_err(&p, ErrorKind::Checksum, &["XFS AGI"]);
}

#[test]
fn agi_with_no_btree_levels_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let ss = usize::from(s.sb_sectsize);
    // AG 1's AGI: the error names the AG.
    let agi = u64::from(s.sb_agblocks) * u64::from(s.sb_blocksize) + 2 * ss as u64;
    patch(&p, agi, ss, Some(AGI_CRC_OFF), |b| {
        b[24..28].copy_from_slice(&0u32.to_be_bytes())
    });
    expect_err(&p, ErrorKind::Corrupt, &["XFS AGI", "AG 1", "0 levels"]);
}

#[test]
fn inode_btree_block_crc_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let agi = read_at(&p, 2 * u64::from(s.sb_sectsize), 32);
    let root = u32::from_be_bytes(agi[20..24].try_into().unwrap());
    write_at(
        &p,
        u64::from(root) * u64::from(s.sb_blocksize) + 100,
        &[0x99],
    );
    expect_err(&p, ErrorKind::Checksum, &["inode B+tree"]);
}

#[test]
fn inode_crc_mismatch_names_the_inode() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let root = sb(&p).sb_rootino;
    write_at(&p, inode_at(&p, root) + 8, &[0x12]);
    expect_err(
        &p,
        ErrorKind::Checksum,
        &["XFS inode", &format!("inode {root}")],
    );
}

#[test]
fn inode_with_bad_magic_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let root = s.sb_rootino;
    let at = inode_at(&p, root);
    patch(
        &p,
        at,
        usize::from(s.sb_inodesize),
        Some(DINODE_CRC_OFF),
        |b| b[0] = b'X',
    );
    expect_err(&p, ErrorKind::Corrupt, &["XFS inode", "magic"]);
}

#[test]
fn inode_with_unknown_type_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let root = s.sb_rootino;
    let at = inode_at(&p, root);
    patch(
        &p,
        at,
        usize::from(s.sb_inodesize),
        Some(DINODE_CRC_OFF),
        |b| {
            b[2] = 0xf0 | (b[2] & 0x0f);
        },
    );
    expect_err(&p, ErrorKind::Corrupt, &["file type"]);
}

#[test]
fn attribute_fork_offset_past_the_inode_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let root = s.sb_rootino;
    let at = inode_at(&p, root);
    patch(
        &p,
        at,
        usize::from(s.sb_inodesize),
        Some(DINODE_CRC_OFF),
        |b| b[82] = 0xff,
    );
    expect_err(&p, ErrorKind::Corrupt, &["attribute fork offset"]);
}

#[test]
fn directory_entry_naming_a_free_inode_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let s = sb(&p);
    let root = s.sb_rootino;
    let at = inode_at(&p, root);
    let isize = usize::from(s.sb_inodesize);
    patch(&p, at, isize, Some(DINODE_CRC_OFF), |b| {
        // Shortform root: header (count, i8count, 4-byte parent), then the first
        // entry: namelen, offset, name, ftype, 4-byte inode number.
        assert_eq!(b[5], ondisk::fork_format::LOCAL, "the root is shortform");
        let lit = &mut b[176..];
        let namelen = usize::from(lit[6]);
        let ino_at = 6 + 3 + namelen + 1;
        lit[ino_at..ino_at + 4].copy_from_slice(&((root as u32) + 60).to_be_bytes());
    });
    expect_err(&p, ErrorKind::Corrupt, &["not allocated"]);
}

#[test]
fn extent_outside_the_filesystem_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let v = open(&p).unwrap();
    let g = v.tree.resolve(b"/g", false).unwrap();
    let ino = v.tree.node(g).source_ino;
    let s = sb(&p);
    let at = inode_at(&p, ino);
    patch(
        &p,
        at,
        usize::from(s.sb_inodesize),
        Some(DINODE_CRC_OFF),
        |b| {
            assert_eq!(b[5], ondisk::fork_format::EXTENTS);
            let mut rec = ondisk::BmbtRec::decode(b[176..192].try_into().unwrap());
            rec.startblock = (u64::from(s.sb_agcount) + 3) << s.sb_agblklog;
            let mut out = [0u8; 16];
            rec.encode(&mut out);
            b[176..192].copy_from_slice(&out);
        },
    );
    expect_err(
        &p,
        ErrorKind::Corrupt,
        &["XFS extent", "pass the end", &format!("inode {ino}")],
    );
}

#[test]
fn verification_can_be_turned_off() {
    let d = tempfile::tempdir().unwrap();
    let p = copy(d.path());
    let root = sb(&p).sb_rootino;
    // di_changecount: covered by the CRC, used by nothing else.
    write_at(&p, inode_at(&p, root) + 110, &[0x12]);
    assert!(open(&p).is_err());
    let opts = ReadOptions {
        verify_checksums: false,
        ..Default::default()
    };
    read::open(imgsan::disk::open(&p).unwrap(), &opts).unwrap();
}
