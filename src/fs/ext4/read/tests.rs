//! Unit tests of the reader's plumbing that the integration tests cannot reach
//! yet: the journal overlay. A stand-in replayer returns chosen blocks, and
//! everything the reader reads must come through them.

use std::process::Command;
use std::sync::{Arc, Mutex};

use super::*;
use crate::disk::MemDisk;
use crate::tree::{Kind, Src};

/// A 4 MiB ext4 image (1 KiB blocks, no metadata_csum so that patched inodes
/// need no new checksum) holding /file (3 blocks) and /dir/x, with
/// needs_recovery set.
fn dirty_image() -> (Vec<u8>, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("file"), vec![b'a'; 3000]).unwrap();
    std::fs::write(src.join("dir/x"), b"x").unwrap();
    let img = dir.path().join("img");
    let st = Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^metadata_csum",
        ])
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg("4M")
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.success());
    let bytes = std::fs::read(&img).unwrap();
    let out = Command::new("debugfs")
        .args(["-R", "blocks /file"])
        .arg(&img)
        .output()
        .unwrap();
    let second: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let out = Command::new("debugfs")
        .args(["-R", "imap /file"])
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let l = text.lines().find(|l| l.contains("located at")).unwrap();
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
    (bytes, second, blk * 1024 + off)
}

#[test]
fn everything_is_read_through_the_overlay() {
    let (bytes, data_blk, inode_at) = dirty_image();
    let bs = 1024u64;
    // Replayed: the superblock's block (a new label), the inode table block of
    // /file (a new mtime), and /file's second data block.
    let mut sb_block = bytes[1024..2048].to_vec();
    sb_block[0x78..0x80].copy_from_slice(b"replayed");
    let itb = inode_at / bs;
    let mut it_block = bytes[(itb * bs) as usize..((itb + 1) * bs) as usize].to_vec();
    let o = (inode_at % bs) as usize;
    it_block[o + 0x10..o + 0x14].copy_from_slice(&1_234_567u32.to_le_bytes());
    let data = vec![b'J'; 1024];

    let seen = Mutex::new(None);
    let replayer = |sb: &Superblock,
                    loc: &JournalLocation,
                    read: &(dyn Fn(u64, &mut [u8]) -> Result<()> + Sync)|
     -> Result<(Overlay, ReplayReport)> {
        // The replayer reads raw blocks: the journal's first block is its
        // superblock (jbd2 magic).
        let mut b = vec![0u8; sb.block_size() as usize];
        read(loc.extents[0].1, &mut b).unwrap();
        assert_eq!(&b[..4], &[0xc0, 0x3b, 0x39, 0x98]);
        *seen.lock().unwrap() = Some(loc.clone());
        let mut o = Overlay::default();
        o.blocks.insert(1, Arc::from(sb_block.clone()));
        o.blocks.insert(itb, Arc::from(it_block.clone()));
        o.blocks.insert(data_blk, Arc::from(data.clone()));
        let r = ReplayReport {
            needed: true,
            transactions: 3,
            blocks: 3,
            ..Default::default()
        };
        Ok((o, r))
    };
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new(bytes));
    let v = open_with_replayer(disk, &ReadOptions::default(), &replayer).unwrap();
    let loc = seen.lock().unwrap().clone().expect("replay ran");
    assert_eq!(loc.len_blocks, v.info.journal.blocks);
    assert!(loc.len_blocks > 0);
    assert_eq!(
        loc.extents.iter().map(|e| e.2).sum::<u64>(),
        loc.len_blocks,
        "the journal inode's mapping covers its size"
    );
    assert_eq!(v.info.label, "replayed");
    assert_eq!(v.journal.transactions, 3);
    assert!(v.info.journal.replayed && v.info.journal.needs_recovery);
    let t = &v.tree;
    let f = t.resolve(b"/file", false).unwrap();
    assert_eq!(t.node(f).mtime.sec, 1_234_567);
    let all = t.read_all(f, 10_000).unwrap();
    assert_eq!(&all[..1024], &[b'a'; 1024][..]);
    assert_eq!(&all[1024..2048], &[b'J'; 1024][..]);
    assert_eq!(&all[2048..], &[b'a'; 952][..]);
    let Kind::File(runs) = &t.node(f).kind else {
        panic!()
    };
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(matches!(runs[0].src, Src::Volume(_)));
    assert!(matches!(runs[1].src, Src::Blob { .. }));
    assert!(matches!(runs[2].src, Src::Volume(_)));
    assert_eq!(
        t.read_all(t.resolve(b"/dir/x", false).unwrap(), 10)
            .unwrap(),
        b"x"
    );
}

#[test]
fn replay_can_be_turned_off() {
    let (bytes, _, _) = dirty_image();
    let called = Mutex::new(false);
    let replayer = |_: &Superblock,
                    _: &JournalLocation,
                    _: &(dyn Fn(u64, &mut [u8]) -> Result<()> + Sync)|
     -> Result<(Overlay, ReplayReport)> {
        *called.lock().unwrap() = true;
        Ok(Default::default())
    };
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new(bytes));
    let opts = ReadOptions {
        replay_journal: false,
        ..Default::default()
    };
    let v = open_with_replayer(disk, &opts, &replayer).unwrap();
    assert!(!*called.lock().unwrap());
    assert!(!v.info.journal.replayed);
    assert!(v
        .info
        .warnings
        .iter()
        .any(|w| w.contains("not") || w.contains("disabled")));
}
