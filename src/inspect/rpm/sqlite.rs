//! Reads the header blobs of rpm's SQLite database, `rpmdb.sqlite` (rpm 4.16+, the
//! RHEL 9 family and Fedora 33+): table `Packages(hnum INTEGER PRIMARY KEY, blob
//! BLOB NOT NULL)`.
//!
//! The database is opened from memory (SQLite's deserialize interface), never from a
//! path, so nothing touches the host filesystem and the guest's bytes are never
//! modified. rpm keeps the database in WAL mode; a write-ahead log left behind by a
//! live capture holds committed transactions that are not yet in the main file, so
//! its valid committed frames are applied to the in-memory copy first (the format
//! is sqlite.org's "WAL file format": a 32-byte header, then frames of a 24-byte
//! header and one page, chained by a running checksum).

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Location, Result};
use crate::inspect::Warning;

const STRUCTURE: &str = "rpm rpmdb.sqlite";
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const WAL_MAGIC_LE: u32 = 0x377f_0682;
const WAL_MAGIC_BE: u32 = 0x377f_0683;
const WAL_HEADER: usize = 32;
const WAL_FRAME_HEADER: usize = 24;

#[derive(Debug, Default)]
pub struct SqliteContents {
    /// (hnum, header blob), in hnum order.
    pub blobs: Vec<(i64, Vec<u8>)>,
    pub warnings: Vec<Warning>,
}

/// Whether `bytes` starts with the SQLite file magic.
pub fn is_sqlite(bytes: &[u8]) -> bool {
    bytes.starts_with(SQLITE_MAGIC)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The database page size from the file header (offset 16; 1 means 65536).
fn page_size(db: &[u8]) -> Result<usize> {
    match be16(db, 16) {
        Some(1) => Ok(65536),
        Some(n) if (512..=32768).contains(&n) && n.is_power_of_two() => Ok(n as usize),
        other => Err(Error::corrupt(
            STRUCTURE,
            Location::Byte(16),
            format!("page size {other:?} invalid"),
        )),
    }
}

/// Reads every row of `Packages`. `wal` is the content of `rpmdb.sqlite-wal` when
/// the guest has one. This is also a fuzzing entry point (SQLite itself is hardened
/// against corrupt files; what we add is the WAL replay and the schema check).
pub fn read(db: &[u8], wal: Option<&[u8]>, file: &str) -> Result<SqliteContents> {
    if !is_sqlite(db) {
        return Err(Error::NotThisFormat { format: STRUCTURE });
    }
    let mut warnings = Vec::new();
    // The log's committed pages go into a copy; without a log the guest's bytes
    // are handed to SQLite as they are (it copies them once more itself).
    let mut replayed: Option<Vec<u8>> = None;
    if let Some(wal) = wal.filter(|w| !w.is_empty()) {
        let mut image = db.to_vec();
        match apply_wal(&mut image, wal) {
            Ok(0) => {}
            Ok(n) => {
                warnings.push(Warning::in_file(
                    file,
                    format!("applied {n} committed frames from the write-ahead log (captured while rpm was running?)"),
                ));
                replayed = Some(image);
            }
            Err(e) => warnings.push(Warning::in_file(
                file,
                format!("write-ahead log ignored: {e}"),
            )),
        }
    }
    let image = replayed.as_deref().unwrap_or(db);
    let blobs = query(image)?;
    Ok(SqliteContents { blobs, warnings })
}

fn query(image: &[u8]) -> Result<Vec<(i64, Vec<u8>)>> {
    let sql =
        |e: rusqlite::Error| Error::corrupt(STRUCTURE, Location::Whole, format!("sqlite: {e}"));
    let corrupt = |d: &str| Error::corrupt(STRUCTURE, Location::Whole, d.to_string());
    // Bytes 18 and 19 (read and write format versions) are 2 in WAL mode. An
    // in-memory database cannot be in WAL mode, and the log is already applied, so
    // present the image as a rollback-journal database.
    let head_len = image.len().min(100);
    let mut head = image[..head_len].to_vec();
    if head.len() >= 20 {
        head[18] = 1;
        head[19] = 1;
    }
    let reader = std::io::Read::chain(head.as_slice(), &image[head_len..]);
    let mut conn = Connection::open_with_flags(
        ":memory:",
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.deserialize_read_exact(rusqlite::MAIN_DB, reader, image.len(), true)
        .map_err(sql)?;
    // Do not run anything the guest's schema defines (views, triggers, functions in
    // defaults) and check cell sizes on every read.
    conn.execute_batch("PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON;")
        .map_err(sql)?;
    // A hostile file could make `Packages` a view with an endless recursive query;
    // insist on a plain table, and bound the work anyway.
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'Packages' COLLATE NOCASE",
            [],
            |r| r.get(0),
        )
        .ok();
    if kind.as_deref() != Some("table") {
        return Err(corrupt("no Packages table (missing, or not a plain table)"));
    }
    // One progress callback per 1000 VM instructions; a scan of a table needs a
    // few per row and a row per page at least, so this is generous.
    let budget = (image.len() as u64 / 16).max(1_000_000);
    let mut calls = 0u64;
    conn.progress_handler(
        1000,
        Some(move || {
            calls += 1;
            calls > budget
        }),
    )
    .map_err(sql)?;
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    let mut out = Vec::new();
    // Rows of a sound database fit in its file; a damaged one whose rows share
    // overflow pages could otherwise multiply the memory it costs.
    let mut total = 0usize;
    while let Some(row) = rows.next().map_err(sql)? {
        let hnum: i64 = row.get(0).map_err(sql)?;
        let blob: Vec<u8> = row.get(1).map_err(sql)?;
        total = total.saturating_add(blob.len());
        if total > image.len() {
            return Err(corrupt("rows add up to more than the file (shared pages)"));
        }
        out.push((hnum, blob));
    }
    Ok(out)
}

/// Applies the committed frames of a write-ahead log to `db` and returns how many
/// frames were applied. Frames after the last valid commit frame, or after the first
/// frame whose salt or checksum does not match, are ignored, as SQLite's own
/// recovery does.
fn apply_wal(db: &mut Vec<u8>, wal: &[u8]) -> Result<usize> {
    let bad = |at: usize, d: &str| {
        Error::corrupt(
            "sqlite write-ahead log",
            Location::Byte(at as u64),
            d.to_string(),
        )
    };
    if wal.len() < WAL_HEADER {
        return Err(bad(0, "shorter than its header"));
    }
    let magic = be32(wal, 0).unwrap_or(0);
    let big_endian_sums = match magic {
        WAL_MAGIC_LE => false,
        WAL_MAGIC_BE => true,
        _ => return Err(bad(0, "bad magic")),
    };
    let page = be32(wal, 8).unwrap_or(0) as usize;
    if page != page_size(db)? {
        return Err(bad(8, "page size differs from the database's"));
    }
    let salt = (be32(wal, 16), be32(wal, 20));
    let mut sums = checksum((0, 0), &wal[..24], big_endian_sums);
    if (Some(sums.0), Some(sums.1)) != (be32(wal, 24), be32(wal, 28)) {
        return Err(bad(24, "header checksum mismatch"));
    }
    let frame_len = WAL_FRAME_HEADER + page;
    let mut pending: Vec<(u32, usize)> = Vec::new(); // (page number, frame offset)
    let mut committed: Vec<(u32, usize)> = Vec::new();
    let mut committed_size = 0usize;
    let mut at = WAL_HEADER;
    while at + frame_len <= wal.len() {
        let fh = &wal[at..at + WAL_FRAME_HEADER];
        if (be32(fh, 8), be32(fh, 12)) != salt {
            break;
        }
        sums = checksum(sums, &fh[..8], big_endian_sums);
        sums = checksum(
            sums,
            &wal[at + WAL_FRAME_HEADER..at + frame_len],
            big_endian_sums,
        );
        if (Some(sums.0), Some(sums.1)) != (be32(fh, 16), be32(fh, 20)) {
            break;
        }
        let pgno = be32(fh, 0).unwrap_or(0);
        if pgno == 0 {
            break;
        }
        pending.push((pgno, at + WAL_FRAME_HEADER));
        let commit = be32(fh, 4).unwrap_or(0) as usize;
        if commit != 0 {
            committed.append(&mut pending);
            committed_size = commit;
        }
        at += frame_len;
    }
    if committed.is_empty() {
        return Ok(0);
    }
    let new_len = committed_size
        .checked_mul(page)
        .filter(|&n| n <= db.len().saturating_add(wal.len()))
        .ok_or_else(|| bad(0, "commit frame claims an impossible database size"))?;
    db.resize(new_len, 0);
    let mut applied = 0;
    for (pgno, data) in committed {
        let off = (pgno as usize - 1) * page;
        if let Some(dst) = db.get_mut(off..off + page) {
            dst.copy_from_slice(&wal[data..data + page]);
            applied += 1;
        }
    }
    Ok(applied)
}

/// SQLite's WAL checksum: pairs of 32-bit words summed Fibonacci-style, in the byte
/// order the log's magic selects. `data.len()` is a multiple of 8 for every use.
fn checksum(mut s: (u32, u32), data: &[u8], big_endian: bool) -> (u32, u32) {
    let word = |c: &[u8]| {
        let a = [c[0], c[1], c[2], c[3]];
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    for pair in data.chunks_exact(8) {
        s.0 = s.0.wrapping_add(word(&pair[..4]).wrapping_add(s.1));
        s.1 = s.1.wrapping_add(word(&pair[4..]).wrapping_add(s.0));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn make_db(path: &std::path::Path, wal: bool, rows: &[(i64, &[u8])]) {
        let c = Connection::open(path).unwrap();
        if wal {
            c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .unwrap();
        }
        c.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        for (h, b) in rows {
            c.execute("INSERT INTO Packages VALUES (?1, ?2)", (h, b))
                .unwrap();
        }
        // Leak the connection state to disk as it is: when `wal` is set, keep the
        // log un-checkpointed by not closing cleanly (forget keeps the files).
        if wal {
            c.execute_batch("PRAGMA wal_autocheckpoint = 0;").unwrap();
            c.execute("INSERT INTO Packages VALUES (?1, ?2)", (99, &b"late"[..]))
                .unwrap();
            std::mem::forget(c);
        }
    }

    #[test]
    fn reads_rows_in_hnum_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rpmdb.sqlite");
        make_db(&p, false, &[(2, b"two"), (1, b"one")]);
        let bytes = std::fs::read(&p).unwrap();
        let got = read(&bytes, None, "rpmdb.sqlite").unwrap();
        assert_eq!(got.blobs, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
    }

    #[test]
    fn committed_frames_in_the_wal_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rpmdb.sqlite");
        make_db(&p, true, &[(1, b"one")]);
        let bytes = std::fs::read(&p).unwrap();
        let wal = std::fs::read(dir.path().join("rpmdb.sqlite-wal")).unwrap();
        assert!(!wal.is_empty());
        let got = read(&bytes, Some(&wal), "rpmdb.sqlite").unwrap();
        let hnums: Vec<i64> = got.blobs.iter().map(|b| b.0).collect();
        assert_eq!(hnums, vec![1, 99]);
        assert_eq!(got.warnings.len(), 1);
        // A log with a broken checksum is ignored, with a warning, and the main
        // file alone is read (it may not even have the table yet).
        let mut broken = wal.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        let got = read(&bytes, Some(&broken), "rpmdb.sqlite");
        if let Ok(got) = got {
            assert!(!got.blobs.iter().any(|b| b.0 == 99));
        }
    }

    #[test]
    fn a_view_named_packages_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rpmdb.sqlite");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE VIEW Packages AS WITH RECURSIVE n(hnum, blob) AS (SELECT 1, x'00' UNION ALL SELECT hnum + 1, blob FROM n) SELECT * FROM n;",
        )
        .unwrap();
        drop(c);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            read(&bytes, None, "x").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn garbage_is_not_this_format_and_damage_is_corrupt() {
        assert_eq!(
            read(b"hello", None, "x").unwrap_err().kind(),
            ErrorKind::NotThisFormat
        );
        let mut junk = SQLITE_MAGIC.to_vec();
        junk.extend_from_slice(&[0x10, 0x00, 1, 1]);
        junk.resize(8192, 0xee);
        assert_eq!(
            read(&junk, None, "x").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
