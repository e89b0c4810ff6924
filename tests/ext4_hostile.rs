//! Hostile ext4 images: small mke2fs images with bytes patched where debugfs says
//! a structure lives. Each must give a typed error naming where the damage is,
//! never a panic or a hang. Structural cases use images without metadata_csum
//! (otherwise the checksum trips first); the checksum cases use the same patches
//! with it.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::ext4img::{debugfs_cmd, run};
use imgsan::fs::ext4::read::{self, Ext4Volume, ReadOptions};
use imgsan::{Error, ErrorKind, Location};

/// Make an image from a directory that `fill` populates.
fn image(dir: &Path, name: &str, args: &[&str], size: &str, fill: impl Fn(&Path)) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    fill(&src);
    let img = dir.join(format!("{name}.img"));
    run(std::process::Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(args)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(size));
    img
}

fn open(img: &Path) -> imgsan::Result<Ext4Volume> {
    read::open(imgsan::disk::open(img)?, &ReadOptions::default())
}

fn error(img: &Path) -> Error {
    match open(img) {
        Ok(_) => panic!("{img:?} was read without complaint"),
        Err(e) => e,
    }
}

fn patch(img: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(img).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

/// Byte offset of an inode (debugfs imap).
fn inode_offset(img: &Path, spec: &str, bs: u64) -> u64 {
    let out = debugfs_cmd(img, &format!("imap {spec}"));
    let l = out
        .lines()
        .find(|l| l.contains("located at block"))
        .unwrap();
    let blk: u64 = l
        .split("block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let off = u64::from_str_radix(l.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    blk * bs + off
}

/// Inode number of a path (debugfs stat).
fn ino(img: &Path, path: &str) -> u64 {
    let out = debugfs_cmd(img, &format!("stat {path}"));
    out.split("Inode: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The first data block of a path (debugfs blocks).
fn first_block(img: &Path, path: &str) -> u64 {
    debugfs_cmd(img, &format!("blocks {path}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_corrupt(e: &Error, want: Location, words: &str) {
    match e {
        Error::Corrupt {
            location, detail, ..
        } => {
            assert_eq!(*location, want, "{e}");
            assert!(detail.contains(words), "{e}");
        }
        other => panic!("want a corrupt error at {want}, got: {other}"),
    }
}

fn assert_checksum(e: &Error) {
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
}

const NOCSUM: &[&str] = &["-t", "ext4", "-b", "1024", "-O", "^metadata_csum"];
const CSUM: &[&str] = &["-t", "ext4", "-b", "1024"];

fn plain(src: &Path) {
    std::fs::create_dir(src.join("d")).unwrap();
    for i in 0..5 {
        std::fs::write(src.join("d").join(format!("f{i}")), b"hello").unwrap();
    }
    std::fs::write(src.join("small"), b"some bytes").unwrap();
}

/// Six data pieces: more extents than fit in the inode, so a tree block.
fn fragmented(src: &Path) {
    let f = std::fs::File::create(src.join("frag")).unwrap();
    for k in 0..6u64 {
        f.write_all_at(&[b'x'; 1000], k * 65536).unwrap();
    }
}

#[test]
fn corrupt_superblocks() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "sb", NOCSUM, "8M", plain);
    let pristine = std::fs::read(&img).unwrap();
    // s_log_block_size: a 1 GiB block.
    patch(&img, 1024 + 0x18, &20u32.to_le_bytes());
    assert_corrupt(
        &error(&img),
        Location::Byte(1024 + 0x18),
        "s_log_block_size",
    );
    // s_inodes_per_group 0.
    std::fs::write(&img, &pristine).unwrap();
    patch(&img, 1024 + 0x28, &0u32.to_le_bytes());
    assert_corrupt(
        &error(&img),
        Location::Byte(1024 + 0x28),
        "s_inodes_per_group",
    );
    // More blocks than the volume holds.
    std::fs::write(&img, &pristine).unwrap();
    patch(&img, 1024 + 0x4, &(1u32 << 30).to_le_bytes());
    assert_corrupt(&error(&img), Location::Byte(1024 + 0x4), "does not fit");
    // The image cut short after the superblock.
    std::fs::write(&img, &pristine[..64 * 1024]).unwrap();
    assert_eq!(error(&img).kind(), ErrorKind::Corrupt);
    // Not ext4 at all.
    std::fs::write(&img, vec![0u8; 64 * 1024]).unwrap();
    assert_eq!(error(&img).kind(), ErrorKind::NotThisFormat);

    // With metadata_csum a flipped label byte fails the checksum.
    let img = image(dir.path(), "sbc", CSUM, "8M", plain);
    patch(&img, 1024 + 0x78, b"X");
    assert_checksum(&error(&img));
}

#[test]
fn extent_tree_loop() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [("loop", NOCSUM), ("loopc", CSUM)] {
        let img = image(dir.path(), name, args, "8M", fragmented);
        let out = debugfs_cmd(&img, "stat /frag");
        let etb: u64 = out
            .split("(ETB0):")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let at = inode_offset(&img, "/frag", 1024);
        // The root (in i_block) now claims depth 2 ...
        patch(&img, at + 0x28 + 6, &2u16.to_le_bytes());
        // ... and the tree block becomes an index node pointing at itself.
        let b = etb * 1024;
        patch(&img, b + 6, &1u16.to_le_bytes());
        let mut idx = [0u8; 12];
        idx[4..8].copy_from_slice(&(etb as u32).to_le_bytes());
        patch(&img, b + 12, &idx);
        let hdr = read_at(&img, b, 4);
        assert_eq!(
            &hdr[..2],
            &[0x0a, 0xf3],
            "the extent block is where debugfs said"
        );
        let e = error(&img);
        if args == NOCSUM {
            assert_corrupt(&e, Location::Block(etb), "loop");
        } else {
            assert_checksum(&e);
        }
    }
}

#[test]
fn extents_beyond_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "far", NOCSUM, "8M", plain);
    let at = inode_offset(&img, "/small", 1024);
    // The first leaf extent's ee_start_lo.
    patch(&img, at + 0x28 + 12 + 8, &0xFFFF_FF00u32.to_le_bytes());
    let n = ino(&img, "/small");
    assert_corrupt(&error(&img), Location::Inode(n), "outside the filesystem");

    // A zero-length extent.
    let img = image(dir.path(), "zero", NOCSUM, "8M", plain);
    let at = inode_offset(&img, "/small", 1024);
    patch(&img, at + 0x28 + 12 + 4, &0u16.to_le_bytes());
    assert_corrupt(&error(&img), Location::Inode(n), "zero-length");
}

#[test]
fn directory_entry_with_rec_len_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [("rec", NOCSUM), ("recc", CSUM)] {
        let img = image(dir.path(), name, args, "8M", plain);
        let blk = first_block(&img, "/d");
        // The "." entry's rec_len.
        patch(&img, blk * 1024 + 4, &0u16.to_le_bytes());
        let e = error(&img);
        if args == NOCSUM {
            assert_corrupt(&e, Location::Block(blk), "rec_len 0");
        } else {
            assert_checksum(&e);
        }
    }
    // rec_len that runs past the block, on the last entry.
    let img = image(dir.path(), "over", NOCSUM, "8M", plain);
    let blk = first_block(&img, "/d");
    let b = read_at(&img, blk * 1024, 1024);
    let mut pos = 0usize;
    loop {
        let rl = usize::from(u16::from_le_bytes([b[pos + 4], b[pos + 5]]));
        if pos + rl >= 1024 {
            break;
        }
        pos += rl;
    }
    let rl = u16::from_le_bytes([b[pos + 4], b[pos + 5]]);
    patch(&img, blk * 1024 + pos as u64 + 4, &(rl + 4).to_le_bytes());
    assert_corrupt(&error(&img), Location::Block(blk), "crosses the end");
}

#[test]
fn htree_with_a_bad_depth() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [("dx", NOCSUM), ("dxc", CSUM)] {
        let img = image(dir.path(), name, args, "8M", |src| {
            std::fs::create_dir(src.join("many")).unwrap();
            for i in 0..400 {
                std::fs::File::create(src.join("many").join(format!("a-rather-long-name-{i:04}")))
                    .unwrap();
            }
        });
        let st = std::process::Command::new("e2fsck")
            .arg("-fyD")
            .arg(&img)
            .output()
            .unwrap();
        assert!(matches!(st.status.code(), Some(0 | 1)));
        assert!(
            debugfs_cmd(&img, "stat /many").contains("Flags: 0x81000"),
            "an htree"
        );
        open(&img).expect("the indexed directory reads");
        let blk = first_block(&img, "/many");
        // dx_root_info.indirect_levels.
        patch(&img, blk * 1024 + 0x18 + 6, &[4]);
        let e = error(&img);
        if args == NOCSUM {
            assert_corrupt(&e, Location::Block(blk), "indirect_levels 4");
        } else {
            assert_checksum(&e);
        }
    }
}

#[test]
fn xattr_value_beyond_its_block() {
    let dir = tempfile::tempdir().unwrap();
    // 128-byte inodes keep every xattr in the external block.
    let args = &[
        "-t",
        "ext4",
        "-b",
        "1024",
        "-I",
        "128",
        "-O",
        "^metadata_csum",
    ];
    let img = image(dir.path(), "xa", args, "8M", |src| {
        let p = src.join("x");
        std::fs::write(&p, b"data").unwrap();
        rustix::fs::setxattr(
            &p,
            "user.k",
            b"value bytes",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    });
    let out = debugfs_cmd(&img, "stat /x");
    let acl: u64 = out
        .split("File ACL: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(acl, 0);
    let b = acl * 1024;
    assert_eq!(read_at(&img, b, 4), 0xEA02_0000u32.to_le_bytes());
    // First entry at 32: e_value_offs at +2 (u16) -> near the end of the block.
    patch(&img, b + 32 + 2, &1020u16.to_le_bytes());
    assert_corrupt(&error(&img), Location::Block(acl), "outside");
    // And a value size past the block.
    patch(&img, b + 32 + 2, &900u16.to_le_bytes());
    patch(&img, b + 32 + 8, &4000u32.to_le_bytes());
    assert_corrupt(&error(&img), Location::Block(acl), "outside");
}

#[test]
fn journal_inode_whose_extent_map_loops() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "jl", NOCSUM, "8M", plain);
    let at = inode_offset(&img, "<8>", 1024);
    // A free block near the end becomes an index node pointing at itself, and
    // the journal's root points at it with depth 2.
    let blk = 8 * 1024 - 2u64;
    let mut node = vec![0u8; 1024];
    node[..2].copy_from_slice(&0xF30Au16.to_le_bytes());
    node[2..4].copy_from_slice(&1u16.to_le_bytes());
    node[4..6].copy_from_slice(&84u16.to_le_bytes());
    node[6..8].copy_from_slice(&1u16.to_le_bytes());
    node[16..20].copy_from_slice(&(blk as u32).to_le_bytes());
    patch(&img, blk * 1024, &node);
    let mut root = [0u8; 24];
    root[..2].copy_from_slice(&0xF30Au16.to_le_bytes());
    root[2..4].copy_from_slice(&1u16.to_le_bytes());
    root[4..6].copy_from_slice(&4u16.to_le_bytes());
    root[6..8].copy_from_slice(&2u16.to_le_bytes());
    root[16..20].copy_from_slice(&(blk as u32).to_le_bytes());
    patch(&img, at + 0x28, &root);
    assert_corrupt(&error(&img), Location::Block(blk), "loop");
}

#[test]
fn odd_inodes_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    // i_extra_isize larger than the inode.
    let img = image(dir.path(), "ex", NOCSUM, "8M", plain);
    let at = inode_offset(&img, "/small", 1024);
    let n = ino(&img, "/small");
    patch(&img, at + 0x80, &200u16.to_le_bytes());
    assert_corrupt(&error(&img), Location::Inode(n), "i_extra_isize");

    // An entry naming an inode past s_inodes_count.
    let img = image(dir.path(), "big", NOCSUM, "8M", plain);
    let blk = first_block(&img, "/d");
    // The third entry (after "." and "..") is f-something; its inode field.
    let b = read_at(&img, blk * 1024, 64);
    let third = 12 + usize::from(u16::from_le_bytes([b[16], b[17]]));
    patch(
        &img,
        blk * 1024 + third as u64,
        &0x7FFF_FFFFu32.to_le_bytes(),
    );
    assert_corrupt(&error(&img), Location::Block(blk), "s_inodes_count");

    // A fast symlink claiming 100 bytes.
    let img = image(dir.path(), "ln", NOCSUM, "8M", |src| {
        std::os::unix::fs::symlink("target", src.join("l")).unwrap();
    });
    let at = inode_offset(&img, "/l", 1024);
    let n = ino(&img, "/l");
    patch(&img, at + 4, &100u32.to_le_bytes());
    assert_corrupt(&error(&img), Location::Inode(n), "fast symlink");

    // A directory reachable twice (an entry renamed onto a directory).
    let img = image(dir.path(), "dl", NOCSUM, "8M", |src| {
        std::fs::create_dir(src.join("a")).unwrap();
        std::fs::create_dir(src.join("b")).unwrap();
    });
    let a = ino(&img, "/a") as u32;
    let root = first_block(&img, "/");
    let rb = read_at(&img, root * 1024, 1024);
    // Find the entry named "b" and point it at "a".
    let mut pos = 0usize;
    while pos < 1024 {
        let rl = usize::from(u16::from_le_bytes([rb[pos + 4], rb[pos + 5]]));
        if rb[pos + 6] == 1 && rb[pos + 8] == b'b' {
            patch(&img, root * 1024 + pos as u64, &a.to_le_bytes());
            break;
        }
        pos += rl.max(12);
    }
    let e = error(&img);
    assert_corrupt(&e, Location::Inode(u64::from(a)), "two paths");
}

#[test]
fn orphans_are_counted_and_linked_orphans_survive() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "or", NOCSUM, "8M", plain);
    let linked = ino(&img, "/small");
    let gone = ino(&img, "/d/f0");
    // /d/f0 is unlinked but still open (on the orphan list); /small is being
    // truncated (on the list, still linked).
    let script = format!(
        "unlink /d/f0\nsif <{gone}> links_count 0\nsif <{gone}> dtime {linked}\nsif <{linked}> dtime 0\nssv last_orphan {gone}\n"
    );
    common::ext4img::debugfs(&img, script.as_bytes(), true);
    let vol = open(&img).unwrap();
    assert_eq!(vol.info.orphans, 2);
    let t = &vol.tree;
    assert!(t.resolve(b"/d/f0", false).is_err());
    let s = t.resolve(b"/small", false).unwrap();
    assert_eq!(t.read_all(s, 100).unwrap(), b"some bytes");

    // A list that loops is a warning, not a failure.
    common::ext4img::debugfs(
        &img,
        format!("sif <{linked}> dtime {gone}\n").as_bytes(),
        true,
    );
    let vol = open(&img).unwrap();
    assert_eq!(vol.info.orphans, 2);
    assert!(
        vol.info.warnings.iter().any(|w| w.contains("loops")),
        "{:?}",
        vol.info.warnings
    );
}

#[test]
fn external_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "ej", NOCSUM, "8M", plain);
    // No journal inode, a journal device and UUID instead.
    common::ext4img::debugfs(&img, b"ssv journal_inum 0\nssv journal_dev 0x801\nssv journal_uuid 12345678-1234-1234-1234-123456789abc\n", true);
    let e = error(&img);
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("external journal"), "{e}");
}

/// Two inodes naming one xattr block (as the kernel's mbcache sharing does):
/// both get its attributes, and the block is decoded once (one interned set).
#[test]
fn shared_xattr_block() {
    let dir = tempfile::tempdir().unwrap();
    let args = &[
        "-t",
        "ext4",
        "-b",
        "1024",
        "-I",
        "128",
        "-O",
        "^metadata_csum",
    ];
    let img = image(dir.path(), "share", args, "8M", |src| {
        for n in ["a", "b"] {
            let p = src.join(n);
            std::fs::write(&p, n).unwrap();
            let v = format!("value of {n}");
            rustix::fs::setxattr(&p, "user.k", v.as_bytes(), rustix::fs::XattrFlags::empty())
                .unwrap();
        }
    });
    let acl = |p: &str| -> u64 {
        debugfs_cmd(&img, &format!("stat {p}"))
            .split("File ACL: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let a = acl("/a");
    common::ext4img::debugfs(&img, format!("sif /b file_acl {a}\n").as_bytes(), true);
    let vol = open(&img).unwrap();
    let t = &vol.tree;
    let xa = &t.node(t.resolve(b"/a", false).unwrap()).xattrs;
    let xb = &t.node(t.resolve(b"/b", false).unwrap()).xattrs;
    assert_eq!(xa, xb, "same interned attributes");
    assert_eq!(t.xattr_value(&xb[0]), b"value of a");
}
