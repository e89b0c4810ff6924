//! Reads every key/value pair of a Berkeley DB Hash database, the format of rpm's
//! `Packages` file up to rpm 4.15 (CentOS/RHEL 5 to 8). Only what rpm databases use
//! is supported: on-page items (H_KEYDATA) and values on overflow pages
//! (H_OFFPAGE). Duplicate sets, encryption and page checksums are refused or
//! skipped with a warning; rpm never writes them.
//!
//! Layout (Berkeley DB's dbinc/db_page.h): page 0 is the hash metadata page; every
//! other page starts with a 26-byte header (lsn, pgno, prev_pgno, next_pgno,
//! entries, hf_offset, level, type) followed by `entries` u16 offsets to items
//! stored from the end of the page downwards. Keys and values alternate. Buckets
//! map to pages through the `spares` table; a bucket's page chain continues through
//! `next_pgno`. Integers are in the byte order of the machine that wrote the file;
//! the metadata magic tells which.
//!
//! It knows nothing about rpm headers: values come back as opaque bytes.

use crate::error::{Error, Location, Result};
use crate::inspect::Warning;

const STRUCTURE: &str = "Berkeley DB hash";
const HASH_MAGIC: u32 = 0x0006_1561;
const BTREE_MAGIC: u32 = 0x0005_3162;
/// Size of the generic page header (`SIZEOF_PAGE`).
const PAGE_HEADER: usize = 26;

// Page types (db_page.h).
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;

// Hash item types (db_page.h).
const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;

/// Every pair found, with whatever the walk had to skip.
#[derive(Debug, Default)]
pub struct HashContents {
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    pub warnings: Vec<Warning>,
}

/// The metadata the walk needs, in host order.
#[derive(Debug, Clone, Copy)]
struct Meta {
    big_endian: bool,
    pagesize: usize,
    last_pgno: u32,
    max_bucket: u32,
    spares: [u32; 32],
}

struct Db<'a> {
    bytes: &'a [u8],
    meta: Meta,
    file: &'a str,
}

impl Db<'_> {
    fn u16_at(&self, b: &[u8], at: usize) -> Option<u16> {
        let s = b.get(at..at.checked_add(2)?)?;
        let a = [s[0], s[1]];
        Some(if self.meta.big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }

    fn u32_at(&self, b: &[u8], at: usize) -> Option<u32> {
        read_u32(b, at, self.meta.big_endian)
    }

    /// The bytes of page `pgno`, checked to be inside the file and to carry its own
    /// number (as Berkeley DB and rpm's reader both check).
    fn page(&self, pgno: u32) -> Result<&[u8]> {
        let ps = self.meta.pagesize;
        if pgno > self.meta.last_pgno {
            return Err(self.corrupt_page(pgno, format!("past last page {}", self.meta.last_pgno)));
        }
        let start = (pgno as usize)
            .checked_mul(ps)
            .ok_or_else(|| self.corrupt_page(pgno, "page offset overflows"))?;
        let page = self
            .bytes
            .get(start..start + ps)
            .ok_or_else(|| self.corrupt_page(pgno, "page lies past the end of the file"))?;
        let stored = self.u32_at(page, 8).unwrap_or(u32::MAX);
        if stored != pgno {
            return Err(self.corrupt_page(pgno, format!("page header says it is page {stored}")));
        }
        Ok(page)
    }

    fn corrupt_page(&self, pgno: u32, detail: impl Into<String>) -> Error {
        Error::corrupt(
            STRUCTURE,
            Location::Byte((pgno as u64).saturating_mul(self.meta.pagesize as u64)),
            detail,
        )
    }
}

fn read_u32(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let a = [s[0], s[1], s[2], s[3]];
    Some(if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

fn parse_meta(bytes: &[u8]) -> Result<Meta> {
    if bytes.len() < 512 {
        return Err(Error::NotThisFormat { format: STRUCTURE });
    }
    let magic_le = read_u32(bytes, 12, false).unwrap_or(0);
    let big_endian = match magic_le {
        HASH_MAGIC => false,
        m if m == HASH_MAGIC.swap_bytes() => true,
        m if m == BTREE_MAGIC || m == BTREE_MAGIC.swap_bytes() => {
            return Err(Error::unsupported(
                "Berkeley DB Btree database (rpm Packages is a hash)",
            ))
        }
        _ => return Err(Error::NotThisFormat { format: STRUCTURE }),
    };
    let field = |at: usize| read_u32(bytes, at, big_endian).unwrap_or(0);
    let version = field(16);
    if !(8..=10).contains(&version) {
        return Err(Error::unsupported(format!(
            "Berkeley DB hash version {version}"
        )));
    }
    let pagesize = field(20);
    if !(512..=65536).contains(&pagesize) || !pagesize.is_power_of_two() {
        return Err(Error::corrupt(
            STRUCTURE,
            Location::Byte(20),
            format!("page size {pagesize} is not a power of two in 512..=65536"),
        ));
    }
    let encrypt_alg = bytes[24];
    if encrypt_alg != 0 {
        return Err(Error::unsupported("encrypted Berkeley DB database"));
    }
    let page_type = bytes[25];
    if page_type != P_HASHMETA {
        return Err(Error::corrupt(
            STRUCTURE,
            Location::Byte(25),
            format!("metadata page has type {page_type}, expected {P_HASHMETA}"),
        ));
    }
    // metaflags bit 0 is DBMETA_CHKSUM: every page then carries a checksum that
    // shifts the item index; rpm never enables it.
    if bytes[26] & 1 != 0 {
        return Err(Error::unsupported("Berkeley DB page checksums"));
    }
    let last_pgno = field(32);
    let pages_in_file = (bytes.len() / pagesize as usize) as u64;
    if u64::from(last_pgno) >= pages_in_file {
        return Err(Error::corrupt(
            STRUCTURE,
            Location::Byte(32),
            format!(
                "last page {last_pgno} but the file holds {pages_in_file} pages of {pagesize} bytes"
            ),
        ));
    }
    let max_bucket = field(72);
    if max_bucket > last_pgno {
        return Err(Error::corrupt(
            STRUCTURE,
            Location::Byte(72),
            format!("max bucket {max_bucket} exceeds last page {last_pgno}"),
        ));
    }
    let mut spares = [0u32; 32];
    for (i, s) in spares.iter_mut().enumerate() {
        *s = field(96 + 4 * i);
    }
    Ok(Meta {
        big_endian,
        pagesize: pagesize as usize,
        last_pgno,
        max_bucket,
        spares,
    })
}

/// Whether `bytes` starts like a Berkeley DB hash database (either byte order).
pub fn is_hash_db(bytes: &[u8]) -> bool {
    matches!(read_u32(bytes, 12, false), Some(m) if m == HASH_MAGIC || m == HASH_MAGIC.swap_bytes())
}

/// Reads every key/value pair, bucket by bucket. Errors in the metadata page fail
/// the whole read; a damaged bucket chain or overflow chain is skipped with a
/// warning so the rest of the database still counts. This is also the fuzzing
/// entry point for the format.
pub fn read(bytes: &[u8], file: &str) -> Result<HashContents> {
    let meta = parse_meta(bytes)?;
    let db = Db { bytes, meta, file };
    let mut out = HashContents::default();
    // Every page belongs to at most one bucket chain or one overflow chain;
    // seeing one twice is a cycle or two chains sharing pages. Refusing the second
    // visit stops loops and also bounds the bytes returned by the file's size (a
    // hostile file cannot point a thousand items at one long overflow chain).
    let mut seen = vec![false; meta.last_pgno as usize + 1];
    for bucket in 0..=meta.max_bucket {
        let bits = (u32::BITS - bucket.leading_zeros()) as usize;
        let spare = meta.spares.get(bits).copied().unwrap_or(0);
        let Some(first) = bucket.checked_add(spare) else {
            out.warnings
                .push(db.warning(format!("bucket {bucket}: page number overflows")));
            continue;
        };
        if let Err(e) = walk_bucket(&db, first, &mut seen, &mut out) {
            out.warnings
                .push(db.warning(format!("bucket {bucket}: {e}")));
        }
    }
    Ok(out)
}

impl Db<'_> {
    fn warning(&self, message: String) -> Warning {
        Warning::in_file(self.file, message)
    }
}

/// Marks a page as visited; a second visit is an error.
fn visit(db: &Db, seen: &mut [bool], pgno: u32) -> Result<()> {
    let slot = seen
        .get_mut(pgno as usize)
        .ok_or_else(|| db.corrupt_page(pgno, format!("past last page {}", db.meta.last_pgno)))?;
    if *slot {
        return Err(db.corrupt_page(
            pgno,
            "page visited twice (a cycle, or chains sharing pages)",
        ));
    }
    *slot = true;
    Ok(())
}

fn walk_bucket(db: &Db, first: u32, seen: &mut [bool], out: &mut HashContents) -> Result<()> {
    let mut pgno = first;
    loop {
        visit(db, seen, pgno)?;
        let page = db.page(pgno)?;
        let ty = page[25];
        if ty != P_HASH && ty != P_HASH_UNSORTED {
            return Err(db.corrupt_page(pgno, format!("bucket page has type {ty}")));
        }
        read_hash_page(db, pgno, page, seen, out)?;
        let next = db.u32_at(page, 16).unwrap_or(0);
        if next == 0 {
            return Ok(());
        }
        pgno = next;
    }
}

fn read_hash_page(
    db: &Db,
    pgno: u32,
    page: &[u8],
    seen: &mut [bool],
    out: &mut HashContents,
) -> Result<()> {
    let ps = db.meta.pagesize;
    let entries = db.u16_at(page, 20).unwrap_or(0) as usize;
    let index_end = PAGE_HEADER + 2 * entries;
    if index_end > ps {
        return Err(db.corrupt_page(pgno, format!("{entries} entries do not fit in the page")));
    }
    if !entries.is_multiple_of(2) {
        out.warnings.push(db.warning(format!(
            "page {pgno}: odd entry count {entries}, last key has no value"
        )));
    }
    let offset = |i: usize| db.u16_at(page, PAGE_HEADER + 2 * i).unwrap_or(0) as usize;
    for pair in 0..entries / 2 {
        let k = 2 * pair;
        let koff = offset(k);
        let voff = offset(k + 1);
        // Items grow down from the end of the page: an item ends where the previous
        // one starts.
        let kend = if k == 0 { ps } else { offset(k - 1) };
        let item = |start: usize, end: usize| -> Result<&[u8]> {
            if start < index_end || start >= end || end > ps {
                return Err(db.corrupt_page(
                    pgno,
                    format!("entry {k}: item range {start}..{end} outside {index_end}..{ps}"),
                ));
            }
            Ok(&page[start..end])
        };
        let key = match item(koff, kend).and_then(|it| item_bytes(db, pgno, it, seen)) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(e) => {
                out.warnings
                    .push(db.warning(format!("page {pgno} entry {k}: {e}")));
                continue;
            }
        };
        match item(voff, koff).and_then(|it| item_bytes(db, pgno, it, seen)) {
            Ok(Some(value)) => out.pairs.push((key, value)),
            Ok(None) => {}
            Err(e) => out
                .warnings
                .push(db.warning(format!("page {pgno} entry {}: {e}", k + 1))),
        }
    }
    Ok(())
}

/// The bytes an item stands for: inline data, or the assembled overflow chain.
/// `None` for item kinds rpm never writes (duplicates), which are skipped.
fn item_bytes(db: &Db, pgno: u32, item: &[u8], seen: &mut [bool]) -> Result<Option<Vec<u8>>> {
    match item[0] {
        H_KEYDATA => Ok(Some(item[1..].to_vec())),
        H_OFFPAGE => {
            if item.len() != 12 {
                return Err(db.corrupt_page(pgno, format!("off-page item of {} bytes", item.len())));
            }
            let first = db.u32_at(item, 4).unwrap_or(0);
            let total = db.u32_at(item, 8).unwrap_or(0);
            read_overflow(db, first, total, seen).map(Some)
        }
        H_DUPLICATE | H_OFFDUP => Err(Error::unsupported("Berkeley DB duplicate sets")),
        other => Err(db.corrupt_page(pgno, format!("unknown hash item type {other}"))),
    }
}

/// Follows an overflow chain and returns its `total` bytes.
fn read_overflow(db: &Db, first: u32, total: u32, seen: &mut [bool]) -> Result<Vec<u8>> {
    let total = total as usize;
    if total == 0 || total > db.bytes.len() {
        return Err(db.corrupt_page(first, format!("overflow length {total} out of range")));
    }
    let per_page = db.meta.pagesize - PAGE_HEADER;
    // Every page but the last is full, so a longer chain is corrupt (or a cycle).
    let max_pages = total.div_ceil(per_page);
    let mut out = Vec::with_capacity(total);
    let mut pgno = first;
    for _ in 0..max_pages {
        visit(db, seen, pgno)?;
        let page = db.page(pgno)?;
        if page[25] != P_OVERFLOW {
            return Err(db.corrupt_page(pgno, format!("overflow page has type {}", page[25])));
        }
        // For overflow pages hf_offset holds the number of bytes on the page.
        let len = db.u16_at(page, 22).unwrap_or(0) as usize;
        let want = total - out.len();
        if len == 0 || len > per_page || len > want {
            return Err(db.corrupt_page(
                pgno,
                format!("overflow page holds {len} bytes, {want} still expected"),
            ));
        }
        out.extend_from_slice(&page[PAGE_HEADER..PAGE_HEADER + len]);
        if out.len() == total {
            return Ok(out);
        }
        pgno = db.u32_at(page, 16).unwrap_or(0);
        if pgno == 0 {
            break;
        }
    }
    Err(db.corrupt_page(
        first,
        format!("overflow chain ends after {} of {total} bytes", out.len()),
    ))
}

/// Test helper: writes a small little- or big-endian hash database, one bucket per
/// pair, with values longer than a quarter page on overflow pages. It documents the
/// layout the reader expects; the real-data tests use files written by Berkeley DB.
#[cfg(test)]
pub(crate) fn build(pairs: &[(Vec<u8>, Vec<u8>)], pagesize: usize, big_endian: bool) -> Vec<u8> {
    let put16 = |p: &mut [u8], at: usize, v: u16| {
        let b = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        p[at..at + 2].copy_from_slice(&b);
    };
    let put32 = |p: &mut [u8], at: usize, v: u32| {
        let b = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        p[at..at + 4].copy_from_slice(&b);
    };
    let n = pairs.len().max(1);
    // Buckets 0..n-1 on pages 1..=n: spares[i] = 1 for all i.
    let mut pages: Vec<Vec<u8>> = vec![vec![0u8; pagesize]; n + 1];
    for (i, (k, v)) in pairs.iter().enumerate() {
        let pgno = i + 1;
        let mut items: Vec<Vec<u8>> = Vec::new();
        for data in [k, v] {
            if data.len() + 1 > pagesize / 4 {
                // Overflow chain.
                let first = pages.len() as u32;
                let chunk = pagesize - PAGE_HEADER;
                let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
                for (j, c) in chunks.iter().enumerate() {
                    let no = pages.len();
                    let mut p = vec![0u8; pagesize];
                    put32(&mut p, 8, no as u32);
                    let next = if j + 1 < chunks.len() {
                        no as u32 + 1
                    } else {
                        0
                    };
                    put32(&mut p, 16, next);
                    put16(&mut p, 22, c.len() as u16);
                    p[25] = P_OVERFLOW;
                    p[PAGE_HEADER..PAGE_HEADER + c.len()].copy_from_slice(c);
                    pages.push(p);
                }
                let mut it = vec![H_OFFPAGE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                put32(&mut it, 4, first);
                put32(&mut it, 8, data.len() as u32);
                items.push(it);
            } else {
                let mut it = vec![H_KEYDATA];
                it.extend_from_slice(data);
                items.push(it);
            }
        }
        let p = &mut pages[pgno];
        put32(p, 8, pgno as u32);
        put16(p, 20, 2);
        p[25] = P_HASH;
        let mut end = pagesize;
        for (j, it) in items.iter().enumerate() {
            let start = end - it.len();
            p[start..end].copy_from_slice(it);
            put16(p, PAGE_HEADER + 2 * j, start as u16);
            end = start;
        }
    }
    if pairs.is_empty() {
        let p = &mut pages[1];
        put32(p, 8, 1);
        p[25] = P_HASH;
    }
    let last = pages.len() as u32 - 1;
    let m = &mut pages[0];
    put32(m, 12, HASH_MAGIC);
    put32(m, 16, 9);
    put32(m, 20, pagesize as u32);
    m[25] = P_HASHMETA;
    put32(m, 32, last);
    put32(m, 72, n as u32 - 1);
    for i in 0..32 {
        put32(m, 96 + 4 * i, 1);
    }
    pages.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (1u32.to_le_bytes().to_vec(), b"small value".to_vec()),
            (
                2u32.to_le_bytes().to_vec(),
                (0..3000u32).map(|i| i as u8).collect(),
            ),
            (3u32.to_le_bytes().to_vec(), vec![7u8; 100]),
        ]
    }

    #[test]
    fn reads_inline_and_overflow_values_in_both_byte_orders() {
        for big in [false, true] {
            let db = build(&pairs(), 512, big);
            let got = read(&db, "Packages").unwrap();
            assert!(got.warnings.is_empty(), "{:?}", got.warnings);
            assert_eq!(got.pairs, pairs(), "big_endian={big}");
        }
    }

    #[test]
    fn not_a_database_is_not_this_format() {
        assert_eq!(
            read(&[0u8; 4096], "x").unwrap_err().kind(),
            ErrorKind::NotThisFormat
        );
        assert_eq!(
            read(b"short", "x").unwrap_err().kind(),
            ErrorKind::NotThisFormat
        );
    }

    #[test]
    fn a_truncated_file_is_corrupt() {
        let db = build(&pairs(), 512, false);
        let e = read(&db[..db.len() - 512], "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("last page"), "{e}");
    }

    #[test]
    fn an_overflow_cycle_is_reported_not_followed() {
        let mut db = build(&pairs(), 512, false);
        // Pair 2's value chain starts at page 4 (pages 1..=3 are buckets). Point
        // its second page back at the first.
        let second = 5 * 512;
        db[second + 16..second + 20].copy_from_slice(&4u32.to_le_bytes());
        let got = read(&db, "x").unwrap();
        assert_eq!(got.pairs.len(), 2);
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
    }

    #[test]
    fn items_sharing_an_overflow_chain_are_refused() {
        // Point pair 3's value at pair 2's overflow chain: an amplification attack
        // on a reader that copies each chain per reference.
        let mut pairs = pairs();
        pairs[2].1 = vec![9u8; 3000];
        let mut db = build(&pairs, 512, false);
        // Pair 3 (bucket page 3) value item: find its H_OFFPAGE item and retarget.
        let page3 = 3 * 512;
        let voff = u16::from_le_bytes([db[page3 + 28], db[page3 + 29]]) as usize;
        assert_eq!(db[page3 + voff], H_OFFPAGE);
        db[page3 + voff + 4..page3 + voff + 8].copy_from_slice(&4u32.to_le_bytes());
        db[page3 + voff + 8..page3 + voff + 12].copy_from_slice(&3000u32.to_le_bytes());
        let got = read(&db, "x").unwrap();
        assert_eq!(got.pairs.len(), 2);
        assert!(
            got.warnings[0].message.contains("visited twice"),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn a_bucket_chain_cycle_is_reported_not_followed() {
        let mut db = build(&pairs(), 512, false);
        // Bucket 0's page links to itself.
        db[512 + 16..512 + 20].copy_from_slice(&1u32.to_le_bytes());
        let got = read(&db, "x").unwrap();
        assert!(got
            .warnings
            .iter()
            .any(|w| w.message.contains("visited twice")));
    }

    #[test]
    fn mutated_databases_never_panic() {
        let db = build(&pairs(), 512, false);
        for i in (0..db.len()).step_by(3) {
            for v in [0u8, 0xff, 0x80, 1, 4] {
                let mut b = db.clone();
                b[i] = v;
                let _ = read(&b, "x");
            }
        }
    }
}
