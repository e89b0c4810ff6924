//! A volume group as its metadata text describes it: the VG's extent size and
//! seqno, its PVs (size, first extent, extent count) and its LVs with their
//! segments, checked for consistency (segments contiguous, extents inside their
//! PV, no two LVs on one extent) before anything maps an LV onto a disk.
//!
//! The model keeps the parsed text beside it, so that writing it back
//! ([`Vg::to_text`]) changes only what imgsan edits (seqno, sizes, extent
//! counts, segments, IDs) and keeps every other field as lvm2 wrote it.

use super::text::{self, Item, Section, Value};
use crate::error::{Error, Location, Result};

/// Bounds on what one VG may hold; far above what lvm2 itself allows in practice.
pub const MAX_PVS: usize = 1024;
pub const MAX_LVS: usize = 16384;
pub const MAX_SEGMENTS: usize = 16384;
pub const SECTOR: u64 = 512;

/// The segment types imgsan maps: lvm2 writes a linear LV as "striped" with one
/// stripe.
pub const STRIPED: &str = "striped";
pub const LINEAR: &str = "linear";

/// A PV as the VG metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VgPv {
    /// The section name ("pv0"), which segments refer to.
    pub key: String,
    /// The PV UUID, with dashes.
    pub id: String,
    /// The path lvm2 last saw it at (a hint only).
    pub device: Option<String>,
    /// In 512-byte sectors, as the text has them.
    pub dev_size: u64,
    pub pe_start: u64,
    pub pe_count: u64,
}

/// One segment of an LV.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    #[serde(rename = "type")]
    pub seg_type: String,
    /// For striped segments: (index into [`Vg::pvs`], first physical extent).
    pub stripes: Vec<(usize, u64)>,
}

/// A logical volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lv {
    pub name: String,
    pub id: String,
    pub visible: bool,
    pub segments: Vec<Segment>,
}

impl Lv {
    pub fn extents(&self) -> u64 {
        self.segments
            .last()
            .map_or(0, |s| s.start_extent + s.extent_count)
    }
}

/// A volume group.
#[derive(Debug, Clone, PartialEq)]
pub struct Vg {
    pub name: String,
    pub id: String,
    pub seqno: u64,
    /// In sectors.
    pub extent_size: u64,
    pub pvs: Vec<VgPv>,
    pub lvs: Vec<Lv>,
    /// The whole parsed text, for writing back.
    pub tree: Section,
}

fn bad(what: &str, detail: impl Into<String>) -> Error {
    Error::corrupt(
        "LVM metadata",
        Location::Whole,
        format!("{what}: {}", detail.into()),
    )
}

fn uint(s: &Section, key: &str, what: &str) -> Result<u64> {
    match s.int(key) {
        Some(i) if i >= 0 => Ok(i as u64),
        Some(i) => Err(bad(what, format!("{key} = {i} is negative"))),
        None => Err(bad(what, format!("no integer {key}"))),
    }
}

fn string(s: &Section, key: &str, what: &str) -> Result<String> {
    s.str(key)
        .map(str::to_string)
        .ok_or_else(|| bad(what, format!("no string {key}")))
}

/// The top-level keys of a metadata text that are not the VG.
const TOP_LEVEL: &[&str] = &[
    "contents",
    "version",
    "description",
    "creation_host",
    "creation_time",
    "creation_host_system_id",
];

impl Vg {
    /// The VG of a parsed metadata text.
    pub fn from_tree(tree: Section) -> Result<Vg> {
        let mut vgs = tree.sections();
        let (name, vg) = vgs
            .next()
            .ok_or_else(|| bad("metadata text", "no volume group section"))?;
        if vgs.next().is_some() {
            return Err(bad("metadata text", "more than one volume group section"));
        }
        for (k, item) in &tree.items {
            if matches!(item, Item::Value(_)) && !TOP_LEVEL.contains(&k.as_str()) {
                return Err(bad("metadata text", format!("unknown top-level key {k:?}")));
            }
        }
        let what = format!("VG {name}");
        let id = string(vg, "id", &what)?;
        let seqno = uint(vg, "seqno", &what)?;
        let extent_size = uint(vg, "extent_size", &what)?;
        if extent_size == 0 || extent_size > u64::from(u32::MAX) {
            return Err(bad(&what, format!("extent_size = {extent_size}")));
        }
        let mut pvs = Vec::new();
        for (key, pv) in vg
            .section("physical_volumes")
            .ok_or_else(|| bad(&what, "no physical_volumes section"))?
            .sections()
        {
            if pvs.len() == MAX_PVS {
                return Err(bad(&what, format!("more than {MAX_PVS} PVs")));
            }
            let w = format!("{what}, {key}");
            let p = VgPv {
                key: key.to_string(),
                id: string(pv, "id", &w)?,
                device: pv.str("device").map(str::to_string),
                dev_size: uint(pv, "dev_size", &w)?,
                pe_start: uint(pv, "pe_start", &w)?,
                pe_count: uint(pv, "pe_count", &w)?,
            };
            let end = p
                .pe_count
                .checked_mul(extent_size)
                .and_then(|b| b.checked_add(p.pe_start))
                .and_then(|e| e.checked_mul(SECTOR));
            match end {
                Some(e) if e <= p.dev_size.saturating_mul(SECTOR) || p.pe_count == 0 => {}
                _ => {
                    return Err(bad(
                        &w,
                        format!(
                            "{} extents from sector {} pass the end of its {} sectors",
                            p.pe_count, p.pe_start, p.dev_size
                        ),
                    ))
                }
            }
            pvs.push(p);
        }
        let mut lvs = Vec::new();
        if let Some(section) = vg.section("logical_volumes") {
            for (lv_name, lv) in section.sections() {
                if lvs.len() == MAX_LVS {
                    return Err(bad(&what, format!("more than {MAX_LVS} LVs")));
                }
                let parsed = parse_lv(&what, lv_name, lv, &pvs)?;
                // lvm2 names an LV once per VG; the writer finds LVs by name.
                if lvs.iter().any(|l: &Lv| l.name == parsed.name) {
                    return Err(bad(&what, format!("LV {} is defined twice", parsed.name)));
                }
                lvs.push(parsed);
            }
        }
        let vg = Vg {
            name: name.to_string(),
            id,
            seqno,
            extent_size,
            pvs,
            lvs,
            tree: tree.clone(),
        };
        vg.check_allocation()?;
        Ok(vg)
    }

    /// Parses a metadata text.
    pub fn parse(text: &[u8]) -> Result<Vg> {
        Vg::from_tree(text::parse(text)?)
    }

    pub fn extent_bytes(&self) -> u64 {
        self.extent_size * SECTOR
    }

    /// No physical extent is used twice, and every one used is inside its PV.
    fn check_allocation(&self) -> Result<()> {
        let mut used: Vec<(usize, u64, u64, &str)> = Vec::new();
        for lv in &self.lvs {
            for s in &lv.segments {
                if !is_mapped(s) {
                    continue;
                }
                for &(pv, pe) in &s.stripes {
                    let p = &self.pvs[pv];
                    if pe
                        .checked_add(s.extent_count)
                        .is_none_or(|e| e > p.pe_count)
                    {
                        return Err(bad(
                            &format!("VG {}, LV {}", self.name, lv.name),
                            format!(
                                "extents {pe}..+{} pass the {} extents of {}",
                                s.extent_count, p.pe_count, p.key
                            ),
                        ));
                    }
                    used.push((pv, pe, pe + s.extent_count, &lv.name));
                }
            }
        }
        used.sort_unstable();
        for w in used.windows(2) {
            if w[0].0 == w[1].0 && w[1].1 < w[0].2 {
                return Err(bad(
                    &format!("VG {}", self.name),
                    format!(
                        "LVs {} and {} share extents of {}",
                        w[0].3, w[1].3, self.pvs[w[0].0].key
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses LVs imgsan cannot map: anything but linear and one-stripe striped
    /// segments (thin, raid, mirror, cache, writecache, snapshot, VDO, integrity
    /// and the rest), naming the LV and its segment type. Visible LVs are named
    /// first: a thin pool's hidden sub-LVs are plain striped.
    pub fn check_supported(&self) -> Result<()> {
        let mut order: Vec<&Lv> = self.lvs.iter().filter(|l| l.visible).collect();
        order.extend(self.lvs.iter().filter(|l| !l.visible));
        for lv in order {
            for s in &lv.segments {
                if !is_mapped(s) {
                    return Err(Error::unsupported(format!(
                        "LVM: LV {}/{} has a segment of type {:?}{} (imgsan maps only linear and single-stripe LVs)",
                        self.name,
                        lv.name,
                        s.seg_type,
                        if s.seg_type == STRIPED {
                            format!(" with {} stripes", s.stripes.len())
                        } else {
                            String::new()
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    /// The metadata text for this VG as it now stands: the parsed text with the
    /// seqno, IDs, PV sizes and LV segments replaced by the model's.
    pub fn to_text(&self, description: &str) -> Result<String> {
        let mut tree = self.tree.clone();
        tree.set("description", Value::Str(description.to_string()));
        let vg = tree
            .section_mut(&self.name)
            .ok_or_else(|| bad("metadata text", "the VG section vanished"))?;
        vg.set("id", Value::Str(self.id.clone()));
        vg.set(
            "seqno",
            Value::Int(i64::try_from(self.seqno).map_err(|_| bad("VG", "seqno"))?),
        );
        let pvs = vg
            .section_mut("physical_volumes")
            .ok_or_else(|| bad("VG", "no physical_volumes"))?;
        for p in &self.pvs {
            let s = pvs
                .section_mut(&p.key)
                .ok_or_else(|| bad("VG", format!("no {}", p.key)))?;
            s.set("id", Value::Str(p.id.clone()));
            s.set("dev_size", int(p.dev_size)?);
            s.set("pe_count", int(p.pe_count)?);
        }
        if !self.lvs.is_empty() {
            let lvs = vg
                .section_mut("logical_volumes")
                .ok_or_else(|| bad("VG", "no logical_volumes"))?;
            for lv in &self.lvs {
                let s = lvs
                    .section_mut(&lv.name)
                    .ok_or_else(|| bad("VG", format!("no LV {}", lv.name)))?;
                s.set("id", Value::Str(lv.id.clone()));
                s.items.retain(|(k, item)| {
                    !(matches!(item, Item::Section(_)) && k.starts_with("segment"))
                });
                s.set("segment_count", int(lv.segments.len() as u64)?);
                for (i, seg) in lv.segments.iter().enumerate() {
                    let mut ss = Section::default();
                    ss.set("start_extent", int(seg.start_extent)?);
                    ss.set("extent_count", int(seg.extent_count)?);
                    ss.set("type", Value::Str(STRIPED.into()));
                    ss.set("stripe_count", int(seg.stripes.len() as u64)?);
                    let mut a = Vec::new();
                    for &(pv, pe) in &seg.stripes {
                        a.push(Value::Str(self.pvs[pv].key.clone()));
                        a.push(int(pe)?);
                    }
                    ss.set("stripes", Value::Array(a));
                    s.items
                        .push((format!("segment{}", i + 1), Item::Section(ss)));
                }
            }
        }
        // The VG section first, as lvm2 writes it; the top-level keys after.
        let mut head = Section::default();
        if let Some(pos) = tree.items.iter().position(|(k, _)| k == &self.name) {
            head.items.push(tree.items.remove(pos));
        }
        Ok(text::write(&head) + &text::write(&tree))
    }
}

fn int(v: u64) -> Result<Value> {
    i64::try_from(v)
        .map(Value::Int)
        .map_err(|_| bad("metadata", format!("{v} does not fit the text's integers")))
}

/// Whether a segment is one imgsan maps onto a disk.
pub fn is_mapped(s: &Segment) -> bool {
    (s.seg_type == STRIPED || s.seg_type == LINEAR) && s.stripes.len() == 1
}

fn parse_lv(vg: &str, name: &str, lv: &Section, pvs: &[VgPv]) -> Result<Lv> {
    let what = format!("{vg}, LV {name}");
    let id = string(lv, "id", &what)?;
    let visible = lv.strings("status").contains(&"VISIBLE");
    let count = uint(lv, "segment_count", &what)?;
    if count == 0 || count as usize > MAX_SEGMENTS {
        return Err(bad(&what, format!("segment_count = {count}")));
    }
    let mut segments = Vec::new();
    let mut next = 0u64;
    for i in 1..=count {
        let key = format!("segment{i}");
        let w = format!("{what}, {key}");
        let s = lv.section(&key).ok_or_else(|| {
            bad(
                &what,
                format!("segment_count is {count} but there is no {key}"),
            )
        })?;
        let start_extent = uint(s, "start_extent", &w)?;
        let extent_count = uint(s, "extent_count", &w)?;
        let seg_type = string(s, "type", &w)?;
        if start_extent != next || extent_count == 0 {
            return Err(bad(
                &w,
                format!("starts at extent {start_extent} with {extent_count} extents; expected a start at {next}"),
            ));
        }
        next = start_extent
            .checked_add(extent_count)
            .ok_or_else(|| bad(&w, "extent count overflows"))?;
        let mut stripes = Vec::new();
        if seg_type == STRIPED || seg_type == LINEAR {
            let a = match s.value("stripes") {
                Some(Value::Array(a)) => a,
                _ => return Err(bad(&w, "no stripes array")),
            };
            if a.is_empty() || a.len() % 2 != 0 {
                return Err(bad(&w, "the stripes array is not (PV, extent) pairs"));
            }
            if let Some(n) = s.int("stripe_count") {
                if n < 0 || n as usize != a.len() / 2 {
                    return Err(bad(
                        &w,
                        format!("stripe_count = {n} but {} stripes listed", a.len() / 2),
                    ));
                }
            }
            for pair in a.chunks_exact(2) {
                let (Value::Str(pv), Value::Int(pe)) = (&pair[0], &pair[1]) else {
                    return Err(bad(&w, "a stripe is not a PV name and an extent"));
                };
                let idx = pvs.iter().position(|p| &p.key == pv).ok_or_else(|| {
                    bad(&w, format!("stripe on {pv:?}, which the VG does not list"))
                })?;
                if *pe < 0 {
                    return Err(bad(&w, "negative first extent"));
                }
                stripes.push((idx, *pe as u64));
            }
        }
        segments.push(Segment {
            start_extent,
            extent_count,
            seg_type,
            stripes,
        });
    }
    Ok(Lv {
        name: name.to_string(),
        id,
        visible,
        segments,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const TEXT: &str = r#"rocky {
id = "dry2Dx-P6mH-npNR-EHDj-Hi5U-vnQk-QlRviy"
seqno = 4
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192
max_lv = 0
max_pv = 0
metadata_copies = 0
physical_volumes {
pv0 {
id = "traF6c-pQtv-eyOE-02x2-ouvi-4aas-DS2dkd"
device = "/dev/vda3"
status = ["ALLOCATABLE"]
flags = []
dev_size = 131072
pe_start = 2048
pe_count = 15
}
}
logical_volumes {
root {
id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
creation_time = 1
segment_count = 2
segment1 {
start_extent = 0
extent_count = 3
type = "striped"
stripe_count = 1
stripes = ["pv0", 5]
}
segment2 {
start_extent = 3
extent_count = 2
type = "striped"
stripe_count = 1
stripes = ["pv0", 0]
}
}
}
}
contents = "Text Format Volume Group"
version = 1
description = ""
creation_host = "vm"
creation_time = 1796316644
"#;

    #[test]
    fn model_and_round_trip() {
        let vg = Vg::parse(TEXT.as_bytes()).unwrap();
        assert_eq!(vg.name, "rocky");
        assert_eq!(vg.extent_bytes(), 4 << 20);
        assert_eq!(vg.lvs[0].extents(), 5);
        assert_eq!(vg.lvs[0].segments[1].stripes, vec![(0, 0)]);
        vg.check_supported().unwrap();
        let mut v2 = vg.clone();
        v2.seqno = 5;
        v2.lvs[0].segments.truncate(1);
        let back = Vg::parse(v2.to_text("imgsan").unwrap().as_bytes()).unwrap();
        assert_eq!(back.seqno, 5);
        assert_eq!(back.lvs, v2.lvs);
        assert_eq!(back.tree.str("description"), Some("imgsan"));
        assert!(back.tree.items[0].0 == "rocky");
    }

    #[test]
    fn refusals() {
        let thin = TEXT.replacen("type = \"striped\"", "type = \"thin-pool\"", 1);
        let e = Vg::parse(thin.as_bytes())
            .unwrap()
            .check_supported()
            .unwrap_err();
        assert!(
            e.to_string().contains("rocky/root") && e.to_string().contains("thin-pool"),
            "{e}"
        );
        let overlap = TEXT.replace("stripes = [\"pv0\", 0]", "stripes = [\"pv0\", 6]");
        assert!(Vg::parse(overlap.as_bytes()).is_err());
        let past = TEXT.replace("stripes = [\"pv0\", 5]", "stripes = [\"pv0\", 13]");
        assert!(Vg::parse(past.as_bytes()).is_err());
        let gap = TEXT.replace("start_extent = 3", "start_extent = 4");
        assert!(Vg::parse(gap.as_bytes()).is_err());
        let nopv = TEXT.replace("stripes = [\"pv0\", 0]", "stripes = [\"pv1\", 0]");
        assert!(Vg::parse(nopv.as_bytes()).is_err());
    }
}
