//! The QCOW2 header and its extensions: parsed from the first cluster of the file
//! into a struct named after the spec's fields (docs/interop/qcow2.rst in qemu),
//! then validated once. It must not look at L1/L2 tables or data; those belong to
//! the reader.

use crate::error::{Error, Location, Result};

pub const MAGIC: &[u8; 4] = b"QFI\xfb";

/// Incompatible feature bits (header offset 72).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;

/// Autoclear feature bits (header offset 88).
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// The version 2 header is exactly this long; version 3 adds fields up to 104.
const V2_HEADER_LEN: u32 = 72;
const V3_MIN_HEADER_LEN: u32 = 104;

/// qemu's implementation limit for the active L1 table (QCOW_MAX_L1_SIZE), in bytes.
/// A bigger table is either corrupt or from a disk no real image has.
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// The spec's limit on the backing file name's length.
const MAX_BACKING_NAME: u32 = 1023;

const STRUCT: &str = "qcow2 header";
const EXT_STRUCT: &str = "qcow2 header extension";

/// How compressed clusters are encoded (header byte 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (RFC 1951) without a zlib wrapper; qemu calls it "zlib".
    Deflate,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Deflate => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// The validated header. Field names follow the spec.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: Compression,

    /// The backing file name, as stored (not resolved against any folder).
    pub backing_file: Option<Vec<u8>>,
    /// The backing file format name extension.
    pub backing_format: Option<Vec<u8>>,
    /// The external data file name extension.
    pub data_file: Option<Vec<u8>>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    pub fn dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }

    pub fn data_file_raw(&self) -> bool {
        self.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0
    }

    /// Bytes of one L2 entry (8, or 16 with extended L2 entries).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }

    /// log2 of the number of entries in one L2 table.
    pub fn l2_bits(&self) -> u32 {
        if self.extended_l2() {
            self.cluster_bits - 4
        } else {
            self.cluster_bits - 3
        }
    }

    /// Parse and validate the header at the start of `bytes` (the whole file, or
    /// at least its first cluster; `file_len` is the whole file's length).
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Header> {
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            return Err(Error::NotThisFormat { format: "qcow2" });
        }
        let need = |end: u64| -> Result<()> {
            if (bytes.len() as u64) < end {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(bytes.len() as u64),
                    format!("file ends inside the header (needs {end} bytes)"),
                ));
            }
            Ok(())
        };
        need(8)?;
        let version = be32(bytes, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(format!(
                "qcow2 header at offset 0x4: QCOW version {version} (only 2 and 3 are read)"
            )));
        }
        need(V2_HEADER_LEN as u64)?;
        let mut h = Header {
            version,
            backing_file_offset: be64(bytes, 8),
            backing_file_size: be32(bytes, 16),
            cluster_bits: be32(bytes, 20),
            size: be64(bytes, 24),
            crypt_method: be32(bytes, 32),
            l1_size: be32(bytes, 36),
            l1_table_offset: be64(bytes, 40),
            refcount_table_offset: be64(bytes, 48),
            refcount_table_clusters: be32(bytes, 56),
            nb_snapshots: be32(bytes, 60),
            snapshots_offset: be64(bytes, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: Compression::Deflate,
            backing_file: None,
            backing_format: None,
            data_file: None,
        };
        if version >= 3 {
            need(V3_MIN_HEADER_LEN as u64)?;
            h.incompatible_features = be64(bytes, 72);
            h.compatible_features = be64(bytes, 80);
            h.autoclear_features = be64(bytes, 88);
            h.refcount_order = be32(bytes, 96);
            h.header_length = be32(bytes, 100);
        }

        if !(9..=21).contains(&h.cluster_bits) {
            return Err(Error::corrupt(
                STRUCT,
                Location::Byte(20),
                format!(
                    "cluster_bits {} outside 9..=21 (512 B to 2 MiB clusters)",
                    h.cluster_bits
                ),
            ));
        }
        let cluster_size = h.cluster_size();

        match h.crypt_method {
            0 => {}
            1 => {
                return Err(Error::unsupported(
                    "qcow2 header at offset 0x20: AES encryption (crypt_method 1)",
                ))
            }
            2 => {
                return Err(Error::unsupported(
                    "qcow2 header at offset 0x20: LUKS encryption (crypt_method 2)",
                ))
            }
            m => {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(32),
                    format!("unknown crypt_method {m}"),
                ))
            }
        }

        if version >= 3 {
            if h.header_length < V3_MIN_HEADER_LEN
                || !h.header_length.is_multiple_of(8)
                || u64::from(h.header_length) > cluster_size
            {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(100),
                    format!(
                        "header_length {} is not a multiple of 8 between {V3_MIN_HEADER_LEN} and the cluster size {cluster_size}",
                        h.header_length
                    ),
                ));
            }
            need(u64::from(h.header_length))?;
            if h.refcount_order > 6 {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(96),
                    format!("refcount_order {} is above 6", h.refcount_order),
                ));
            }
        }

        // Feature bits. The feature name table (read below) lets the message name
        // an unknown bit, so extensions are parsed before the bits are judged.
        let ext_start = u64::from(h.header_length);
        let names = h.read_extensions(bytes, ext_start, file_len)?;

        let incompat = h.incompatible_features;
        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(Error::corrupt(
                STRUCT,
                Location::Byte(72),
                "the corrupt bit (incompatible feature bit 1) is set: qemu found the image inconsistent",
            ));
        }
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let bit = unknown.trailing_zeros();
            let name = names
                .iter()
                .find(|(t, b, _)| *t == 0 && u32::from(*b) == bit)
                .map(|(_, _, n)| format!(" ({n:?})"))
                .unwrap_or_default();
            return Err(Error::unsupported(format!(
                "qcow2 header at offset 0x48: unknown incompatible feature bit {bit}{name}"
            )));
        }

        // Compression type: present only when the header is long enough.
        let ctype = if h.header_length > 104 { bytes[104] } else { 0 };
        h.compression_type = match (incompat & INCOMPAT_COMPRESSION != 0, ctype) {
            (false, 0) => Compression::Deflate,
            (true, 1) => Compression::Zstd,
            (false, t) => {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(104),
                    format!("compression_type {t} without the compression type bit"),
                ))
            }
            (true, 0) => {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(104),
                    "compression type bit set but compression_type is 0 or absent",
                ))
            }
            (true, t) => {
                return Err(Error::unsupported(format!(
                    "qcow2 header at offset 0x68: compression_type {t}"
                )))
            }
        };

        if h.extended_l2() && h.cluster_bits < 14 {
            return Err(Error::corrupt(
                STRUCT,
                Location::Byte(20),
                format!(
                    "extended L2 entries need clusters of at least 16 KiB, cluster_bits is {}",
                    h.cluster_bits
                ),
            ));
        }
        if h.data_file_raw() && !h.has_data_file() {
            return Err(Error::corrupt(
                STRUCT,
                Location::Byte(88),
                "raw external data bit set without the external data file bit",
            ));
        }
        if h.has_data_file() && h.data_file.is_none() {
            return Err(Error::unsupported(
                "qcow2 header at offset 0x48: external data file bit set but no data file name extension",
            ));
        }

        // Backing file name.
        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(16),
                    format!(
                        "backing_file_size {} exceeds {MAX_BACKING_NAME}",
                        h.backing_file_size
                    ),
                ));
            }
            let start = h.backing_file_offset;
            let end = start + u64::from(h.backing_file_size);
            if end > cluster_size || end > bytes.len() as u64 {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(8),
                    format!(
                        "backing file name at {start:#x}..{end:#x} lies outside the first cluster"
                    ),
                ));
            }
            if h.backing_file_size > 0 {
                h.backing_file = Some(bytes[start as usize..end as usize].to_vec());
            }
        }

        // The active L1 table.
        let l1_bytes = u64::from(h.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(Error::corrupt(
                "qcow2 L1 table",
                Location::Byte(h.l1_table_offset),
                format!(
                    "l1_size {} entries exceeds the {MAX_L1_BYTES}-byte limit",
                    h.l1_size
                ),
            ));
        }
        let l2_span = cluster_size << h.l2_bits(); // bytes of disk per L1 entry, at most 2^55
        let l1_needed = h.size.div_ceil(l2_span);
        if l1_needed > u64::from(h.l1_size) {
            return Err(Error::corrupt(
                STRUCT,
                Location::Byte(36),
                format!(
                    "l1_size {} is too small for a {}-byte disk ({l1_needed} entries needed)",
                    h.l1_size, h.size
                ),
            ));
        }
        if h.l1_size > 0 {
            if !h.l1_table_offset.is_multiple_of(cluster_size) {
                return Err(Error::corrupt(
                    STRUCT,
                    Location::Byte(40),
                    format!(
                        "l1_table_offset {:#x} is not aligned to the cluster size",
                        h.l1_table_offset
                    ),
                ));
            }
            let end = h.l1_table_offset.checked_add(l1_bytes);
            if end.is_none_or(|e| e > file_len) || h.l1_table_offset == 0 {
                return Err(Error::corrupt(
                    "qcow2 L1 table",
                    Location::Byte(h.l1_table_offset),
                    format!(
                        "{} entries at {:#x} pass the end of the {file_len}-byte file",
                        h.l1_size, h.l1_table_offset
                    ),
                ));
            }
        }
        Ok(h)
    }

    /// Read the header extensions starting at `start`; returns the feature name
    /// table as (type, bit, name) triples.
    fn read_extensions(
        &mut self,
        bytes: &[u8],
        start: u64,
        file_len: u64,
    ) -> Result<Vec<(u8, u8, String)>> {
        let cluster_size = self.cluster_size();
        // Extensions end where the backing file name starts, else at the end of the
        // first cluster.
        let mut end = cluster_size.min(file_len).min(bytes.len() as u64);
        if self.backing_file_offset != 0 && self.backing_file_offset < end {
            end = self.backing_file_offset;
        }
        let mut names = Vec::new();
        let mut pos = start;
        loop {
            if pos + 8 > end {
                // A version 2 image may simply have no room for extensions (the
                // backing file name right after the header); anything else must
                // carry an end marker.
                if self.version == 2 || pos == end {
                    return Ok(names);
                }
                return Err(Error::corrupt(
                    EXT_STRUCT,
                    Location::Byte(pos),
                    "extension area has no end marker before the end of the header cluster",
                ));
            }
            let p = pos as usize;
            let ty = be32(bytes, p);
            let len = u64::from(be32(bytes, p + 4));
            if ty == EXT_END {
                return Ok(names);
            }
            let data_start = pos + 8;
            let data_end = data_start + len; // len < 2^32, no overflow
            if data_end > end {
                return Err(Error::corrupt(
                    EXT_STRUCT,
                    Location::Byte(pos),
                    format!("extension {ty:#010x} of {len} bytes passes the end of the header area at {end:#x}"),
                ));
            }
            let data = &bytes[data_start as usize..data_end as usize];
            match ty {
                EXT_BACKING_FORMAT => self.backing_format = Some(data.to_vec()),
                EXT_DATA_FILE => self.data_file = Some(data.to_vec()),
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48) {
                        let name_bytes = &e[2..];
                        let n = name_bytes.iter().position(|&b| b == 0).unwrap_or(46);
                        names.push((
                            e[0],
                            e[1],
                            String::from_utf8_lossy(&name_bytes[..n]).into_owned(),
                        ));
                    }
                }
                _ => {}
            }
            pos = data_start + len.next_multiple_of(8);
        }
    }
}

pub fn be32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

pub fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}
