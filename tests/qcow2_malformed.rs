//! Hostile QCOW2 images: each rejection path gives its error kind from the library,
//! and through the CLI exits 3 with one line naming the file, the structure and
//! the offset, leaving no output file behind.
//!
//! Valid images come from qemu-img and qemu-io; the damage is done here, one field
//! at a time.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgsan::disk::qcow2::Qcow2;
use imgsan::disk::Disk;
use imgsan::ErrorKind;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A valid v3 image with 64 KiB clusters and two data clusters (at 0 and 1 MiB).
fn valid(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 64k",
            "-c",
            "write -P 0x22 1m 64k",
            p(&img),
        ],
    );
    img
}

/// The same content, zlib-compressed.
fn valid_compressed(dir: &Path) -> PathBuf {
    let plain = valid(dir, "plain-src.qcow2");
    let img = dir.join("compressed.qcow2");
    run(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", p(&plain), p(&img)],
    );
    img
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

/// Byte offsets of the first L1 entry and of the L2 entry for guest cluster 0.
fn table_positions(bytes: &[u8]) -> (usize, usize) {
    let l1 = be64(bytes, 40) as usize;
    let l2 = (be64(bytes, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    (l1, l2)
}

/// Open, map and read the whole image; the first error wins.
fn open_and_read(img: &Path) -> imgsan::Result<()> {
    let q = Qcow2::open(img)?;
    q.map(0, q.len())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < q.len() {
        let n = (q.len() - off).min(buf.len() as u64) as usize;
        q.read_at(off, &mut buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Expect `img` to fail with `kind`, and the CLI to exit 3 with one line that
/// names the file, `structure` and an offset, leaving no file in `out_dir`.
fn expect_rejected(img: &Path, kind: ErrorKind, structure: &str) {
    let err = open_and_read(img).expect_err("a damaged image was accepted");
    assert_eq!(err.kind(), kind, "{img:?}: {err}");

    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("out.raw");
    let out = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(["convert", p(img), "-o", p(&out_path)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{img:?}: {stderr}");
    let line = stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {stderr}");
    let name = img.file_name().unwrap().to_str().unwrap();
    assert!(line.contains(name), "file not named: {line}");
    assert!(
        line.contains(structure),
        "structure {structure:?} not named: {line}"
    );
    assert!(line.contains("offset 0x"), "no offset: {line}");
    assert_eq!(
        std::fs::read_dir(out_dir.path()).unwrap().count(),
        0,
        "output left behind for {img:?}"
    );
}

fn mutate(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    std::fs::write(dst, b).unwrap();
    dst.to_path_buf()
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

/// A change made to a valid image's bytes.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn header_field_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid(dir.path(), "good.qcow2");
    open_and_read(&good).unwrap();
    use ErrorKind::*;
    let cases: Vec<(&str, Mutation, ErrorKind, &str)> = vec![
        (
            "version1",
            Box::new(|b| b[7] = 1),
            Unsupported,
            "qcow2 header",
        ),
        (
            "version4",
            Box::new(|b| b[7] = 4),
            Unsupported,
            "qcow2 header",
        ),
        ("cbits8", Box::new(|b| b[23] = 8), Corrupt, "qcow2 header"),
        ("cbits22", Box::new(|b| b[23] = 22), Corrupt, "qcow2 header"),
        ("aes", Box::new(|b| b[35] = 1), Unsupported, "AES"),
        ("luks", Box::new(|b| b[35] = 2), Unsupported, "LUKS"),
        ("crypt7", Box::new(|b| b[35] = 7), Corrupt, "qcow2 header"),
        (
            "corrupt-bit",
            Box::new(|b| b[79] |= 2),
            Corrupt,
            "qcow2 header",
        ),
        (
            "incompat-bit5",
            Box::new(|b| b[79] |= 0x20),
            Unsupported,
            "bit 5",
        ),
        (
            "incompat-bit40",
            Box::new(|b| b[74] |= 1),
            Unsupported,
            "bit 40",
        ),
        (
            "l1-huge",
            Box::new(|b| put32(b, 36, 0x0100_0000)),
            Corrupt,
            "qcow2 L1 table",
        ),
        (
            "l1-zero",
            Box::new(|b| put32(b, 36, 0)),
            Corrupt,
            "qcow2 header",
        ),
        (
            "l1-unaligned",
            Box::new(|b| b[47] = 8),
            Corrupt,
            "qcow2 header",
        ),
        (
            "l1-past-eof",
            Box::new(|b| put64(b, 40, 1 << 40)),
            Corrupt,
            "qcow2 L1 table",
        ),
        (
            "hdrlen-short",
            Box::new(|b| put32(b, 100, 96)),
            Corrupt,
            "qcow2 header",
        ),
        (
            "hdrlen-odd",
            Box::new(|b| put32(b, 100, 108)),
            Corrupt,
            "qcow2 header",
        ),
        (
            "hdrlen-huge",
            Box::new(|b| put32(b, 100, 0x0002_0000)),
            Corrupt,
            "qcow2 header",
        ),
        (
            "ext-too-long",
            Box::new(|b| {
                // The first extension after the 112-byte header.
                put32(b, 116, 0x00ff_0000);
            }),
            Corrupt,
            "qcow2 header extension",
        ),
        (
            "compression-type-bit-without-type",
            Box::new(|b| b[79] |= 8),
            Corrupt,
            "qcow2 header",
        ),
        (
            "compression-type-unknown",
            Box::new(|b| {
                b[79] |= 8;
                b[104] = 9;
            }),
            Unsupported,
            "qcow2 header",
        ),
        (
            "backing-name-too-long",
            Box::new(|b| {
                put64(b, 8, 0x200);
                put32(b, 16, 5000);
            }),
            Corrupt,
            "qcow2 header",
        ),
        (
            "extended-l2-small-clusters",
            Box::new(|b| {
                b[79] |= 0x10;
                b[23] = 12;
            }),
            Corrupt,
            "qcow2 header",
        ),
    ];
    for (name, f, kind, structure) in cases {
        let img = mutate(&good, &dir.path().join(format!("{name}.qcow2")), f);
        expect_rejected(&img, kind, structure);
    }
}

#[test]
fn unknown_incompatible_bit_is_named_from_the_feature_table() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid(dir.path(), "good.qcow2");
    let img = mutate(&good, &dir.path().join("named.qcow2"), |b| {
        // qemu writes a feature name table; give bit 5 a name in it by renaming
        // the entry for incompatible bit 0 ("dirty bit").
        let at = b[..65536]
            .windows(9)
            .position(|w| w == b"dirty bit")
            .expect("qemu wrote no feature name table");
        b[at - 1] = 5; // the bit number byte precedes the name
        b[at..at + 9].copy_from_slice(b"moon bits");
        b[79] |= 0x20;
    });
    let err = open_and_read(&img).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("moon bits"), "{err}");
}

#[test]
fn table_entries_pointing_outside_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid(dir.path(), "good.qcow2");
    let bytes = std::fs::read(&good).unwrap();
    let (l1, l2) = table_positions(&bytes);
    let len = bytes.len() as u64;

    let img = mutate(&good, &dir.path().join("l1-entry.qcow2"), |b| {
        put64(b, l1, (1 << 63) | (len + 65536).next_multiple_of(65536))
    });
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 L1 table");

    let img = mutate(&good, &dir.path().join("l1-entry-unaligned.qcow2"), |b| {
        put64(b, l1, (1 << 63) | 0x10200)
    });
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 L1 table");

    let img = mutate(&good, &dir.path().join("l2-entry.qcow2"), |b| {
        put64(b, l2, (1 << 63) | (len + 65536).next_multiple_of(65536))
    });
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 L2 table");

    let img = mutate(&good, &dir.path().join("l2-entry-unaligned.qcow2"), |b| {
        put64(b, l2, (1 << 63) | 0x30200)
    });
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 L2 table");

    let c = valid_compressed(dir.path());
    let cbytes = std::fs::read(&c).unwrap();
    let (_, cl2) = table_positions(&cbytes);
    let entry = be64(&cbytes, cl2);
    assert_ne!(entry & (1 << 62), 0, "cluster 0 is not compressed");
    let clen = cbytes.len() as u64;
    let img = mutate(&c, &dir.path().join("compressed-past-eof.qcow2"), |b| {
        // Keep the sector count, move the start past the end.
        let x = 62 - (16 - 8);
        put64(b, cl2, (entry & !((1u64 << x) - 1)) | (clen + 4096));
    });
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 L2 table");

    let img = mutate(&c, &dir.path().join("compressed-garbage.qcow2"), |b| {
        let x = 62 - (16 - 8);
        let host = (entry & ((1u64 << x) - 1)) as usize;
        for v in &mut b[host..host + 64] {
            *v = 0xff;
        }
    });
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 compressed cluster");
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid(dir.path(), "good.qcow2");
    let bytes = std::fs::read(&good).unwrap();
    let (l1, l2) = table_positions(&bytes);
    let data = (be64(&bytes, l2) & 0x00ff_ffff_ffff_fe00) as usize;
    for (name, keep, structure) in [
        ("t50", 50, "qcow2 header"),
        ("t100", 100, "qcow2 header"),
        ("t-l1", l1 + 4, "qcow2 L1 table"),
        ("t-l2", l2 + 100, "qcow2 L1 table"),
    ] {
        let img = dir.path().join(format!("{name}.qcow2"));
        std::fs::write(&img, &bytes[..keep]).unwrap();
        expect_rejected(&img, ErrorKind::Corrupt, structure);
    }
    // Cut inside the last data cluster (the tables come first in a fresh image).
    let last_data = bytes.len() - 1000;
    assert!(last_data > data);
    let img = dir.path().join("t-data.qcow2");
    std::fs::write(&img, &bytes[..last_data]).unwrap();
    expect_rejected(&img, ErrorKind::Corrupt, "qcow2 L2 table");
}

#[test]
fn backing_cycle_and_depth() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&a), "1M"]);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            p(&b),
            "1M",
        ],
    );
    // Point a back at b without qemu looking at the chain.
    run(
        "qemu-img",
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", p(&a)],
    );
    expect_rejected(&b, ErrorKind::Corrupt, "qcow2 backing chain");
    let err = Qcow2::open(&b).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");

    // A chain deeper than the limit.
    let mut prev = dir.path().join("d0.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&prev), "1M"]);
    for i in 1..=imgsan::disk::qcow2::MAX_CHAIN_DEPTH {
        let next = dir.path().join(format!("d{i}.qcow2"));
        let base = prev.file_name().unwrap().to_str().unwrap();
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                base,
                "-F",
                "qcow2",
                "-u",
                p(&next),
                "1M",
            ],
        );
        prev = next;
    }
    expect_rejected(&prev, ErrorKind::Corrupt, "qcow2 backing chain");
}

/// Every single-byte change in the header, with a few values each, either opens
/// and reads or fails with an error: never a panic, never a hang.
#[test]
fn every_header_byte_mutated_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = valid(dir.path(), "good.qcow2");
    let bytes = std::fs::read(&good).unwrap();
    for i in 0..112 {
        for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff, bytes[i] ^ 0x10] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(q) = Qcow2::from_bytes(b) {
                let cap = q.len().min(8 << 20);
                let _ = q.map(0, cap);
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < cap {
                    let n = (cap - off).min(1 << 20) as usize;
                    if q.read_at(off, &mut buf[..n]).is_err() {
                        break;
                    }
                    off += n as u64;
                }
            }
        }
    }
}
