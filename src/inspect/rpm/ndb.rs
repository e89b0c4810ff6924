//! Reads the blobs of rpm's NDB package store, `Packages.db` (rpm 4.16+, the
//! default on SUSE). Layout (rpm's lib/backend/ndb/rpmpkg.c):
//!
//! - a 32-byte header: magic `RpmP`, version 0, generation, `slotnpages`,
//!   next package index; all little-endian u32;
//! - `slotnpages` pages of 4096 bytes holding 16-byte slots (magic `Slot`, package
//!   index, block offset, block count); the header takes the first two slots; a
//!   slot with block offset 0 is free;
//! - blobs at `blkoff * 16`, `blkcnt` blocks of 16 bytes: a 16-byte head (magic
//!   `BlbS`, package index, timestamp, length), the blob, zero padding, and a
//!   12-byte tail (Adler-32 of everything before it, length, magic `BlbE`).
//!
//! It knows nothing about rpm headers: blobs come back as opaque bytes.

use crate::error::{Error, Location, Result};
use crate::inspect::Warning;

const STRUCTURE: &str = "rpm ndb Packages.db";

const fn tag(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}
const PKGDB_MAGIC: u32 = tag(b"RpmP");
const SLOT_MAGIC: u32 = tag(b"Slot");
const BLOBHEAD_MAGIC: u32 = tag(b"BlbS");
const BLOBTAIL_MAGIC: u32 = tag(b"BlbE");
const PKGDB_VERSION: u32 = 0;
const PKGDB_HEADER_SIZE: usize = 32;
const SLOT_SIZE: usize = 16;
const BLK_SIZE: usize = 16;
const PAGE_SIZE: usize = 4096;
const BLOBHEAD_SIZE: usize = 16;
const BLOBTAIL_SIZE: usize = 12;

/// One stored package blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub pkgidx: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct NdbContents {
    pub blobs: Vec<Blob>,
    pub warnings: Vec<Warning>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Whether `bytes` starts with the NDB package store magic.
pub fn is_ndb(bytes: &[u8]) -> bool {
    le32(bytes, 0) == Some(PKGDB_MAGIC)
}

/// Adler-32 (RFC 1950), which the blob tail carries.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the largest run for which the sums cannot overflow u32.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Reads every occupied slot's blob, in slot order. A bad header or slot table
/// fails the read (rpm refuses such a database too); a bad blob is skipped with a
/// warning. This is also the fuzzing entry point for the format.
pub fn read(bytes: &[u8], file: &str) -> Result<NdbContents> {
    if bytes.len() < PKGDB_HEADER_SIZE || !is_ndb(bytes) {
        return Err(Error::NotThisFormat { format: STRUCTURE });
    }
    let field = |at: usize| le32(bytes, at).unwrap_or(0);
    let version = field(4);
    if version != PKGDB_VERSION {
        return Err(Error::unsupported(format!(
            "rpm ndb Packages.db version {version}"
        )));
    }
    let slotnpages = field(12) as usize;
    let slot_area = slotnpages
        .checked_mul(PAGE_SIZE)
        .filter(|&n| n > 0 && n <= bytes.len())
        .ok_or_else(|| {
            Error::corrupt(
                STRUCTURE,
                Location::Byte(12),
                format!(
                    "{slotnpages} slot pages do not fit in a file of {} bytes",
                    bytes.len()
                ),
            )
        })?;
    let file_blks = bytes.len() / BLK_SIZE;
    // Blobs live after the slot pages.
    let min_blkoff = slot_area / BLK_SIZE;

    let mut out = NdbContents::default();
    // Valid blobs never overlap, so together they fit in the file; a hostile
    // store pointing many slots at one large blob is cut off here.
    let mut total = 0usize;
    for at in (PKGDB_HEADER_SIZE..slot_area).step_by(SLOT_SIZE) {
        if field(at) != SLOT_MAGIC {
            return Err(Error::corrupt(
                STRUCTURE,
                Location::Byte(at as u64),
                "slot without its magic",
            ));
        }
        let pkgidx = field(at + 4);
        let blkoff = field(at + 8) as usize;
        let blkcnt = field(at + 12) as usize;
        if blkoff == 0 {
            continue; // free slot
        }
        let warn = |msg: String| Warning::in_file(file, format!("slot at {at:#x}: {msg}"));
        if pkgidx == 0 || blkcnt == 0 || blkoff < min_blkoff {
            out.warnings.push(warn(format!(
                "bad slot (package {pkgidx}, block {blkoff}, {blkcnt} blocks)"
            )));
            continue;
        }
        if blkoff.checked_add(blkcnt).is_none_or(|end| end > file_blks) {
            out.warnings.push(warn(format!(
                "blob at block {blkoff} ({blkcnt} blocks) runs past the end of the file"
            )));
            continue;
        }
        if total + blkcnt * BLK_SIZE > bytes.len() {
            out.warnings.push(warn(
                "blobs add up to more than the file: slots share blocks".to_string(),
            ));
            continue;
        }
        match read_blob(bytes, pkgidx, blkoff, blkcnt) {
            Ok(data) => {
                total += blkcnt * BLK_SIZE;
                out.blobs.push(Blob { pkgidx, data })
            }
            Err(e) => out.warnings.push(warn(e.to_string())),
        }
    }
    Ok(out)
}

fn read_blob(bytes: &[u8], pkgidx: u32, blkoff: usize, blkcnt: usize) -> Result<Vec<u8>> {
    // The caller checked that blkoff + blkcnt lies inside the file.
    let start = blkoff * BLK_SIZE;
    let area = &bytes[start..start + blkcnt * BLK_SIZE];
    let corrupt = |d: String| Error::corrupt(STRUCTURE, Location::Byte(start as u64), d);
    if area.len() < BLOBHEAD_SIZE + BLOBTAIL_SIZE {
        return Err(corrupt(format!("{blkcnt} blocks cannot hold a blob")));
    }
    let f = |at: usize| le32(area, at).unwrap_or(0);
    if f(0) != BLOBHEAD_MAGIC {
        return Err(corrupt("blob head without its magic".into()));
    }
    if f(4) != pkgidx {
        return Err(corrupt(format!(
            "blob belongs to package {}, slot says {pkgidx}",
            f(4)
        )));
    }
    let bloblen = f(12) as usize;
    let need = (BLOBHEAD_SIZE + BLOBTAIL_SIZE)
        .checked_add(bloblen)
        .map(|n| n.div_ceil(BLK_SIZE));
    if need != Some(blkcnt) {
        return Err(corrupt(format!(
            "blob length {bloblen} does not match {blkcnt} blocks"
        )));
    }
    let tail = area.len() - BLOBTAIL_SIZE;
    if f(tail + 8) != BLOBTAIL_MAGIC {
        return Err(corrupt("blob tail without its magic".into()));
    }
    if f(tail + 4) as usize != bloblen {
        return Err(corrupt("blob head and tail disagree on the length".into()));
    }
    let stored = f(tail);
    let computed = adler32(&area[..tail]);
    if stored != computed {
        return Err(Error::checksum(
            STRUCTURE,
            Location::Byte(start as u64),
            stored.into(),
            computed.into(),
        ));
    }
    Ok(area[BLOBHEAD_SIZE..BLOBHEAD_SIZE + bloblen].to_vec())
}

/// Test helper: writes a package store holding `blobs` (package index, bytes) the
/// way rpm lays one out, for the unit tests' damage cases. The integration tests
/// check the reader against stores written by rpm's own rpmpkg.c instead.
#[cfg(test)]
pub(crate) fn build(blobs: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let nslots = blobs.len() + PKGDB_HEADER_SIZE / SLOT_SIZE;
    let slotnpages = nslots.div_ceil(PAGE_SIZE / SLOT_SIZE).max(1);
    let mut out = vec![0u8; slotnpages * PAGE_SIZE];
    let put = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut out, 0, PKGDB_MAGIC);
    put(&mut out, 8, 1);
    put(&mut out, 12, slotnpages as u32);
    put(
        &mut out,
        16,
        blobs.iter().map(|b| b.0).max().unwrap_or(0) + 1,
    );
    for at in (PKGDB_HEADER_SIZE..out.len()).step_by(SLOT_SIZE) {
        put(&mut out, at, SLOT_MAGIC);
    }
    for (i, (pkgidx, data)) in blobs.iter().enumerate() {
        let blkcnt = (BLOBHEAD_SIZE + data.len() + BLOBTAIL_SIZE).div_ceil(BLK_SIZE);
        let blkoff = out.len() / BLK_SIZE;
        let mut blob = vec![0u8; blkcnt * BLK_SIZE];
        put(&mut blob, 0, BLOBHEAD_MAGIC);
        put(&mut blob, 4, *pkgidx);
        put(&mut blob, 8, 1_700_000_000);
        put(&mut blob, 12, data.len() as u32);
        blob[BLOBHEAD_SIZE..BLOBHEAD_SIZE + data.len()].copy_from_slice(data);
        let tail = blob.len() - BLOBTAIL_SIZE;
        let adl = adler32(&blob[..tail]);
        put(&mut blob, tail, adl);
        put(&mut blob, tail + 4, data.len() as u32);
        put(&mut blob, tail + 8, BLOBTAIL_MAGIC);
        out.extend_from_slice(&blob);
        let slot = PKGDB_HEADER_SIZE + i * SLOT_SIZE;
        put(&mut out, slot + 4, *pkgidx);
        put(&mut out, slot + 8, blkoff as u32);
        put(&mut out, slot + 12, blkcnt as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn blobs() -> Vec<(u32, Vec<u8>)> {
        vec![(1, b"first".to_vec()), (7, vec![0xab; 5000]), (3, vec![])]
    }

    #[test]
    fn adler32_matches_the_rfc_1950_example() {
        // RFC 1950's reference value for "Wikipedia" is widely quoted: 0x11E60398.
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
    }

    #[test]
    fn reads_back_what_the_layout_describes() {
        let db = build(&blobs());
        let got = read(&db, "Packages.db").unwrap();
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        let want: Vec<Blob> = blobs()
            .into_iter()
            .map(|(pkgidx, data)| Blob { pkgidx, data })
            .collect();
        assert_eq!(got.blobs, want);
    }

    #[test]
    fn a_damaged_blob_is_skipped_with_a_checksum_warning() {
        let mut db = build(&blobs());
        // First blob's data starts right after the slot page and the 16-byte head.
        db[PAGE_SIZE + BLOBHEAD_SIZE] ^= 0xff;
        let got = read(&db, "Packages.db").unwrap();
        assert_eq!(got.blobs.len(), 2);
        assert!(
            got.warnings[0].message.contains("checksum"),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn header_errors_are_typed() {
        assert_eq!(
            read(b"nothing here at all, not ndb....", "x")
                .unwrap_err()
                .kind(),
            ErrorKind::NotThisFormat
        );
        let mut db = build(&blobs());
        db[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(read(&db, "x").unwrap_err().kind(), ErrorKind::Corrupt);
        let mut db = build(&blobs());
        db[4] = 1;
        assert_eq!(read(&db, "x").unwrap_err().kind(), ErrorKind::Unsupported);
        let mut db = build(&blobs());
        db[PKGDB_HEADER_SIZE] = b'X';
        assert_eq!(read(&db, "x").unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn slots_pointing_outside_the_file_are_skipped() {
        let mut db = build(&blobs());
        let slot = PKGDB_HEADER_SIZE;
        db[slot + 8..slot + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let got = read(&db, "x").unwrap();
        assert_eq!(got.blobs.len(), 2);
        assert_eq!(got.warnings.len(), 1);
    }

    #[test]
    fn slots_sharing_one_blob_cannot_multiply_it() {
        let big = vec![0x5a; 20_000];
        let mut db = build(&[(1, big)]);
        // Copy slot 0 into the next 200 slots, all naming package 1's blocks.
        let slot0: Vec<u8> = db[PKGDB_HEADER_SIZE..PKGDB_HEADER_SIZE + SLOT_SIZE].to_vec();
        for i in 1..=200 {
            let at = PKGDB_HEADER_SIZE + i * SLOT_SIZE;
            db[at..at + SLOT_SIZE].copy_from_slice(&slot0);
        }
        let got = read(&db, "x").unwrap();
        let bytes: usize = got.blobs.iter().map(|b| b.data.len()).sum();
        assert!(
            bytes <= db.len(),
            "{bytes} bytes from a {}-byte file",
            db.len()
        );
        assert!(!got.warnings.is_empty());
    }

    #[test]
    fn mutated_stores_never_panic() {
        let db = build(&blobs());
        for i in (0..db.len()).step_by(7) {
            for v in [0u8, 0xff, 0x80, 1] {
                let mut b = db.clone();
                b[i] = v;
                let _ = read(&b, "x");
            }
        }
    }
}
