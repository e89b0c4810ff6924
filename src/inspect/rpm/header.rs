//! Decodes one RPM header blob as the package databases store it (no lead, no
//! signature, no header magic): `il` and `dl` as big-endian u32, `il` index entries
//! of 16 bytes (tag, type, offset, count), then `dl` bytes of data store.
//!
//! It reads only the few tags inventory needs and never trusts a count or an offset:
//! each is checked against the blob's length before use. It knows nothing about
//! which database the blob came from.

use crate::error::{Error, Location, Result};

const STRUCTURE: &str = "rpm header";

/// Size of one index entry.
const ENTRY_SIZE: usize = 16;

// Tag numbers from rpm's rpmtag.h.
const RPMTAG_NAME: u32 = 1000;
const RPMTAG_VERSION: u32 = 1001;
const RPMTAG_RELEASE: u32 = 1002;
const RPMTAG_EPOCH: u32 = 1003;
const RPMTAG_SUMMARY: u32 = 1004;
const RPMTAG_INSTALLTIME: u32 = 1008;
const RPMTAG_SIZE: u32 = 1009;
const RPMTAG_VENDOR: u32 = 1011;
const RPMTAG_ARCH: u32 = 1022;
const RPMTAG_SOURCERPM: u32 = 1044;
const RPMTAG_LONGSIZE: u32 = 5009;

// Data types from rpm's rpmtag.h (rpmTagType_e).
const RPM_INT32_TYPE: u32 = 4;
const RPM_INT64_TYPE: u32 = 5;
const RPM_STRING_TYPE: u32 = 6;
const RPM_STRING_ARRAY_TYPE: u32 = 8;
const RPM_I18NSTRING_TYPE: u32 = 9;

/// rpm itself refuses headers with more index entries or data than this
/// (`HEADER_TAGS_MAX`, `HEADER_DATA_MAX` in header_internal.h); so do we, which also
/// bounds the work a hostile blob can ask for.
const HEADER_TAGS_MAX: u32 = 0xffff;
const HEADER_DATA_MAX: u32 = 0x0fff_ffff;

/// The inventory facts of one installed package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    /// Absent for the `gpg-pubkey` pseudo-packages rpm keeps for imported keys.
    pub arch: Option<String>,
    pub vendor: Option<String>,
    /// Seconds since the epoch (RPMTAG_INSTALLTIME).
    pub install_time: Option<u32>,
    /// Installed size in bytes (RPMTAG_LONGSIZE, else RPMTAG_SIZE).
    pub size: Option<u64>,
    pub summary: Option<String>,
    pub source_rpm: Option<String>,
}

impl Package {
    /// `name-[epoch:]version-release.arch`, as `rpm -q` prints it (without the
    /// epoch, which `rpm -q` omits too).
    pub fn nevra(&self) -> String {
        match &self.arch {
            Some(a) => format!("{}-{}-{}.{}", self.name, self.version, self.release, a),
            None => format!("{}-{}-{}", self.name, self.version, self.release),
        }
    }
}

struct Entry {
    tag: u32,
    ty: u32,
    offset: u32,
    count: u32,
    /// Index of the entry, for error locations.
    index: usize,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes a header blob. This is also the fuzzing entry point for the header
/// format: any input returns `Ok` or a typed error, never panics.
pub fn parse(blob: &[u8]) -> Result<Package> {
    let len = blob.len();
    let il = be32(blob, 0).ok_or_else(|| corrupt(0, "shorter than the 8-byte preamble"))?;
    let dl = be32(blob, 4).ok_or_else(|| corrupt(4, "shorter than the 8-byte preamble"))?;
    if il == 0 || il > HEADER_TAGS_MAX {
        return Err(corrupt(0, format!("index entry count {il} out of range")));
    }
    if dl > HEADER_DATA_MAX {
        return Err(corrupt(4, format!("data length {dl} out of range")));
    }
    // Both fit in usize: il < 2^16, dl < 2^28.
    let index_len = il as usize * ENTRY_SIZE;
    let data_start = 8 + index_len;
    let data_end = data_start + dl as usize;
    if data_end > len {
        return Err(corrupt(
            4,
            format!(
                "index ({il} entries) and data ({dl} bytes) need {data_end} bytes, blob has {len}"
            ),
        ));
    }
    let data = &blob[data_start..data_end];

    let mut entries = Vec::with_capacity(il as usize);
    for i in 0..il as usize {
        let at = 8 + i * ENTRY_SIZE;
        // In bounds: at + 16 <= data_start <= len.
        let field = |k: usize| be32(blob, at + 4 * k).unwrap_or(0);
        entries.push(Entry {
            tag: field(0),
            ty: field(1),
            offset: field(2),
            count: field(3),
            index: i,
        });
    }

    let find = |tag: u32| entries.iter().find(|e| e.tag == tag);
    let string = |tag: u32| -> Result<Option<String>> {
        match find(tag) {
            Some(e) => first_string(e, data, data_start).map(Some),
            None => Ok(None),
        }
    };
    let int32 = |tag: u32| -> Result<Option<u32>> {
        match find(tag) {
            Some(e) => first_int(e, data, data_start, RPM_INT32_TYPE, 4).map(|v| Some(v as u32)),
            None => Ok(None),
        }
    };

    let name = string(RPMTAG_NAME)?.ok_or_else(|| corrupt(0, "no NAME tag"))?;
    let version = string(RPMTAG_VERSION)?.ok_or_else(|| corrupt(0, "no VERSION tag"))?;
    let release = string(RPMTAG_RELEASE)?.ok_or_else(|| corrupt(0, "no RELEASE tag"))?;
    let size = match find(RPMTAG_LONGSIZE) {
        Some(e) => Some(first_int(e, data, data_start, RPM_INT64_TYPE, 8)?),
        None => int32(RPMTAG_SIZE)?.map(u64::from),
    };
    Ok(Package {
        name,
        epoch: int32(RPMTAG_EPOCH)?,
        version,
        release,
        arch: string(RPMTAG_ARCH)?,
        vendor: string(RPMTAG_VENDOR)?,
        install_time: int32(RPMTAG_INSTALLTIME)?,
        size,
        summary: string(RPMTAG_SUMMARY)?,
        source_rpm: string(RPMTAG_SOURCERPM)?,
    })
}

fn entry_location(e: &Entry) -> u64 {
    (8 + e.index * ENTRY_SIZE) as u64
}

/// The first string of a STRING, STRING_ARRAY or I18NSTRING entry.
fn first_string(e: &Entry, data: &[u8], data_start: usize) -> Result<String> {
    if !matches!(
        e.ty,
        RPM_STRING_TYPE | RPM_STRING_ARRAY_TYPE | RPM_I18NSTRING_TYPE
    ) {
        return Err(corrupt(
            entry_location(e),
            format!("tag {} has type {}, expected a string type", e.tag, e.ty),
        ));
    }
    if e.count == 0 {
        return Err(corrupt(
            entry_location(e),
            format!("tag {} has count 0", e.tag),
        ));
    }
    let start = e.offset as usize;
    let rest = data.get(start..).ok_or_else(|| {
        corrupt(
            entry_location(e),
            format!("tag {} offset {} past the data store", e.tag, e.offset),
        )
    })?;
    let nul = rest.iter().position(|&b| b == 0).ok_or_else(|| {
        corrupt(
            (data_start + start) as u64,
            format!("tag {} string is not NUL-terminated", e.tag),
        )
    })?;
    Ok(String::from_utf8_lossy(&rest[..nul]).into_owned())
}

/// The first value of an INT32 or INT64 entry of the expected type.
fn first_int(e: &Entry, data: &[u8], data_start: usize, ty: u32, width: usize) -> Result<u64> {
    if e.ty != ty {
        return Err(corrupt(
            entry_location(e),
            format!("tag {} has type {}, expected {}", e.tag, e.ty, ty),
        ));
    }
    if e.count == 0 {
        return Err(corrupt(
            entry_location(e),
            format!("tag {} has count 0", e.tag),
        ));
    }
    let start = e.offset as usize;
    let bytes = start
        .checked_add(width)
        .and_then(|end| data.get(start..end))
        .ok_or_else(|| {
            corrupt(
                (data_start as u64).saturating_add(u64::from(e.offset)),
                format!("tag {} value past the data store", e.tag),
            )
        })?;
    Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

fn corrupt(offset: u64, detail: impl Into<String>) -> Error {
    Error::corrupt(STRUCTURE, Location::Byte(offset), detail)
}

/// Test helper and documentation of the format: builds a header blob holding the
/// given (tag, type, data) entries. Not used by the readers.
#[cfg(test)]
pub(crate) fn build(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for (tag, ty, count, bytes) in entries {
        let align = match *ty {
            RPM_INT32_TYPE => 4,
            RPM_INT64_TYPE => 8,
            _ => 1,
        };
        while !data.len().is_multiple_of(align) {
            data.push(0);
        }
        index.extend_from_slice(&tag.to_be_bytes());
        index.extend_from_slice(&ty.to_be_bytes());
        index.extend_from_slice(&(data.len() as u32).to_be_bytes());
        index.extend_from_slice(&count.to_be_bytes());
        data.extend_from_slice(bytes);
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
    blob.extend_from_slice(&index);
    blob.extend_from_slice(&data);
    blob
}

#[cfg(test)]
pub(crate) fn sample(name: &str, version: &str, install_time: u32) -> Vec<u8> {
    let s = |v: &str| {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    };
    build(&[
        (RPMTAG_NAME, RPM_STRING_TYPE, 1, s(name)),
        (RPMTAG_VERSION, RPM_STRING_TYPE, 1, s(version)),
        (RPMTAG_RELEASE, RPM_STRING_TYPE, 1, s("1.el7")),
        (RPMTAG_SUMMARY, RPM_I18NSTRING_TYPE, 1, s("A test package")),
        (
            RPMTAG_INSTALLTIME,
            RPM_INT32_TYPE,
            1,
            install_time.to_be_bytes().to_vec(),
        ),
        (RPMTAG_EPOCH, RPM_INT32_TYPE, 1, 2u32.to_be_bytes().to_vec()),
        (RPMTAG_ARCH, RPM_STRING_TYPE, 1, s("x86_64")),
        (
            RPMTAG_LONGSIZE,
            RPM_INT64_TYPE,
            1,
            5_000_000_000u64.to_be_bytes().to_vec(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn decodes_the_inventory_tags() {
        let p = parse(&sample("bash", "4.2.46", 1_524_000_000)).unwrap();
        assert_eq!(p.name, "bash");
        assert_eq!(p.version, "4.2.46");
        assert_eq!(p.release, "1.el7");
        assert_eq!(p.epoch, Some(2));
        assert_eq!(p.arch.as_deref(), Some("x86_64"));
        assert_eq!(p.install_time, Some(1_524_000_000));
        assert_eq!(p.size, Some(5_000_000_000));
        assert_eq!(p.summary.as_deref(), Some("A test package"));
        assert_eq!(p.vendor, None);
        assert_eq!(p.nevra(), "bash-4.2.46-1.el7.x86_64");
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let blob = sample("bash", "4.2.46", 1);
        for cut in 0..blob.len() {
            let e = parse(&blob[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
        }
    }

    #[test]
    fn huge_counts_are_refused_before_any_allocation() {
        let mut blob = sample("bash", "1", 1);
        blob[0..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert!(parse(&blob)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        let mut blob = sample("bash", "1", 1);
        blob[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(parse(&blob)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn offsets_past_the_data_and_unterminated_strings_are_refused() {
        let mut blob = sample("bash", "1", 1);
        // Entry 0 (NAME) offset field is at 8 + 8.
        blob[16..20].copy_from_slice(&0xffff_0000u32.to_be_bytes());
        let e = parse(&blob).unwrap_err();
        assert!(e.to_string().contains("past the data store"), "{e}");

        let blob = build(&[(RPMTAG_NAME, RPM_STRING_TYPE, 1, b"bash".to_vec())]);
        let e = parse(&blob).unwrap_err();
        assert!(e.to_string().contains("NUL-terminated"), "{e}");
    }

    #[test]
    fn wrong_types_are_refused() {
        let blob = build(&[(RPMTAG_NAME, RPM_INT32_TYPE, 1, vec![0, 0, 0, 1])]);
        let e = parse(&blob).unwrap_err();
        assert!(e.to_string().contains("expected a string type"), "{e}");
    }

    #[test]
    fn mutated_headers_never_panic() {
        let blob = sample("openssh-server", "7.4p1", 1_600_000_000);
        for i in 0..blob.len() {
            for v in [0u8, 0xff, 0x7f, 0x80, 1] {
                let mut b = blob.clone();
                b[i] = v;
                let _ = parse(&b);
            }
        }
    }
}
