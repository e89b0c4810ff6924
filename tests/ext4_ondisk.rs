//! The superblock and group descriptor codecs against images made by mke2fs and
//! read by dumpe2fs.

use std::process::Command;

use imgsan::fs::ext4::group;
use imgsan::fs::ext4::superblock::{Superblock, SUPERBLOCK_OFFSET};

fn mkfs(dir: &std::path::Path, name: &str, args: &[&str], size: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let st = Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(args)
        .arg(&p)
        .arg(size)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .status()
        .expect("mke2fs runs");
    assert!(st.success());
    p
}

fn dumpe2fs_field(img: &std::path::Path, field: &str) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .expect("dumpe2fs runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("dumpe2fs has no field {field}"))
}

#[test]
fn decode_encode_is_identity_and_agrees_with_dumpe2fs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        (
            "default.img",
            vec!["-t", "ext4", "-L", "root", "-b", "4096"],
        ),
        ("k1.img", vec!["-t", "ext4", "-b", "1024", "-I", "128"]),
        (
            "uninit.img",
            vec!["-t", "ext4", "-O", "^metadata_csum,uninit_bg,^64bit"],
        ),
        ("ext3.img", vec!["-t", "ext3"]),
    ] {
        let img = mkfs(dir.path(), name, &args, "128M");
        let bytes = std::fs::read(&img).unwrap();
        let raw: &[u8; 1024] = bytes[1024..2048].try_into().unwrap();
        let sb = Superblock::parse(raw, bytes.len() as u64).unwrap();
        assert_eq!(
            &sb.to_bytes()[..],
            &raw[..],
            "{name}: encode(decode(x)) == x"
        );
        assert_eq!(
            &sb.to_bytes_with_checksum()[..],
            &raw[..],
            "{name}: checksum recomputes"
        );
        assert_eq!(
            sb.uuid_string(),
            dumpe2fs_field(&img, "Filesystem UUID"),
            "{name}"
        );
        assert_eq!(
            sb.feature_names().join(" "),
            dumpe2fs_field(&img, "Filesystem features"),
            "{name}"
        );
        assert_eq!(
            sb.block_size().to_string(),
            dumpe2fs_field(&img, "Block size")
        );
        assert_eq!(
            sb.blocks_count().to_string(),
            dumpe2fs_field(&img, "Block count")
        );
        let gds = group::read_all(&sb, |b, buf| {
            let o = (b * u64::from(sb.block_size())) as usize;
            buf.copy_from_slice(&bytes[o..o + buf.len()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(gds.len() as u64, sb.group_count());
        let free: u64 = gds.iter().map(|g| u64::from(g.free_blocks_count)).sum();
        assert_eq!(
            free,
            sb.free_blocks_count(),
            "{name}: group free counts sum to the superblock's"
        );
        let _ = SUPERBLOCK_OFFSET;
    }
}

#[test]
fn flipped_byte_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "c.img", &["-t", "ext4"], "32M");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[1024 + 0x78] ^= 0x20; // a label byte
    let raw: &[u8; 1024] = bytes[1024..2048].try_into().unwrap();
    let e = Superblock::parse(raw, bytes.len() as u64).unwrap_err();
    assert_eq!(e.kind(), imgsan::ErrorKind::Checksum, "{e}");
}

#[test]
fn refused_and_unknown_features_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(
        dir.path(),
        "f.img",
        &["-t", "ext4", "-O", "^metadata_csum"],
        "32M",
    );
    let bytes = std::fs::read(&img).unwrap();
    // The encrypt flag alone is accepted (only inodes really encrypted are refused,
    // by the reader): see tests/ext4_corpus_cases.rs.
    for (bit, word) in [(0x20000u32, "casefold"), (0x4000_0000, "unknown")] {
        let mut raw: [u8; 1024] = bytes[1024..2048].try_into().unwrap();
        let v = u32::from_le_bytes(raw[0x60..0x64].try_into().unwrap()) | bit;
        raw[0x60..0x64].copy_from_slice(&v.to_le_bytes());
        let e = Superblock::parse(&raw, bytes.len() as u64).unwrap_err();
        assert_eq!(e.kind(), imgsan::ErrorKind::Unsupported);
        assert!(e.to_string().contains(word), "{e}");
    }
    // A superblock claiming more blocks than the volume holds is corrupt.
    let raw: [u8; 1024] = bytes[1024..2048].try_into().unwrap();
    let e = Superblock::parse(&raw, 1 << 20).unwrap_err();
    assert_eq!(e.kind(), imgsan::ErrorKind::Corrupt, "{e}");
}

/// The root inode's checksum and its first directory block's tail checksum, as
/// computed by `ondisk`, match what mke2fs stored.
#[test]
fn inode_and_directory_checksums_match_mke2fs() {
    use imgsan::fs::ext4::ondisk::{self, RawInode};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello"), b"hi").unwrap();
    for (name, isize) in [("i256.img", "256"), ("i128.img", "128")] {
        let img = dir.path().join(name);
        let st = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", isize, "-d"])
            .arg(&src)
            .arg(&img)
            .arg("32M")
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&img).unwrap();
        let raw: &[u8; 1024] = bytes[1024..2048].try_into().unwrap();
        let sb = Superblock::parse(raw, bytes.len() as u64).unwrap();
        let bs = sb.block_size() as usize;
        let gds = group::read_all(&sb, |b, buf| {
            let o = b as usize * bs;
            buf.copy_from_slice(&bytes[o..o + buf.len()]);
            Ok(())
        })
        .unwrap();
        let isz = usize::from(sb.inode_size());
        let off = gds[0].inode_table as usize * bs + isz; // inode 2
        let ibuf = &bytes[off..off + isz];
        let mut fixed = [0u8; 160];
        let n = if isz > 128 {
            (128 + usize::from(u16::from_le_bytes([ibuf[0x80], ibuf[0x81]]))).min(160)
        } else {
            128
        };
        fixed[..n].copy_from_slice(&ibuf[..n]);
        let ino = RawInode::decode(&fixed);
        assert_eq!(
            ino.i_mode & 0o170000,
            0o040000,
            "{name}: root is a directory"
        );
        let seed = ondisk::inode_csum_seed(&sb, 2, ino.i_generation);
        let (stored, mask) = ondisk::stored_inode_checksum(ibuf);
        assert_eq!(
            ondisk::inode_checksum(seed, ibuf) & mask,
            stored,
            "{name}: inode checksum"
        );
        // First directory block: the extent root's first leaf entry.
        let hdr = ondisk::ExtentHeader::decode(ino.i_block[..12].try_into().unwrap());
        assert_eq!(hdr.eh_magic, ondisk::EXT4_EXT_MAGIC);
        let ext = ondisk::RawExtent::decode(ino.i_block[12..24].try_into().unwrap());
        let blk = (u64::from(ext.ee_start_hi) << 32 | u64::from(ext.ee_start_lo)) as usize;
        let dblock = &bytes[blk * bs..(blk + 1) * bs];
        assert_eq!(dblock[bs - 12 + 7], ondisk::DIR_TAIL_FT);
        let tail = u32::from_le_bytes(dblock[bs - 4..].try_into().unwrap());
        assert_eq!(
            ondisk::dir_leaf_checksum(seed, dblock),
            tail,
            "{name}: directory tail checksum"
        );
    }
}
