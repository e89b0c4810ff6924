//! Partition type identifiers (GPT type GUIDs, MBR system bytes) and their names,
//! the GUID type itself, and the little byte-order helpers the table and signature
//! parsers share.
//!
//! Names are for people (`inspect`) and for coarse decisions (is this an extended
//! container, a protective entry); nothing here decides what to do with a partition's
//! contents. Unknown types keep their raw value and are named "unknown".

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A GUID as stored on disk (UEFI spec, appendix A): the first three fields are
/// little-endian, the last eight bytes are stored in order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Build from the textual form's five fields (what the specs print).
    const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }
}

impl fmt::Display for Guid {
    /// Lowercase, the way Linux and blkid print PARTUUIDs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The error of parsing a GUID's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GUID: {0:?}")]
pub struct BadGuid(pub String);

impl FromStr for Guid {
    type Err = BadGuid;

    /// Accepts the 8-4-4-4-12 form, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadGuid(s.to_string());
        let parts: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(lens).any(|(p, l)| p.len() != l) {
            return Err(bad());
        }
        let hex: String = parts.concat();
        let mut text = [0u8; 16];
        for (i, byte) in text.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        // Text order to on-disk order: swap the first three fields.
        let t = text;
        Ok(Guid([
            t[3], t[2], t[1], t[0], t[5], t[4], t[7], t[6], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15],
        ]))
    }
}

/// What a partition type means for the rest of imgsan, coarsely. The writer uses
/// this only for structure (containers, protective entries); what a partition holds
/// is decided by probing its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TypeClass {
    /// A Linux data filesystem (generic, root, /home, /srv, /var, /usr, ...).
    LinuxFs,
    Swap,
    Lvm,
    Raid,
    /// LUKS or plain dm-crypt.
    Crypt,
    /// BIOS boot (GRUB's core.img on GPT).
    BiosBoot,
    /// EFI system partition.
    Efi,
    /// Linux extended boot (XBOOTLDR).
    Xbootldr,
    /// Windows and other FAT/NTFS data.
    Windows,
    /// An MBR extended partition: a container of logical partitions, not a volume.
    Extended,
    /// The 0xEE entry of a protective MBR: it announces GPT, it is not a volume.
    Protective,
    /// Reserved or vendor types imgsan has no use for.
    Other,
    /// Not in imgsan's list.
    Unknown,
}

/// A partition's type: a name, the raw on-disk value as text, and a class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartType {
    /// A human name ("Linux filesystem", "EFI system"); "unknown" when not listed.
    pub name: &'static str,
    /// The raw value: the type GUID (lowercase) for GPT, "0x83" for MBR.
    pub raw: String,
    pub class: TypeClass,
}

/// GPT type GUIDs with names (util-linux and the Discoverable Partitions
/// Specification agree on these values).
const GPT_TYPES: &[(Guid, &str, TypeClass)] = {
    use TypeClass::*;
    const fn g(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        Guid::from_fields(a, b, c, d)
    }
    &[
        (
            g(
                0x0FC63DAF,
                0x8483,
                0x4772,
                [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
            ),
            "Linux filesystem",
            LinuxFs,
        ),
        (
            g(
                0x0657FD6D,
                0xA4AB,
                0x43C4,
                [0x84, 0xE5, 0x09, 0x33, 0xC8, 0x4B, 0x4F, 0x4F],
            ),
            "Linux swap",
            Swap,
        ),
        (
            g(
                0xE6D6D379,
                0xF507,
                0x44C2,
                [0xA2, 0x3C, 0x23, 0x8F, 0x2A, 0x3D, 0xF9, 0x28],
            ),
            "Linux LVM",
            Lvm,
        ),
        (
            g(
                0xA19D880F,
                0x05FC,
                0x4D3B,
                [0xA0, 0x06, 0x74, 0x3F, 0x0F, 0x84, 0x91, 0x1E],
            ),
            "Linux RAID",
            Raid,
        ),
        (
            g(
                0x21686148,
                0x6449,
                0x6E6F,
                [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
            ),
            "BIOS boot",
            BiosBoot,
        ),
        (
            g(
                0xC12A7328,
                0xF81F,
                0x11D2,
                [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
            ),
            "EFI system",
            Efi,
        ),
        (
            g(
                0xEBD0A0A2,
                0xB9E5,
                0x4433,
                [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
            ),
            "Microsoft basic data",
            Windows,
        ),
        (
            g(
                0xE3C9E316,
                0x0B5C,
                0x4DB8,
                [0x81, 0x7D, 0xF9, 0x2D, 0xF0, 0x02, 0x15, 0xAE],
            ),
            "Microsoft reserved",
            Windows,
        ),
        (
            g(
                0xDE94BBA4,
                0x06D1,
                0x4D40,
                [0xA1, 0x6A, 0xBF, 0xD5, 0x01, 0x79, 0xD6, 0xAC],
            ),
            "Windows recovery environment",
            Windows,
        ),
        (
            g(
                0x4F68BCE3,
                0xE8CD,
                0x4DB1,
                [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
            ),
            "Linux root (x86-64)",
            LinuxFs,
        ),
        (
            g(
                0x44479540,
                0xF297,
                0x41B2,
                [0x9A, 0xF7, 0xD1, 0x31, 0xD5, 0xF0, 0x45, 0x8A],
            ),
            "Linux root (x86)",
            LinuxFs,
        ),
        (
            g(
                0xB921B045,
                0x1DF0,
                0x41C3,
                [0xAF, 0x44, 0x4C, 0x6F, 0x28, 0x0D, 0x3F, 0xAE],
            ),
            "Linux root (ARM-64)",
            LinuxFs,
        ),
        (
            g(
                0x8484680C,
                0x9521,
                0x48C6,
                [0x9C, 0x11, 0xB0, 0x72, 0x06, 0x56, 0xF6, 0x9E],
            ),
            "Linux /usr (x86-64)",
            LinuxFs,
        ),
        (
            g(
                0x933AC7E1,
                0x2EB4,
                0x4F13,
                [0xB8, 0x44, 0x0E, 0x14, 0xE2, 0xAE, 0xF9, 0x15],
            ),
            "Linux /home",
            LinuxFs,
        ),
        (
            g(
                0x3B8F8425,
                0x20E0,
                0x4F3B,
                [0x90, 0x7F, 0x1A, 0x25, 0xA7, 0x6F, 0x98, 0xE8],
            ),
            "Linux /srv",
            LinuxFs,
        ),
        (
            g(
                0x4D21B016,
                0xB534,
                0x45C2,
                [0xA9, 0xFB, 0x5C, 0x16, 0xE0, 0x91, 0xFD, 0x2D],
            ),
            "Linux /var",
            LinuxFs,
        ),
        (
            g(
                0x7EC6F557,
                0x3BC5,
                0x4ACA,
                [0xB2, 0x93, 0x16, 0xEF, 0x5D, 0xF6, 0x39, 0xD1],
            ),
            "Linux /var/tmp",
            LinuxFs,
        ),
        (
            g(
                0xBC13C2FF,
                0x59E6,
                0x4262,
                [0xA3, 0x52, 0xB2, 0x75, 0xFD, 0x6F, 0x71, 0x72],
            ),
            "Linux extended boot (XBOOTLDR, /boot)",
            Xbootldr,
        ),
        (
            g(
                0x8DA63339,
                0x0007,
                0x60C0,
                [0xC4, 0x36, 0x08, 0x3A, 0xC8, 0x23, 0x09, 0x08],
            ),
            "Linux reserved",
            Other,
        ),
        (
            g(
                0xCA7D7CCB,
                0x63ED,
                0x4C53,
                [0x86, 0x1C, 0x17, 0x42, 0x53, 0x60, 0x59, 0xCC],
            ),
            "Linux LUKS",
            Crypt,
        ),
        (
            g(
                0x7FFEC5C9,
                0x2D00,
                0x49B7,
                [0x89, 0x41, 0x3E, 0xA1, 0x0A, 0x55, 0x86, 0xB7],
            ),
            "Linux plain dm-crypt",
            Crypt,
        ),
        (
            g(
                0x9E1A2D38,
                0xC612,
                0x4316,
                [0xAA, 0x26, 0x8B, 0x49, 0x52, 0x1E, 0x5A, 0x8B],
            ),
            "PowerPC PReP boot",
            Other,
        ),
    ]
};

/// MBR system indicator bytes with names.
const MBR_TYPES: &[(u8, &str, TypeClass)] = {
    use TypeClass::*;
    &[
        (0x01, "FAT12", Windows),
        (0x04, "FAT16 <32M", Windows),
        (0x05, "Extended", Extended),
        (0x06, "FAT16", Windows),
        (0x07, "HPFS/NTFS/exFAT", Windows),
        (0x0b, "W95 FAT32", Windows),
        (0x0c, "W95 FAT32 (LBA)", Windows),
        (0x0e, "W95 FAT16 (LBA)", Windows),
        (0x0f, "W95 extended (LBA)", Extended),
        (0x27, "Hidden NTFS WinRE", Windows),
        (0x41, "PPC PReP boot", Other),
        (0x82, "Linux swap", Swap),
        (0x83, "Linux", LinuxFs),
        (0x85, "Linux extended", Extended),
        (0x8e, "Linux LVM", Lvm),
        (0xa5, "FreeBSD", Other),
        (0xea, "Linux extended boot", Xbootldr),
        (0xee, "GPT protective", Protective),
        (0xef, "EFI system", Efi),
        (0xfd, "Linux RAID autodetect", Raid),
    ]
};

/// Name a GPT type GUID.
pub fn gpt_type(g: &Guid) -> PartType {
    let (name, class) = GPT_TYPES
        .iter()
        .find(|(k, _, _)| k == g)
        .map(|(_, n, c)| (*n, *c))
        .unwrap_or(("unknown", TypeClass::Unknown));
    PartType {
        name,
        raw: g.to_string(),
        class,
    }
}

/// Name an MBR system indicator byte.
pub fn mbr_type(b: u8) -> PartType {
    let (name, class) = MBR_TYPES
        .iter()
        .find(|(k, _, _)| *k == b)
        .map(|(_, n, c)| (*n, *c))
        .unwrap_or(("unknown", TypeClass::Unknown));
    PartType {
        name,
        raw: format!("{b:#04x}"),
        class,
    }
}

/// The type GUID of a name in the list, for tests and callers that build tables.
pub fn gpt_type_by_name(name: &str) -> Option<Guid> {
    GPT_TYPES
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(g, _, _)| *g)
}

pub(crate) use crate::disk::bytes::{
    array16, be16, be32, be64, le16, le32, le64, put_le32, put_le64,
};
pub use crate::disk::bytes::{uuid_bytes_to_string, uuid_string_to_bytes};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trips_and_is_mixed_endian() {
        let s = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        let g: Guid = s.parse().unwrap();
        assert_eq!(g.0[..4], [0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(g.to_string(), s);
        assert_eq!(gpt_type(&g).name, "Linux filesystem");
        let upper: Guid = s.to_uppercase().parse().unwrap();
        assert_eq!(upper, g);
        assert!("0fc63daf-8483-4772-8e79-3d69d8477de"
            .parse::<Guid>()
            .is_err());
        assert!("0fc63daf-8483-4772-8e79-3d69d8477dez"
            .parse::<Guid>()
            .is_err());
        assert!("0fc63daf84834772-8e79-3d69d8477de4-"
            .parse::<Guid>()
            .is_err());
    }

    #[test]
    fn every_listed_guid_prints_as_its_source_text() {
        // The table is written as fields; check a few against their spec text.
        for (text, name) in [
            ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI system"),
            ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
            ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
            (
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "Linux root (x86-64)",
            ),
            (
                "bc13c2ff-59e6-4262-a352-b275fd6f7172",
                "Linux extended boot (XBOOTLDR, /boot)",
            ),
        ] {
            let g = gpt_type_by_name(name).unwrap();
            assert_eq!(g.to_string(), text, "{name}");
        }
    }

    #[test]
    fn mbr_types_name_and_unknown() {
        assert_eq!(mbr_type(0x83).name, "Linux");
        assert_eq!(mbr_type(0x0f).class, TypeClass::Extended);
        let u = mbr_type(0x42);
        assert_eq!(
            (u.name, u.raw.as_str(), u.class),
            ("unknown", "0x42", TypeClass::Unknown)
        );
    }

    #[test]
    fn plain_uuid_text() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7,
        ];
        let s = uuid_bytes_to_string(&u);
        assert_eq!(s, "12345678-9abc-def0-0001-020304050607");
        assert_eq!(uuid_string_to_bytes(&s), Some(u));
        assert_eq!(uuid_string_to_bytes("1234"), None);
    }
}
