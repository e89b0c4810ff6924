//! Partition tables against real tools: images are made at test time with sfdisk,
//! sgdisk and fdisk, read with imgsan, and compared with what `sfdisk --json`,
//! `sgdisk -p` and `partx` (libblkid) say. Rewritten tables are checked with
//! `sgdisk -v`, `sfdisk -V`, fdisk's verify, and byte for byte against tables the
//! tools write themselves for the same layout. Every rejection path of the readers
//! has a test with a crafted image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use imgsan::disk::partition::gpt;
use imgsan::disk::partition::{self, ReadOptions, RewriteError, Role, Scheme, Table, TableWrite};
use imgsan::disk::{self, Disk, MemDisk};
use imgsan::ErrorKind;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Tool helpers

/// Run a tool, feeding `stdin`; panic with its stderr when it fails.
fn tool(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = tool_status(cmd, args, stdin);
    assert!(ok, "{cmd} {args:?} failed:\n{out}\n{err}");
    out
}

fn tool_status(cmd: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install it with .ci/setup.sh): {e}"));
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(p: &Path) -> Arc<dyn Disk> {
    disk::open(p).unwrap()
}

fn read(p: &Path) -> Table {
    partition::read(open(p).as_ref()).unwrap()
}

fn read_bytes(b: Vec<u8>) -> imgsan::Result<Table> {
    partition::read(&MemDisk::new(b))
}

/// A disk over borrowed bytes, so a test can mutate one buffer in place between
/// reads instead of copying an image per mutation.
struct Borrowed<'a>(&'a [u8]);

impl Disk for Borrowed<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> imgsan::Result<()> {
        disk::check_range("test disk", self.len(), offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn map(&self, _offset: u64, _len: u64) -> imgsan::Result<Vec<disk::Extent>> {
        Ok(Vec::new())
    }
    fn info(&self) -> disk::DiskInfo {
        disk::DiskInfo::default()
    }
}

/// `partx -g -P` rows (libblkid's view), keyed by column. START and SECTORS are in
/// 512-byte units whatever the sector size.
fn partx(p: &Path, sector_size: u32) -> Vec<HashMap<String, String>> {
    let ss = sector_size.to_string();
    let out = tool(
        "partx",
        &[
            "-S",
            &ss,
            "-g",
            "-P",
            "-o",
            "NR,START,SECTORS,TYPE,UUID,NAME,FLAGS",
            s(p),
        ],
        None,
    );
    out.lines().map(parse_pairs).collect()
}

/// Parse `KEY="value" KEY="value"` (values may hold spaces).
fn parse_pairs(line: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut rest = line.trim();
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 2..];
        let end = after.find('"').unwrap();
        m.insert(key, unescape(&after[..end]));
        rest = &after[end + 1..];
    }
    m
}

/// Undo libblkid's `\xHH` escapes (spaces and non-ASCII bytes in names).
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            out.push(u8::from_str_radix(&v[i + 2..i + 4], 16).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn sfdisk_json(p: &Path) -> serde_json::Value {
    let out = tool("sfdisk", &["--json", s(p)], None);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitiontable"].clone()
}

/// `sgdisk -p` rows: number, first sector, last sector, code, name.
fn sgdisk_p(p: &Path) -> Vec<(u32, u64, u64, String, String)> {
    let out = tool("sgdisk", &["-p", s(p)], None);
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in out.lines() {
        if line.starts_with("Number") {
            in_table = true;
            continue;
        }
        if !in_table || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        // number start end size unit code name...
        let name = f[6..].join(" ");
        rows.push((
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[5].to_string(),
            name,
        ));
    }
    rows
}

fn parse_type_byte(t: &str) -> u8 {
    u8::from_str_radix(t.trim_start_matches("0x"), 16).unwrap()
}

/// Every partition partx (libblkid) lists matches ours, and there are no others.
fn assert_agrees_with_partx(t: &Table, p: &Path) {
    let rows = partx(p, t.sector_size);
    assert_eq!(
        rows.len(),
        t.partitions.len(),
        "{rows:?}\n{:#?}",
        t.partitions
    );
    for r in &rows {
        let nr: u32 = r["NR"].parse().unwrap();
        let ours = t
            .partition(nr)
            .unwrap_or_else(|| panic!("no partition {nr}"));
        assert_eq!(ours.start, r["START"].parse::<u64>().unwrap() * 512, "{nr}");
        assert_eq!(ours.len, r["SECTORS"].parse::<u64>().unwrap() * 512, "{nr}");
        match t.scheme {
            Scheme::Mbr => {
                assert_eq!(
                    parse_type_byte(&ours.part_type.raw),
                    parse_type_byte(&r["TYPE"])
                );
                assert_eq!(ours.attributes, u64::from(parse_type_byte(&r["FLAGS"])));
            }
            _ => {
                assert_eq!(ours.part_type.raw, r["TYPE"]);
                assert_eq!(
                    ours.attributes,
                    u64::from_str_radix(r["FLAGS"].trim_start_matches("0x"), 16).unwrap()
                );
            }
        }
        assert_eq!(ours.uuid.as_deref(), Some(r["UUID"].as_str()), "{nr}");
        assert_eq!(ours.name.as_deref().unwrap_or(""), r["NAME"], "{nr}");
    }
}

/// Agreement with `sfdisk --json` (512-byte sectors only: sfdisk 2.38 has no
/// sector-size option for image files).
fn assert_agrees_with_sfdisk(t: &Table, p: &Path) {
    let j = sfdisk_json(p);
    let parts = j["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), t.partitions.len());
    let base = s(p).to_string();
    for jp in parts {
        let node = jp["node"].as_str().unwrap();
        let nr: u32 = node.strip_prefix(&base).unwrap().parse().unwrap();
        let ours = t.partition(nr).unwrap();
        assert_eq!(ours.start, jp["start"].as_u64().unwrap() * 512, "{nr}");
        assert_eq!(ours.len, jp["size"].as_u64().unwrap() * 512, "{nr}");
        let ty = jp["type"].as_str().unwrap();
        match t.scheme {
            Scheme::Mbr => {
                assert_eq!(parse_type_byte(&ours.part_type.raw), parse_type_byte(ty));
                assert_eq!(ours.bootable, jp["bootable"].as_bool().unwrap_or(false));
            }
            _ => {
                assert_eq!(ours.part_type.raw, ty.to_lowercase(), "{nr}");
                assert_eq!(
                    ours.uuid.clone().unwrap(),
                    jp["uuid"].as_str().unwrap().to_lowercase()
                );
                assert_eq!(
                    ours.name.as_deref().unwrap_or(""),
                    jp["name"].as_str().unwrap_or("")
                );
            }
        }
    }
    match t.scheme {
        Scheme::Mbr => {
            assert_eq!(j["label"], "dos");
            let id = j["id"].as_str().unwrap();
            assert_eq!(
                u32::from_str_radix(id.trim_start_matches("0x"), 16).unwrap(),
                u32::from_str_radix(t.id.as_ref().unwrap().trim_start_matches("0x"), 16).unwrap()
            );
        }
        _ => {
            assert_eq!(j["label"], "gpt");
            assert_eq!(
                j["id"].as_str().unwrap().to_lowercase(),
                t.id.clone().unwrap()
            );
            assert_eq!(j["firstlba"].as_u64(), t.first_usable_lba);
            assert_eq!(j["lastlba"].as_u64(), t.last_usable_lba);
        }
    }
}

fn assert_agrees_with_sgdisk(t: &Table, p: &Path) {
    let rows = sgdisk_p(p);
    assert_eq!(rows.len(), t.partitions.len());
    for (nr, first, last, _code, name) in rows {
        let ours = t.partition(nr).unwrap();
        assert_eq!(ours.start, first * 512);
        assert_eq!(ours.end(), (last + 1) * 512);
        assert_eq!(ours.name.as_deref().unwrap(), name);
    }
}

/// The output a writer makes: the source's first `new_size` bytes, the source's
/// table structures blanked, the rewritten ones placed.
fn apply(src: &[u8], table: &Table, new_size: u64, writes: &[TableWrite]) -> Vec<u8> {
    let mut out = src[..src.len().min(new_size as usize)].to_vec();
    out.resize(new_size as usize, 0);
    for r in table.regions() {
        let a = (r.offset as usize).min(out.len());
        let b = ((r.offset + r.len) as usize).min(out.len());
        out[a..b].fill(0);
    }
    for w in writes {
        out[w.offset as usize..w.offset as usize + w.bytes.len()].copy_from_slice(&w.bytes);
    }
    out
}

// ---------------------------------------------------------------------------
// Images

/// MBR: a bootable primary, an extended partition over the rest of the disk, and
/// three logical partitions in it; the last one reaches the end of the disk.
fn mbr_with_logicals(dir: &Path, size: u64, last_size: Option<&str>) -> PathBuf {
    let p = blank(dir, &format!("mbr-{size}.img"), size);
    let last = match last_size {
        Some(sz) => format!("size={sz}, type=83\n"),
        None => "type=83\n".to_string(),
    };
    let script = format!(
        "label: dos\nlabel-id: 0x12345678\nstart=2048, size=16M, type=83, bootable\ntype=5\nsize=8M, type=8e\nsize=8M, type=82\n{last}"
    );
    tool("sfdisk", &["-q", s(&p)], Some(&script));
    p
}

const DISK_GUID: &str = "5A104974-D39E-465B-8562-EBFD21800C0E";
const PART_GUIDS: [&str; 5] = [
    "AB968C63-F040-4B07-924B-368A01F6B9C6",
    "1747F268-1032-4484-840D-9B5EE6D7037B",
    "632BF41E-4C1D-4BB9-AE70-B61FFD7199C2",
    "20200F72-264A-428B-BA78-80C3199CE06B",
    "8C3A4D7E-1B2F-4E6A-9D0C-5F7E8A9B0C1D",
];

/// GPT (128 entries, 512-byte sectors): BIOS boot, EFI system, Linux root with an
/// attribute, swap, and a last Linux partition that ends at `last_end` (or fills
/// the disk). Fixed GUIDs so that a reference image can be rebuilt.
fn gpt_image(dir: &Path, name: &str, size: u64, last_end: Option<u64>) -> PathBuf {
    let p = blank(dir, name, size);
    let last = last_end
        .map(|e| e.to_string())
        .unwrap_or_else(|| "0".into());
    let n5 = format!("5:0:{last}");
    let mut args: Vec<String> = vec![
        "-U".into(),
        DISK_GUID.into(),
        "-n".into(),
        "1:2048:+1M".into(),
        "-t".into(),
        "1:ef02".into(),
        "-c".into(),
        "1:BIOS boot".into(),
        "-n".into(),
        "2:0:+2M".into(),
        "-t".into(),
        "2:ef00".into(),
        "-c".into(),
        "2:EFI System".into(),
        "-n".into(),
        "3:0:+4M".into(),
        "-t".into(),
        "3:8304".into(),
        "-c".into(),
        "3:root fs".into(),
        "-A".into(),
        "3:set:2".into(),
        "-n".into(),
        "4:0:+2M".into(),
        "-t".into(),
        "4:8200".into(),
        "-c".into(),
        "4:swap ü".into(),
        "-n".into(),
        n5,
        "-t".into(),
        "5:8300".into(),
        "-c".into(),
        "5:data".into(),
    ];
    for (i, g) in PART_GUIDS.iter().enumerate() {
        args.push("-u".into());
        args.push(format!("{}:{g}", i + 1));
    }
    args.push(s(&p).into());
    let a: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
    tool("sgdisk", &a, None);
    p
}

/// GPT with 4096-byte logical sectors, written by fdisk told the sector size.
fn gpt_4k_image(dir: &Path, size: u64) -> PathBuf {
    let p = blank(dir, "gpt4k.img", size);
    let script = "g\n\
        n\n1\n\n+1M\nt\n21686148-6449-6E6F-744E-656564454649\n\
        n\n2\n\n+8M\nt\n2\nC12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
        n\n3\n\n+10M\n\
        n\n4\n\n\nt\n4\n0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n\
        x\nn\n3\nroot fs\nn\n4\nswap part\nr\nw\n";
    tool("fdisk", &["-b", "4096", s(&p)], Some(script));
    p
}

// ---------------------------------------------------------------------------
// Reading valid tables

#[test]
fn mbr_with_three_logical_partitions_agrees_with_sfdisk_and_partx() {
    let dir = tempfile::tempdir().unwrap();
    let p = mbr_with_logicals(dir.path(), 64 * MIB, None);
    let t = read(&p);
    assert_eq!(t.scheme, Scheme::Mbr);
    assert_eq!(t.sector_size, 512);
    assert_eq!(t.id.as_deref(), Some("0x12345678"));
    let idx: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 2, 5, 6, 7]);
    let roles: Vec<Role> = t.partitions.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [
            Role::Primary,
            Role::Extended,
            Role::Logical,
            Role::Logical,
            Role::Logical
        ]
    );
    assert!(t.partitions[0].bootable);
    assert_eq!(t.partitions[0].part_type.name, "Linux");
    assert_eq!(t.partitions[2].part_type.name, "Linux LVM");
    assert_eq!(t.partitions[3].part_type.name, "Linux swap");
    assert_eq!(t.partitions[2].uuid.as_deref(), Some("12345678-05"));
    // Volumes leave out the extended container.
    assert_eq!(t.volumes().len(), 4);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_agrees_with_sfdisk(&t, &p);
    assert_agrees_with_partx(&t, &p);
}

#[test]
fn gpt_with_128_entries_agrees_with_sfdisk_sgdisk_and_partx() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "gpt.img", 64 * MIB, None);
    let t = read(&p);
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.sector_size, 512);
    assert!(!t.used_backup);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.id.as_deref(), Some(DISK_GUID.to_lowercase().as_str()));
    let names: Vec<&str> = t.partitions.iter().map(|p| p.part_type.name).collect();
    assert_eq!(
        names,
        [
            "BIOS boot",
            "EFI system",
            "Linux root (x86-64)",
            "Linux swap",
            "Linux filesystem"
        ]
    );
    assert_eq!(t.partitions[3].name.as_deref(), Some("swap ü"));
    assert!(t.partitions[2].bootable);
    assert_eq!(t.partitions[2].attributes, 4);
    // The header says 128 entries.
    let raw = std::fs::read(&p).unwrap();
    assert_eq!(
        u32::from_le_bytes(raw[512 + 80..512 + 84].try_into().unwrap()),
        128
    );
    assert_agrees_with_sfdisk(&t, &p);
    assert_agrees_with_sgdisk(&t, &p);
    assert_agrees_with_partx(&t, &p);

    // The JSON form carries what `inspect --json` needs.
    let j = serde_json::to_value(&t).unwrap();
    assert_eq!(j["scheme"], "gpt");
    assert_eq!(j["partitions"][3]["name"], "swap ü");
    assert_eq!(j["partitions"][1]["type"]["name"], "EFI system");
    assert_eq!(j["partitions"][1]["type"]["class"], "efi");
}

#[test]
fn gpt_with_4k_sectors_agrees_with_fdisk_and_partx() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_4k_image(dir.path(), 32 * MIB);
    let t = read(&p);
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.sector_size, 4096);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.partitions.len(), 4);
    assert_eq!(t.partitions[0].part_type.name, "BIOS boot");
    assert_eq!(t.partitions[2].name.as_deref(), Some("root fs"));
    assert_agrees_with_partx(&t, &p);

    let out = tool(
        "fdisk",
        &[
            "-b",
            "4096",
            "-l",
            "-o",
            "Device,Start,Sectors,Type-UUID,UUID",
            s(&p),
        ],
        None,
    );
    let mut rows = 0;
    for line in out.lines().filter(|l| l.starts_with(s(&p))) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let nr: u32 = f[0].strip_prefix(s(&p)).unwrap().parse().unwrap();
        let ours = t.partition(nr).unwrap();
        assert_eq!(ours.start, f[1].parse::<u64>().unwrap() * 4096);
        assert_eq!(ours.len, f[2].parse::<u64>().unwrap() * 4096);
        assert_eq!(ours.part_type.raw, f[3].to_lowercase());
        assert_eq!(ours.uuid.clone().unwrap(), f[4].to_lowercase());
        rows += 1;
    }
    assert_eq!(rows, 4);
    let disk_id = out
        .lines()
        .find_map(|l| l.strip_prefix("Disk identifier: "))
        .unwrap();
    assert_eq!(t.id.clone().unwrap(), disk_id.to_lowercase());
}

#[test]
fn damaged_primary_gpt_header_falls_back_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "gpt.img", 64 * MIB, None);
    let good = read(&p);
    let raw = std::fs::read(&p).unwrap();

    // One changed byte in the disk GUID: the header CRC no longer matches.
    let mut b = raw.clone();
    b[512 + 60] ^= 0x40;
    let bad = dir.path().join("bad.img");
    std::fs::write(&bad, &b).unwrap();
    let t = read(&bad);
    assert!(t.used_backup);
    assert_eq!(t.partitions, good.partitions);
    assert_eq!(t.id, good.id);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("primary GPT header is damaged")
                && w.contains("backup at LBA 131071")),
        "{:?}",
        t.warnings
    );
    // sfdisk (libfdisk) falls back the same way and sees the same partitions.
    assert_agrees_with_sfdisk(&t, &bad);

    // A wiped primary header sector.
    let mut b = raw.clone();
    b[512..1024].fill(0);
    let t = read_bytes(b).unwrap();
    assert!(t.used_backup);
    assert_eq!(t.partitions, good.partitions);

    // A damaged primary entry array.
    let mut b = raw.clone();
    b[1024 + 130] ^= 1;
    let t = read_bytes(b).unwrap();
    assert!(t.used_backup);
    assert_eq!(t.partitions, good.partitions);
    assert!(t.warnings[0].contains("entry array"), "{:?}", t.warnings);
}

#[test]
fn every_one_byte_change_of_either_header_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "gpt.img", 16 * MIB, None);
    let mut b = std::fs::read(&p).unwrap();
    let good = partition::read(&Borrowed(&b)).unwrap();
    let last = b.len() - 512;
    for i in 0..gpt::HEADER_SIZE as usize {
        for bit in [0x01u8, 0x80] {
            // Primary damaged: the backup is used, with the same partitions.
            b[512 + i] ^= bit;
            let t =
                partition::read(&Borrowed(&b)).unwrap_or_else(|e| panic!("primary byte {i}: {e}"));
            assert!(t.used_backup, "primary byte {i}");
            assert_eq!(t.partitions, good.partitions, "primary byte {i}");
            // Both damaged the same way: refused with a typed error.
            b[last + i] ^= bit;
            let e = partition::read(&Borrowed(&b)).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Checksum | ErrorKind::Corrupt),
                "byte {i}: {e}"
            );
            // Backup damaged: the primary is used, and the damage is reported.
            b[512 + i] ^= bit;
            let t =
                partition::read(&Borrowed(&b)).unwrap_or_else(|e| panic!("backup byte {i}: {e}"));
            assert!(!t.used_backup, "backup byte {i}");
            assert!(
                t.warnings.iter().any(|w| w.contains("backup GPT header")),
                "backup byte {i}: {:?}",
                t.warnings
            );
            b[last + i] ^= bit;
        }
    }
}

#[test]
fn no_table_is_an_explicit_scheme_with_one_whole_disk_volume() {
    let dir = tempfile::tempdir().unwrap();
    // A bare FAT filesystem: sector 0 has 0x55AA but is a boot sector.
    let fat = blank(dir.path(), "fat.img", 16 * MIB);
    tool("mkfs.vfat", &["-n", "BARE", s(&fat)], None);
    let t = read(&fat);
    assert_eq!(t.scheme, Scheme::None);
    assert!(t.partitions.is_empty());
    let v = t.volumes();
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].start, v[0].len, v[0].partition), (0, 16 * MIB, None));
    assert!(t.rewrite(8 * MIB, &[]).unwrap().is_empty());
    // blkid agrees that there is no partition table.
    let (_, out, _) = tool_status("blkid", &["-p", "-o", "export", s(&fat)], None);
    assert!(!out.contains("PTTYPE"), "{out}");

    // A bare ext4 filesystem: nothing at all in sector 0.
    let ext = blank(dir.path(), "ext.img", 16 * MIB);
    tool("mke2fs", &["-q", "-t", "ext4", s(&ext)], None);
    assert_eq!(read(&ext).scheme, Scheme::None);

    // All zeros, and a disk too small for a sector.
    assert_eq!(read_bytes(vec![0; 4096]).unwrap().scheme, Scheme::None);
    assert_eq!(read_bytes(vec![0; 100]).unwrap().scheme, Scheme::None);
}

#[test]
fn an_mbr_with_a_stray_boot_indicator_is_not_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = mbr_with_logicals(dir.path(), 64 * MIB, None);
    let mut b = std::fs::read(&p).unwrap();
    b[446 + 16] = 0x12; // entry 2's boot indicator
    let t = read_bytes(b).unwrap();
    assert_eq!(t.scheme, Scheme::None);
    assert!(t.warnings[0].contains("boot indicator"), "{:?}", t.warnings);
}

// ---------------------------------------------------------------------------
// Rewriting for a new disk size

#[test]
fn gpt_shrink_matches_sgdisk_byte_for_byte_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = gpt_image(dir.path(), "src.img", 64 * MIB, None);
    let t = read(&src);
    let raw = std::fs::read(&src).unwrap();

    // Shrink the disk to 48 MiB; the last partition ends where the backup
    // structures of the new disk begin.
    let new_size = 48 * MIB;
    let new_sectors = new_size / 512;
    let last_usable = new_sectors - 34;
    let p5 = t.partition(5).unwrap();
    let new_len = (last_usable + 1) * 512 - p5.start;
    let writes = t.rewrite(new_size, &[(5, new_len)]).unwrap();
    let out = apply(&raw, &t, new_size, &writes);
    let outp = dir.path().join("out.img");
    std::fs::write(&outp, &out).unwrap();

    let v = tool("sgdisk", &["-v", s(&outp)], None);
    assert!(v.contains("No problems found"), "{v}");
    let t2 = read(&outp);
    assert!(t2.warnings.is_empty(), "{:?}", t2.warnings);
    assert_eq!(t2.last_usable_lba, Some(last_usable));
    assert_eq!(t2.partition(5).unwrap().len, new_len);
    for i in 1..=4 {
        assert_eq!(t2.partition(i), t.partition(i));
    }
    assert_agrees_with_sfdisk(&t2, &outp);
    assert_agrees_with_sgdisk(&t2, &outp);

    // sgdisk writing the same layout on a 48 MiB disk produces the same bytes: the
    // protective MBR, both headers and both arrays.
    let refp = gpt_image(dir.path(), "ref.img", new_size, Some(last_usable));
    let reference = std::fs::read(&refp).unwrap();
    assert_eq!(out[..34 * 512], reference[..34 * 512]);
    let tail = out.len() - 33 * 512;
    assert_eq!(out[tail..], reference[tail..]);
}

#[test]
fn gpt_grow_keeps_partitions_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = gpt_image(dir.path(), "src.img", 64 * MIB, None);
    let t = read(&src);
    let raw = std::fs::read(&src).unwrap();
    let new_size = 96 * MIB;
    let writes = t.rewrite(new_size, &[]).unwrap();
    let out = apply(&raw, &t, new_size, &writes);
    let outp = dir.path().join("grown.img");
    std::fs::write(&outp, &out).unwrap();
    let v = tool("sgdisk", &["-v", s(&outp)], None);
    assert!(v.contains("No problems found"), "{v}");
    let t2 = read(&outp);
    assert_eq!(t2.partitions, t.partitions);
    assert_eq!(t2.last_usable_lba, Some(new_size / 512 - 34));
    assert!(t2.warnings.is_empty(), "{:?}", t2.warnings);

    // Rewriting at the same size reproduces the source tables exactly.
    let same = t.rewrite(64 * MIB, &[]).unwrap();
    for w in &same {
        let o = w.offset as usize;
        assert_eq!(raw[o..o + w.bytes.len()], w.bytes[..], "{}", w.what);
    }
}

#[test]
fn an_enlarged_image_is_read_and_its_table_moved_to_the_new_end() {
    // `qemu-img resize` or `truncate` grows an image without moving the backup
    // GPT: it stays in the middle of the disk until a tool rewrites it.
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "g.img", 16 * MIB, None);
    let before = read(&p);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(24 * MIB)
        .unwrap();
    let t = read(&p);
    assert_eq!(t.partitions, before.partitions);
    assert!(!t.used_backup);
    assert!(
        t.warnings.iter().any(|w| w.contains("resized")),
        "{:?}",
        t.warnings
    );
    // The backup the table knows about is where it really is.
    let old_last = 16 * MIB / 512 - 1;
    assert!(t
        .regions()
        .iter()
        .any(|r| r.what == "backup GPT header" && r.offset == old_last * 512));
    assert_agrees_with_sfdisk(&t, &p);

    let raw = std::fs::read(&p).unwrap();
    let writes = t.rewrite(24 * MIB, &[]).unwrap();
    let out = apply(&raw, &t, 24 * MIB, &writes);
    let outp = dir.path().join("fixed.img");
    std::fs::write(&outp, &out).unwrap();
    let v = tool("sgdisk", &["-v", s(&outp)], None);
    assert!(v.contains("No problems found"), "{v}");
    let t2 = read(&outp);
    assert!(t2.warnings.is_empty(), "{:?}", t2.warnings);
    assert_eq!(t2.partitions, t.partitions);
    // The stale backup was blanked, not left in the middle of the disk.
    assert!(out[old_last as usize * 512..][..8].iter().all(|&b| b == 0));
}

#[test]
fn gpt_rewrite_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let src = gpt_image(dir.path(), "src.img", 64 * MIB, None);
    let t = read(&src);
    // Partition 5 keeps its length: it would pass the new end.
    let e = t.rewrite(48 * MIB, &[]).unwrap_err();
    assert!(matches!(e, RewriteError::PastEnd { index: 5, .. }), "{e:?}");
    let as_error: imgsan::Error = e.into();
    assert_eq!(as_error.kind(), ErrorKind::Unsupported);
    // Growing partition 4 would run into partition 5.
    let p4 = t.partition(4).unwrap().len;
    assert!(matches!(
        t.rewrite(64 * MIB, &[(4, p4 + MIB)]),
        Err(RewriteError::Overlap { .. })
    ));
    assert!(matches!(
        t.rewrite(64 * MIB, &[(9, MIB)]),
        Err(RewriteError::NoSuchPartition { index: 9 })
    ));
    assert!(matches!(
        t.rewrite(64 * MIB, &[(5, 1000)]),
        Err(RewriteError::BadLength { index: 5, .. })
    ));
    assert!(matches!(
        t.rewrite(64 * MIB + 7, &[]),
        Err(RewriteError::BadDiskSize { .. })
    ));
    assert!(matches!(
        t.rewrite(16 * 512, &[]),
        Err(RewriteError::DiskTooSmall { .. })
    ));
}

#[test]
fn gpt_4k_shrink_verifies_with_fdisk() {
    let dir = tempfile::tempdir().unwrap();
    let src = gpt_4k_image(dir.path(), 32 * MIB);
    let t = read(&src);
    let raw = std::fs::read(&src).unwrap();
    let new_size = 24 * MIB;
    let new_sectors = new_size / 4096;
    // 128 entries of 128 bytes are 4 sectors of 4 KiB.
    let last_usable = new_sectors - 1 - 4 - 1;
    let p4 = t.partition(4).unwrap();
    let new_len = (last_usable + 1) * 4096 - p4.start;
    let writes = t.rewrite(new_size, &[(4, new_len)]).unwrap();
    let out = apply(&raw, &t, new_size, &writes);
    let outp = dir.path().join("out4k.img");
    std::fs::write(&outp, &out).unwrap();

    let t2 = read(&outp);
    assert_eq!(t2.sector_size, 4096);
    assert!(t2.warnings.is_empty(), "{:?}", t2.warnings);
    assert_eq!(t2.partition(4).unwrap().len, new_len);
    assert_agrees_with_partx(&t2, &outp);
    let (ok, v, err) = tool_status("fdisk", &["-b", "4096", s(&outp)], Some("v\nq\n"));
    assert!(ok && v.contains("No errors detected"), "{v}\n{err}");
    assert!(
        !v.contains("corrupt") && !err.contains("corrupt"),
        "{v}\n{err}"
    );
    let l = tool("fdisk", &["-b", "4096", "-l", s(&outp)], None);
    assert!(l.contains(&format!("{new_sectors} sectors")), "{l}");
}

#[test]
fn mbr_shrink_matches_sfdisk_byte_for_byte_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = mbr_with_logicals(dir.path(), 64 * MIB, None);
    let t = read(&src);
    let raw = std::fs::read(&src).unwrap();
    // Logical 7 shrinks to 16 MiB, and the disk ends with it.
    let p7 = t.partition(7).unwrap();
    let new_size = p7.start + 16 * MIB;
    let writes = t.rewrite(new_size, &[(7, 16 * MIB)]).unwrap();
    let whats: Vec<&str> = writes.iter().map(|w| w.what).collect();
    assert_eq!(whats, ["MBR", "EBR", "EBR", "EBR"]);
    // What changed: the extended size in the MBR, the link in EBR 6, the size in
    // EBR 7.
    let changed: Vec<u64> = writes
        .iter()
        .filter(|w| raw[w.offset as usize..w.offset as usize + w.bytes.len()] != w.bytes[..])
        .map(|w| w.offset / 512)
        .collect();
    assert_eq!(changed, [0, 53248, 71680]);
    let out = apply(&raw, &t, new_size, &writes);
    let outp = dir.path().join("out.img");
    std::fs::write(&outp, &out).unwrap();

    let v = tool("sfdisk", &["-V", s(&outp)], None);
    assert!(v.contains("No errors detected"), "{v}");
    let t2 = read(&outp);
    assert!(t2.warnings.is_empty(), "{:?}", t2.warnings);
    assert_eq!(t2.partition(7).unwrap().len, 16 * MIB);
    assert_eq!(t2.partition(2).unwrap().end(), new_size);
    for i in [1, 5, 6] {
        assert_eq!(t2.partition(i), t.partition(i));
    }
    assert_agrees_with_sfdisk(&t2, &outp);
    assert_agrees_with_partx(&t2, &outp);

    // sfdisk writing the same layout on the smaller disk gives the same MBR and
    // EBRs, CHS fields included.
    let refp = mbr_with_logicals(dir.path(), new_size, None);
    let reference = std::fs::read(&refp).unwrap();
    for r in t2.regions() {
        let (a, b) = (r.offset as usize, (r.offset + r.len) as usize);
        assert_eq!(out[a..b], reference[a..b], "{} at {a:#x}", r.what);
    }
}

#[test]
fn mbr_rewrite_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let src = mbr_with_logicals(dir.path(), 64 * MIB, None);
    let t = read(&src);
    let p7 = t.partition(7).unwrap();
    assert!(matches!(
        t.rewrite(p7.start + MIB, &[]),
        Err(RewriteError::PastEnd { index: 7, .. })
    ));
    // No disk left for sector 0 and the EBRs.
    assert!(matches!(
        t.rewrite(0, &[]),
        Err(RewriteError::DiskTooSmall { .. })
    ));
    // Logical 5 growing into logical 6's EBR and data.
    let p5 = t.partition(5).unwrap().len;
    assert!(matches!(
        t.rewrite(64 * MIB, &[(5, p5 + 4 * MIB)]),
        Err(RewriteError::Overlap { .. })
    ));
}

// ---------------------------------------------------------------------------
// Rejection paths

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recompute a GPT header's CRC after an edit.
fn fix_header(b: &mut [u8], at: usize) {
    let crc = gpt::header_crc(&b[at..at + 512], 92);
    put32(b, at + 16, crc);
}

/// Offsets of both headers of a 512-byte-sector image.
fn headers(b: &[u8]) -> [usize; 2] {
    [512, b.len() - 512]
}

#[test]
fn rejects_bad_header_crc_when_the_backup_is_bad_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "g.img", 16 * MIB, None);
    let mut b = std::fs::read(&p).unwrap();
    for h in headers(&b) {
        b[h + 16] ^= 0xff;
    }
    let e = read_bytes(b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(e.to_string().contains("GPT header at offset 0x200"), "{e}");
}

#[test]
fn rejects_bad_entry_array_crc_in_both_copies() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "g.img", 16 * MIB, None);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[1024 + 200] ^= 1;
    b[n - 33 * 512 + 200] ^= 1;
    let e = read_bytes(b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(e.to_string().contains("entry array"), "{e}");
}

#[test]
fn rejects_absurd_entry_counts_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "g.img", 16 * MIB, None);
    let raw = std::fs::read(&p).unwrap();
    let cases: [(&str, usize, u32); 5] = [
        ("huge count", 80, 0x7fff_ffff),
        ("count past the disk", 80, 200_000),
        ("entry too small", 84, 64),
        ("entry not a multiple of 8", 84, 132),
        ("entry too large", 84, 1 << 20),
    ];
    for (what, field, value) in cases {
        let mut b = raw.clone();
        for h in headers(&b) {
            put32(&mut b, h + field, value);
            fix_header(&mut b, h);
        }
        let e = read_bytes(b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        assert!(e.to_string().contains("GPT header"), "{what}: {e}");
    }
    // Oversized header_size.
    let mut b = raw.clone();
    for h in headers(&b) {
        put32(&mut b, h + 12, 4096);
    }
    assert_eq!(read_bytes(b).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn rejects_a_gpt_partition_past_the_end_of_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_image(dir.path(), "g.img", 16 * MIB, None);
    let mut b = std::fs::read(&p).unwrap();
    let sectors = (b.len() / 512) as u64;
    // Entry 5 (slot 4) ends past the last LBA; both arrays and CRCs updated.
    for h in headers(&b) {
        let array = u64::from_le_bytes(b[h + 72..h + 80].try_into().unwrap()) as usize * 512;
        put64(&mut b, array + 4 * 128 + 40, sectors + 10);
        let crc = crc32fast::hash(&b[array..array + 128 * 128]);
        put32(&mut b, h + 88, crc);
        fix_header(&mut b, h);
    }
    let e = read_bytes(b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");
}

#[test]
fn rejects_truncated_images() {
    let dir = tempfile::tempdir().unwrap();
    let g = gpt_image(dir.path(), "g.img", 16 * MIB, None);
    let b = std::fs::read(&g).unwrap();
    let e = read_bytes(b[..b.len() - MIB as usize].to_vec()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    // Cut inside the entry array: nothing usable anywhere.
    let e = read_bytes(b[..4096].to_vec()).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Checksum),
        "{e}"
    );

    let m = mbr_with_logicals(dir.path(), 64 * MIB, None);
    let b = std::fs::read(&m).unwrap();
    let e = read_bytes(b[..40 * MIB as usize].to_vec()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");
}

#[test]
fn rejects_an_ebr_loop() {
    let dir = tempfile::tempdir().unwrap();
    let p = mbr_with_logicals(dir.path(), 64 * MIB, None);
    let mut b = std::fs::read(&p).unwrap();
    let t = read_bytes(b.clone()).unwrap();
    let ext_start = t.partition(2).unwrap().start;
    // The last EBR (before logical 7) links back to the first EBR.
    let last_ebr = (t.partition(7).unwrap().start - 2048 * 512) as usize;
    let link = last_ebr + 446 + 16;
    b[link + 4] = 0x05;
    put32(&mut b, link + 8, 0); // relative start 0 would end the chain...
    let e = read_bytes(b.clone());
    assert!(e.is_ok(), "a zero link ends the chain");
    // ...so point it at the second EBR instead.
    let second_ebr = t.partition(6).unwrap().start - 2048 * 512;
    put32(&mut b, link + 8, ((second_ebr - ext_start) / 512) as u32);
    put32(&mut b, link + 12, 2048);
    let e = read_bytes(b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("loops"), "{e}");
}

#[test]
fn rejects_an_mbr_partition_past_the_end_and_overlaps() {
    let mut b = vec![0u8; 4 * MIB as usize];
    b[510] = 0x55;
    b[511] = 0xaa;
    // Entry 1: starts at 2048, 8192 sectors on an 8192-sector disk.
    b[446 + 4] = 0x83;
    put32(&mut b, 446 + 8, 2048);
    put32(&mut b, 446 + 12, 8192);
    let e = read_bytes(b.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("offset 0x1be"), "{e}");

    put32(&mut b, 446 + 12, 2048);
    b[446 + 16 + 4] = 0x83;
    put32(&mut b, 446 + 16 + 8, 3000);
    put32(&mut b, 446 + 16 + 12, 100);
    let e = read_bytes(b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("overlap"), "{e}");
}

#[test]
fn protective_mbr_without_any_gpt_is_refused() {
    let mut b = vec![0u8; 4 * MIB as usize];
    b[510] = 0x55;
    b[511] = 0xaa;
    b[446 + 4] = 0xee;
    put32(&mut b, 446 + 8, 1);
    put32(&mut b, 446 + 12, 8191);
    let e = read_bytes(b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

#[test]
fn a_forced_sector_size_is_honoured_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = gpt_4k_image(dir.path(), 32 * MIB);
    let d = open(&p);
    let t = partition::read_with(
        d.as_ref(),
        &ReadOptions {
            sector_size: Some(4096),
        },
    )
    .unwrap();
    assert_eq!(t.sector_size, 4096);
    // Read as 512-byte sectors there is no GPT header at LBA 1 or at the end.
    let e = partition::read_with(
        d.as_ref(),
        &ReadOptions {
            sector_size: Some(512),
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(partition::read_with(
        d.as_ref(),
        &ReadOptions {
            sector_size: Some(1000)
        }
    )
    .is_err());
}
