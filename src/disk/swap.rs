//! Linux swap areas: the version 1 header (Linux `include/linux/swap.h`,
//! `union swap_header`), found by its signature in the last ten bytes of the first
//! page, and the hibernation signatures that replace it while a resume image is
//! stored in the area.
//!
//! Reading and building sit together: [`detect`] parses a header, [`SwapHeader::
//! to_page`] builds one, so the writer can re-create a swap area empty with the
//! same UUID and label (swap may hold secrets from memory, so its contents are never
//! copied). This module reads only the first page and never writes.

use crate::disk::bytes::{array16, le32, uuid_bytes_to_string};
use crate::disk::Disk;
use crate::error::{Error, Result};

/// Page sizes Linux runs with; the signature sits in the last 10 bytes of the first
/// page, so each is a place to look.
pub const PAGE_SIZES: [u32; 5] = [4096, 8192, 16384, 32768, 65536];
/// Where the version 1 header starts (after the boot bits).
pub const HEADER_OFFSET: usize = 1024;
pub const SIGNATURE_LEN: usize = 10;
/// mkswap refuses areas of fewer pages (util-linux `MIN_GOODPAGES`).
pub const MIN_PAGES: u64 = 10;
/// The label field's size; a label fills it without a terminator when it is this
/// long.
pub const LABEL_LEN: usize = 16;

/// Field offsets from the start of the page.
mod off {
    pub const VERSION: usize = 1024;
    pub const LAST_PAGE: usize = 1028;
    pub const NR_BADPAGES: usize = 1032;
    pub const SWS_UUID: usize = 1036;
    pub const SWS_VOLUME: usize = 1052;
    /// `padding[32]` and `padding[33]`: blkid trusts UUID and label only when they
    /// are zero.
    pub const PADDING_32: usize = 1068 + 32 * 4;
}

/// TuxOnIce writes this at offset 0 of a swap area holding its image.
pub const TUXONICE_MAGIC: &[u8; 8] = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c";

/// What the signature slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapState {
    /// `SWAPSPACE2`: a usable version 1 swap area.
    Swap,
    /// `SWAP-SPACE`: the old version 0 layout, with no UUID or label.
    V0,
    /// A hibernation image is stored in the area; the value names the writer's
    /// signature: `S1SUSPEND` (the kernel's hibernation today,
    /// `kernel/power/swap.c`), `S2SUSPEND` and `LINHIB0001` (earlier kernels),
    /// `ULSUSPEND` (uswsusp's userland suspend), `tuxonice` (the TuxOnIce patch
    /// set, which marks offset 0 instead).
    Hibernated(&'static str),
}

/// A parsed (or to-be-written) swap header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapHeader {
    pub page_size: u32,
    pub state: SwapState,
    /// The header was written big-endian (a swap area from a big-endian machine).
    pub big_endian: bool,
    pub version: u32,
    /// The last usable page: the area has `last_page + 1` pages.
    pub last_page: u32,
    pub nr_badpages: u32,
    pub sws_uuid: [u8; 16],
    pub sws_volume: [u8; 16],
    /// Whether blkid would trust the UUID and label (the padding after them is
    /// zero); imgsan reports them only then, as blkid does.
    pub ids_trusted: bool,
}

impl SwapHeader {
    /// A fresh header for an empty area of `area_len` bytes: no bad pages, little
    /// endian, signature `SWAPSPACE2`, as `mkswap -p PAGE -U UUID -L LABEL` writes it.
    pub fn new(page_size: u32, area_len: u64, uuid: [u8; 16], label: &[u8]) -> Result<Self> {
        if !PAGE_SIZES.contains(&page_size) {
            return Err(Error::unsupported(format!("swap page size {page_size}")));
        }
        let pages = area_len / u64::from(page_size);
        if pages < MIN_PAGES {
            return Err(Error::unsupported(format!(
                "a swap area of {area_len} bytes holds fewer than {MIN_PAGES} pages of {page_size} bytes"
            )));
        }
        if label.len() > LABEL_LEN {
            return Err(Error::unsupported(format!(
                "swap label of {} bytes (at most {LABEL_LEN})",
                label.len()
            )));
        }
        // mkswap caps the page count at u32::MAX; so does the header's field.
        let last_page = u32::try_from(pages.min(u64::from(u32::MAX)) - 1).unwrap_or(u32::MAX - 1);
        let mut sws_volume = [0u8; 16];
        sws_volume[..label.len()].copy_from_slice(label);
        Ok(SwapHeader {
            page_size,
            state: SwapState::Swap,
            big_endian: false,
            version: 1,
            last_page,
            nr_badpages: 0,
            sws_uuid: uuid,
            sws_volume,
            ids_trusted: true,
        })
    }

    /// The same identity (UUID, label, page size, byte order) for an empty area of
    /// `area_len` bytes: what the writer puts in place of a source swap area.
    pub fn recreate(&self, area_len: u64) -> Result<Self> {
        let mut h = SwapHeader::new(self.page_size, area_len, self.sws_uuid, &[])?;
        h.sws_volume = self.sws_volume;
        h.big_endian = self.big_endian;
        Ok(h)
    }

    /// The whole first page: zeroed boot bits, the header, zero padding, no bad
    /// page list, and the signature in the last ten bytes. The rest of the area is
    /// left to read as zeros.
    pub fn to_page(&self) -> Result<Vec<u8>> {
        // The fields are public; a page size from elsewhere is checked here.
        if !PAGE_SIZES.contains(&self.page_size) {
            return Err(Error::unsupported(format!(
                "swap page size {}",
                self.page_size
            )));
        }
        let mut p = vec![0u8; self.page_size as usize];
        let put = |p: &mut [u8], at: usize, v: u32| {
            let b = if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            p[at..at + 4].copy_from_slice(&b);
        };
        put(&mut p, off::VERSION, self.version);
        put(&mut p, off::LAST_PAGE, self.last_page);
        put(&mut p, off::NR_BADPAGES, self.nr_badpages);
        p[off::SWS_UUID..off::SWS_UUID + 16].copy_from_slice(&self.sws_uuid);
        p[off::SWS_VOLUME..off::SWS_VOLUME + 16].copy_from_slice(&self.sws_volume);
        let sig = self.page_size as usize - SIGNATURE_LEN;
        p[sig..].copy_from_slice(b"SWAPSPACE2");
        Ok(p)
    }

    /// The UUID as blkid prints it, when set and trusted.
    pub fn uuid(&self) -> Option<String> {
        (self.ids_trusted && self.version == 1 && self.sws_uuid != [0; 16])
            .then(|| uuid_bytes_to_string(&self.sws_uuid))
    }

    /// The label (up to the first NUL, trailing blanks removed), when set and
    /// trusted.
    pub fn label(&self) -> Option<String> {
        if !self.ids_trusted || self.version != 1 {
            return None;
        }
        super::probe::label_from(&self.sws_volume)
    }

    /// The label's raw bytes (up to the first NUL).
    pub fn label_bytes(&self) -> &[u8] {
        let end = self
            .sws_volume
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(LABEL_LEN);
        &self.sws_volume[..end]
    }

    /// Bytes the area's pages cover, by the header.
    pub fn area_len(&self) -> u64 {
        (u64::from(self.last_page) + 1) * u64::from(self.page_size)
    }
}

fn signature(sig: &[u8]) -> Option<SwapState> {
    Some(match sig {
        b"SWAPSPACE2" => SwapState::Swap,
        b"SWAP-SPACE" => SwapState::V0,
        b"LINHIB0001" => SwapState::Hibernated("LINHIB0001"),
        _ if &sig[..9] == b"S1SUSPEND" => SwapState::Hibernated("S1SUSPEND"),
        _ if &sig[..9] == b"S2SUSPEND" => SwapState::Hibernated("S2SUSPEND"),
        _ if &sig[..9] == b"ULSUSPEND" => SwapState::Hibernated("ULSUSPEND"),
        _ => return None,
    })
}

/// Look for a swap signature at the end of a 4 KiB to 64 KiB first page. `Ok(None)`
/// when there is none. A signature whose version 1 header makes no sense (wrong
/// version, zero page count) is not swap, as blkid decides.
pub fn detect(disk: &dyn Disk) -> Result<Option<SwapHeader>> {
    let len = disk.len();
    // blkid probes only areas of at least 10 pages of 4 KiB.
    if len < MIN_PAGES * 4096 {
        return Ok(None);
    }
    let mut first = [0u8; 8];
    disk.read_at(0, &mut first)?;
    let tuxonice = &first == TUXONICE_MAGIC;
    for ps in PAGE_SIZES {
        let sig_at = u64::from(ps) - SIGNATURE_LEN as u64;
        if sig_at + SIGNATURE_LEN as u64 > len {
            break;
        }
        let mut sig = [0u8; SIGNATURE_LEN];
        disk.read_at(sig_at, &mut sig)?;
        let Some(mut state) = signature(&sig) else {
            continue;
        };
        if tuxonice {
            // TuxOnIce keeps a valid swap signature while its image sits in the
            // area; the magic at offset 0 is what tells.
            state = SwapState::Hibernated("tuxonice");
        }
        let mut page = vec![0u8; ps as usize];
        disk.read_at(0, &mut page)?;
        let raw_version = le32(&page, off::VERSION);
        let big_endian = raw_version != 1 && raw_version.swap_bytes() == 1;
        let rd = |at: usize| {
            let v = le32(&page, at);
            if big_endian {
                v.swap_bytes()
            } else {
                v
            }
        };
        let version = rd(off::VERSION);
        let last_page = rd(off::LAST_PAGE);
        // A hibernation signature over a broken header is still a resume image
        // (reported without identity); a plain one is a stray string.
        if state == SwapState::Swap && (version != 1 || last_page == 0) {
            return Ok(None);
        }
        let ids_trusted =
            le32(&page, off::PADDING_32) == 0 && le32(&page, off::PADDING_32 + 4) == 0;
        return Ok(Some(SwapHeader {
            page_size: ps,
            state,
            big_endian,
            version,
            last_page,
            nr_badpages: rd(off::NR_BADPAGES),
            sws_uuid: array16(&page, off::SWS_UUID),
            sws_volume: array16(&page, off::SWS_VOLUME),
            ids_trusted,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn built_header_reads_back() {
        let uuid = *b"0123456789abcdef";
        let h = SwapHeader::new(4096, 1 << 20, uuid, b"myswap").unwrap();
        assert_eq!(h.last_page, 255);
        let mut disk = h.to_page().unwrap();
        disk.resize(1 << 20, 0);
        let d = MemDisk::new(disk);
        let r = detect(&d).unwrap().unwrap();
        assert_eq!(r, h);
        assert_eq!(r.label().as_deref(), Some("myswap"));
        assert_eq!(r.uuid().unwrap(), uuid_bytes_to_string(&uuid));
    }

    #[test]
    fn refuses_bad_parameters() {
        assert!(SwapHeader::new(4096, 9 * 4096, [1; 16], b"").is_err());
        assert!(SwapHeader::new(4000, 1 << 20, [1; 16], b"").is_err());
        assert!(SwapHeader::new(4096, 1 << 20, [1; 16], &[b'x'; 17]).is_err());
        let full = SwapHeader::new(4096, 1 << 20, [1; 16], &[b'x'; 16]).unwrap();
        assert_eq!(full.label_bytes(), &[b'x'; 16]);
        let odd = SwapHeader {
            page_size: 5,
            ..full
        };
        assert!(odd.to_page().is_err());
    }

    #[test]
    fn hibernation_signatures_are_seen() {
        for (sig, name) in [
            (&b"S1SUSPEND\0"[..], "S1SUSPEND"),
            (b"S2SUSPEND\0", "S2SUSPEND"),
            (b"ULSUSPEND\0", "ULSUSPEND"),
            (b"LINHIB0001", "LINHIB0001"),
        ] {
            let h = SwapHeader::new(8192, 1 << 20, [7; 16], b"s").unwrap();
            let mut bytes = h.to_page().unwrap();
            bytes[8192 - 10..].copy_from_slice(sig);
            bytes.resize(1 << 20, 0);
            let r = detect(&MemDisk::new(bytes)).unwrap().unwrap();
            assert_eq!(r.state, SwapState::Hibernated(name));
            assert_eq!(r.page_size, 8192);
            assert_eq!(r.label().as_deref(), Some("s"));
        }
    }

    #[test]
    fn signature_without_header_is_not_swap() {
        let mut bytes = vec![0u8; 1 << 20];
        bytes[4096 - 10..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(detect(&MemDisk::new(bytes)).unwrap(), None);
    }
}
