//! `imgsan repack IN -o OUT` on whole disks, through the binary: a GPT disk (BIOS
//! boot partition of random bytes, an EFI vfat partition, swap with a UUID and a
//! label, an ext4 root holding a generated tree) and an MBR disk (GRUB's core image
//! and junk after it in the post-MBR gap, vfat, swap, ext4 root), as RAW and as
//! QCOW2.
//!
//! Oracles: `e2fsck -fn` and `dumpe2fs -h` on the output's ext4 partition, the
//! generator's model for the tree read back (tests/common/check.rs), `sgdisk -v`
//! and `sfdisk -V` for the partition tables, `blkid` for the swap's identity,
//! `resize2fs` for growing a shrunk output back, blake3 for what must be
//! byte-identical (BIOS boot, EFI, the table, the input itself, two runs).

mod common;
#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::check::{self, Expect};
use common::ext4img::{self, Variant};
use common::gen::{self, GenConfig, Model};
use imgsan::fs::ext4::ondisk::inode_flags;

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");
const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
const ROOT_UUID: &str = "5d1e7c4a-90b1-4f3e-a2c7-1f6b0d9e8a21";
const ROOT_LABEL: &str = "cloudimg-root";
const HASH_SEED: &str = "0f4c9a2e-7b61-4d38-9e05-c3a1b7d2f468";
const SWAP_UUID: &str = "2b7f1e3c-6a45-4d9b-8c10-9e2f5a7d3b64";
const SWAP_LABEL: &str = "swap0";
const ROOT_MIB: u64 = 48;
const EFI_MIB: u64 = 16;
const SWAP_MIB: u64 = 8;

/// The source filesystems, made once per test binary.
struct Fixture {
    dir: tempfile::TempDir,
    model: Model,
    variant: Variant,
}

impl Fixture {
    fn root_img(&self) -> PathBuf {
        self.dir.path().join("root.img")
    }
    fn efi_img(&self) -> PathBuf {
        self.dir.path().join("efi.img")
    }
    fn swap_img(&self) -> PathBuf {
        self.dir.path().join("swap.img")
    }
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GenConfig {
            files: 400,
            dirs: 30,
            big_dir: 1500,
            deep: 12,
            symlinks: 30,
            max_file: 64 * 1024,
            sparse: 4,
            hard_links: 20,
            xattr_percent: 30,
            specials: 10,
            ..GenConfig::tiny(0x2e9ac4, 4096)
        };
        let model = gen::generate(&dir.path().join("src"), &cfg);
        let variant = ext4img::variants()
            .into_iter()
            .find(|v| v.name == "default")
            .unwrap();
        let root = dir.path().join("root.img");
        ext4img::mkfs(
            &root,
            &variant,
            Some(&dir.path().join("src")),
            &format!("{ROOT_MIB}M"),
            &[
                "-U",
                ROOT_UUID,
                "-L",
                ROOT_LABEL,
                "-E",
                &format!("hash_seed={HASH_SEED}"),
                // The generator gives inodes project ids.
                "-O",
                "project",
                // 16 MiB block groups, so that --shrink (whole groups) has
                // something to take from a small filesystem.
                "-g",
                "4096",
            ],
        );
        ext4img::apply_extra(&root, &model, &variant);

        let efi_src = dir.path().join("efi-src");
        fs::create_dir_all(efi_src.join("EFI/BOOT")).unwrap();
        fs::write(
            efi_src.join("EFI/BOOT/BOOTX64.EFI"),
            guest::det_bytes("repack/efi/boot", 300_000),
        )
        .unwrap();
        fs::write(
            efi_src.join("EFI/BOOT/grub.cfg"),
            b"configfile /boot/grub.cfg\n",
        )
        .unwrap();
        disk::make_vfat(
            &dir.path().join("efi.img"),
            &efi_src,
            EFI_MIB,
            "1A2B-3C4D",
            "EFI",
        );

        let swap = dir.path().join("swap.img");
        disk::make_swap(&swap, SWAP_MIB, SWAP_UUID, SWAP_LABEL);
        // Paged-out memory: must not survive.
        write_at(&swap, 3 * 4096, &guest::det_bytes("repack/swap/page", 4096));
        Fixture {
            dir,
            model,
            variant,
        }
    })
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).unwrap();
    v
}

/// Copies a byte range of `src` into a new sparse file.
fn extract(src: &Path, offset: u64, len: u64, out: &Path) {
    let _ = fs::remove_file(out);
    let f = fs::File::create(out).unwrap();
    f.set_len(len).unwrap();
    drop(f);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(4 * MIB);
        let chunk = read_range(src, offset + done, n);
        if chunk.iter().any(|&b| b != 0) {
            write_at(out, done, &chunk);
        }
        done += n;
    }
}

fn tool(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e} (see .ci/setup.sh)"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    BiosBoot,
    Efi,
    Swap,
    Root,
}

#[derive(Clone, Debug)]
struct Part {
    number: u32,
    role: Role,
    start: u64,
    size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Gpt,
    Mbr,
}

struct Disk {
    path: PathBuf,
    table: Table,
    parts: Vec<Part>,
}

impl Disk {
    fn part(&self, role: Role) -> &Part {
        self.parts.iter().find(|p| p.role == role).unwrap()
    }
}

const PART_GUIDS: [&str; 4] = [
    "7a1d3c5e-2b4f-4e6a-8c0d-1e3f5a7b9c01",
    "7a1d3c5e-2b4f-4e6a-8c0d-1e3f5a7b9c02",
    "7a1d3c5e-2b4f-4e6a-8c0d-1e3f5a7b9c03",
    "7a1d3c5e-2b4f-4e6a-8c0d-1e3f5a7b9c04",
];

/// Packs the fixture's filesystems into a disk. The root is last, so that
/// `--shrink` and `--size` may resize it.
fn make_disk(fx: &Fixture, table: Table, out: &Path) -> Disk {
    let roles: &[(Role, u64)] = match table {
        Table::Gpt => &[
            (Role::BiosBoot, 1),
            (Role::Efi, EFI_MIB),
            (Role::Swap, SWAP_MIB),
            (Role::Root, ROOT_MIB),
        ],
        Table::Mbr => &[
            (Role::Efi, EFI_MIB),
            (Role::Swap, SWAP_MIB),
            (Role::Root, ROOT_MIB),
        ],
    };
    let mut parts = Vec::new();
    let mut at = MIB;
    for (i, (role, mib)) in roles.iter().enumerate() {
        parts.push(Part {
            number: i as u32 + 1,
            role: *role,
            start: at,
            size: mib * MIB,
        });
        at += mib * MIB;
    }
    let len = at + MIB;
    let _ = fs::remove_file(out);
    fs::File::create(out).unwrap().set_len(len).unwrap();
    match table {
        Table::Gpt => {
            let mut c = Command::new("sgdisk");
            c.arg("-o")
                .arg("--disk-guid=3f2e1d0c-4b5a-4697-8a1b-2c3d4e5f6a7b");
            for p in &parts {
                let code = match p.role {
                    Role::BiosBoot => "EF02",
                    Role::Efi => "EF00",
                    Role::Swap => "8200",
                    Role::Root => "8300",
                };
                let n = p.number;
                c.arg(format!(
                    "--new={n}:{}:{}",
                    p.start / SECTOR,
                    (p.start + p.size) / SECTOR - 1
                ))
                .arg(format!("--typecode={n}:{code}"))
                .arg(format!(
                    "--partition-guid={n}:{}",
                    PART_GUIDS[n as usize - 1]
                ))
                .arg(format!("--change-name={n}:{:?}", p.role));
            }
            let o = tool(c.arg(out));
            assert!(o.status.success(), "sgdisk: {}", text(&o));
        }
        Table::Mbr => {
            let mut script = "label: dos\nlabel-id: 0x5eed1234\nunit: sectors\n\n".to_string();
            for p in &parts {
                let (ty, boot) = match p.role {
                    Role::Efi => ("ef", ""),
                    Role::Swap => ("82", ""),
                    _ => ("83", ", bootable"),
                };
                script += &format!(
                    "start={}, size={}, type={ty}{boot}\n",
                    p.start / SECTOR,
                    p.size / SECTOR
                );
            }
            let mut child = Command::new("sfdisk")
                .args(["--quiet", "--no-reread", "--no-tell-kernel"])
                .arg(out)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("sfdisk runs");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "sfdisk: {}", text(&o));
        }
    }
    // Boot code: the MBR's first 440 bytes, and GRUB's core image in the BIOS
    // boot partition (GPT) or the gap after the MBR.
    let mut code = guest::det_bytes("repack/mbr-code", 440);
    code[..3].copy_from_slice(&[0xeb, 0x63, 0x90]);
    write_at(out, 0, &code);
    match table {
        Table::Gpt => {
            let bb = parts.iter().find(|p| p.role == Role::BiosBoot).unwrap();
            write_at(
                out,
                bb.start,
                &guest::det_bytes("repack/bios-boot", MIB as usize),
            );
        }
        // GRUB's real core image, then junk up to the first partition.
        Table::Mbr => {
            let core = disk::grub_core_image();
            write_at(out, SECTOR, &core);
            let after = SECTOR + core.len() as u64;
            write_at(
                out,
                after,
                &guest::det_bytes("repack/gap", (MIB - after) as usize),
            );
        }
    }
    for p in &parts {
        let img = match p.role {
            Role::Efi => fx.efi_img(),
            Role::Swap => fx.swap_img(),
            Role::Root => fx.root_img(),
            Role::BiosBoot => continue,
        };
        disk::copy_into(out, p.start, &img);
    }
    Disk {
        path: out.to_path_buf(),
        table,
        parts,
    }
}

fn repack(input: &Path, out: &Path, extra: &[&str]) -> Output {
    tool(
        Command::new(BIN)
            .arg("--quiet")
            .arg("repack")
            .arg(input)
            .arg("-o")
            .arg(out)
            .args(extra),
    )
}

fn repack_ok(input: &Path, out: &Path, extra: &[&str]) {
    let o = repack(input, out, extra);
    assert!(o.status.success(), "imgsan repack {extra:?}: {}", text(&o));
}

fn b3(p: &Path) -> String {
    disk::blake3_file(p)
}

fn b3_range(p: &Path, offset: u64, len: u64) -> String {
    disk::blake3_range(p, offset, len)
}

/// `e2fsck -fn` exits 0 and prints nothing but its pass lines and summary.
fn fsck_clean(img: &Path) {
    let o = tool(Command::new("e2fsck").arg("-fn").arg(img));
    let t = text(&o);
    let complaints: Vec<&str> = t
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("e2fsck ")
                || l.starts_with("Pass ")
                || (l.contains(" files (") && l.contains(" blocks")))
        })
        .collect();
    assert!(
        o.status.success() && complaints.is_empty(),
        "e2fsck -fn {}: {:?}\n{t}",
        img.display(),
        o.status
    );
}

fn dumpe2fs(img: &Path) -> BTreeMap<String, String> {
    let o = tool(Command::new("dumpe2fs").arg("-h").arg(img));
    assert!(o.status.success(), "dumpe2fs: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn expect(v: &Variant) -> Expect {
    Expect {
        ns: v.has_extra(),
        crtime: v.has_extra(),
        projid: v.has_extra(),
        extra: true,
        root_extra: &[b"lost+found"],
        structural_flags: inode_flags::STRUCTURAL,
    }
}

/// The partition table checker for the disk's scheme reports no problem.
fn table_clean(img: &Path, table: Table) {
    match table {
        Table::Gpt => {
            let o = tool(Command::new("sgdisk").arg("-v").arg(img));
            let t = text(&o);
            assert!(
                o.status.success() && t.contains("No problems found"),
                "sgdisk -v {}: {t}",
                img.display()
            );
        }
        Table::Mbr => {
            let o = tool(Command::new("sfdisk").arg("-V").arg(img));
            assert!(
                o.status.success(),
                "sfdisk -V {}: {}",
                img.display(),
                text(&o)
            );
        }
    }
}

/// Partition (start, size) in bytes as the table in `img` says, by number.
fn table_parts(img: &Path) -> BTreeMap<u32, (u64, u64)> {
    let o = tool(Command::new("sfdisk").args(["-J"]).arg(img));
    assert!(o.status.success(), "sfdisk -J: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let digits: String = node
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (
                digits.parse().unwrap(),
                (
                    p["start"].as_u64().unwrap() * SECTOR,
                    p["size"].as_u64().unwrap() * SECTOR,
                ),
            )
        })
        .collect()
}

/// Everything the acceptance asks of one output disk. `root` is the output's
/// root partition (start, size); other partitions keep their place.
fn check_output(fx: &Fixture, src: &Disk, out: &Path, work: &Path) {
    table_clean(out, src.table);
    let parts = table_parts(out);
    assert_eq!(parts.len(), src.parts.len());
    for p in &src.parts {
        let (start, size) = parts[&p.number];
        assert_eq!(start, p.start, "partition {} moved", p.number);
        if p.role != Role::Root {
            assert_eq!(size, p.size, "partition {} changed size", p.number);
        }
    }

    // Boot code, BIOS boot and EFI: byte-identical.
    assert_eq!(
        b3_range(out, 0, 440),
        b3_range(&src.path, 0, 440),
        "MBR boot code"
    );
    match src.table {
        Table::Gpt => {
            let bb = src.part(Role::BiosBoot);
            assert_eq!(
                b3_range(out, bb.start, bb.size),
                b3_range(&src.path, bb.start, bb.size),
                "BIOS boot partition"
            );
        }
        Table::Mbr => {
            let core = disk::grub_core_image().len() as u64;
            assert_eq!(
                b3_range(out, SECTOR, core),
                b3_range(&src.path, SECTOR, core),
                "GRUB's core image"
            );
            assert!(
                read_range(out, SECTOR + core, MIB - SECTOR - core)
                    .iter()
                    .all(|&b| b == 0),
                "the post-MBR gap past GRUB's core image is a hole"
            );
        }
    }
    let efi = src.part(Role::Efi);
    assert_eq!(
        b3_range(out, efi.start, efi.size),
        b3_range(&src.path, efi.start, efi.size),
        "EFI system partition"
    );

    // Swap: same identity, nothing but the header.
    let sw = src.part(Role::Swap);
    let swap_out = work.join("swap.out");
    extract(out, sw.start, sw.size, &swap_out);
    let o = tool(
        Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&swap_out),
    );
    let blkid = String::from_utf8_lossy(&o.stdout).into_owned();
    for want in [
        "TYPE=swap".to_string(),
        format!("UUID={SWAP_UUID}"),
        format!("LABEL={SWAP_LABEL}"),
    ] {
        assert!(blkid.lines().any(|l| l == want), "blkid swap: {blkid}");
    }
    let page = 4096;
    let rest = read_range(&swap_out, page, sw.size - page);
    assert!(
        rest.iter().all(|&b| b == 0),
        "swap holds data past its header"
    );
    let header = read_range(&swap_out, 0, page);
    let src_header = read_range(&src.path, sw.start, page);
    assert_eq!(
        header[1024..],
        src_header[1024..],
        "the swap header (version, size, UUID, label, signature) is mkswap's"
    );

    // The root: fsck-clean, same identity, same tree.
    let (rstart, rsize) = parts[&src.part(Role::Root).number];
    let root_out = work.join("root.out");
    extract(out, rstart, rsize, &root_out);
    fsck_clean(&root_out);
    let a = dumpe2fs(&fx.root_img());
    let b = dumpe2fs(&root_out);
    for k in [
        "Filesystem features",
        "Filesystem UUID",
        "Filesystem volume name",
        "Block size",
        "Inode size",
        "Directory Hash Seed",
        "Default directory hash",
        "Checksum seed",
    ] {
        assert_eq!(a.get(k), b.get(k), "dumpe2fs -h {k}");
    }
    assert_eq!(b["Filesystem volume name"], ROOT_LABEL);
    assert_eq!(b["Filesystem UUID"], ROOT_UUID);
    assert_eq!(b["Filesystem state"], "clean");
    assert_eq!(
        b["Block count"].parse::<u64>().unwrap() * 4096,
        rsize / 4096 * 4096,
        "the filesystem fills its partition"
    );
    let vol =
        imgsan::fs::ext4::read::open(imgsan::disk::open(&root_out).unwrap(), &Default::default())
            .unwrap();
    check::assert_same(&vol.tree, &fx.model, &expect(&fx.variant), "repacked root");
    assert!(!vol.info.journal.needs_recovery);
}

#[test]
fn gpt_disk_raw_and_qcow2() {
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_disk(fx, Table::Gpt, &w.join("src.raw"));
    table_clean(&src.path, Table::Gpt);
    let before = b3(&src.path);

    let out = w.join("out.raw");
    repack_ok(&src.path, &out, &[]);
    assert_eq!(b3(&src.path), before, "the input was modified");
    assert_eq!(
        fs::metadata(&out).unwrap().len(),
        fs::metadata(&src.path).unwrap().len()
    );
    check_output(fx, &src, &out, w);
    // Same size: the partition table (primary and backup GPT) is verbatim.
    let len = fs::metadata(&out).unwrap().len();
    assert_eq!(
        b3_range(&out, 0, 34 * SECTOR),
        b3_range(&src.path, 0, 34 * SECTOR)
    );
    assert_eq!(
        b3_range(&out, len - 33 * SECTOR, 33 * SECTOR),
        b3_range(&src.path, len - 33 * SECTOR, 33 * SECTOR)
    );
    // The output is sparse: far fewer bytes allocated than the disk's size.
    use std::os::unix::fs::MetadataExt;
    let allocated = fs::metadata(&out).unwrap().blocks() * 512;
    assert!(allocated < len / 2, "{allocated} bytes allocated of {len}");

    // Determinism, and QCOW2 input giving the very same output.
    let again = w.join("again.raw");
    repack_ok(&src.path, &again, &[]);
    assert_eq!(b3(&again), b3(&out), "two runs differ");
    let qcow = w.join("src.qcow2");
    disk::to_qcow2(&src.path, &qcow, true);
    let qbefore = b3(&qcow);
    let from_qcow = w.join("from-qcow.raw");
    repack_ok(&qcow, &from_qcow, &[]);
    assert_eq!(b3(&from_qcow), b3(&out), "QCOW2 input gives another output");
    assert_eq!(b3(&qcow), qbefore, "the QCOW2 input was modified");
    assert_eq!(b3(&src.path), before, "the input was modified");
}

#[test]
fn gpt_disk_shrinks_then_grows_back() {
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_disk(fx, Table::Gpt, &w.join("src.raw"));
    let src_len = fs::metadata(&src.path).unwrap().len();
    let small = w.join("small.raw");
    repack_ok(&src.path, &small, &["--shrink", "--margin", "4M"]);
    let small_len = fs::metadata(&small).unwrap().len();
    assert!(
        small_len < src_len - 8 * MIB,
        "--shrink: {small_len} bytes from {src_len}"
    );
    check_output(fx, &src, &small, w);
    let root = src.part(Role::Root);
    let (_, shrunk) = table_parts(&small)[&root.number];
    assert!(shrunk < root.size);

    // First boot on a bigger disk: move the backup GPT to the end, grow the
    // root partition (same start, GUID and name), resize2fs, e2fsck.
    let grown = w.join("grown.raw");
    let o = tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&small)
            .arg(&grown),
    );
    assert!(o.status.success());
    fs::OpenOptions::new()
        .write(true)
        .open(&grown)
        .unwrap()
        .set_len(src_len)
        .unwrap();
    let n = root.number;
    let o = tool(
        Command::new("sgdisk")
            .arg("-e")
            .arg(format!("--delete={n}"))
            .arg(format!("--new={n}:{}:0", root.start / SECTOR))
            .arg(format!("--typecode={n}:8300"))
            .arg(format!(
                "--partition-guid={n}:{}",
                PART_GUIDS[n as usize - 1]
            ))
            .arg(format!("--change-name={n}:Root"))
            .arg(&grown),
    );
    assert!(o.status.success(), "sgdisk: {}", text(&o));
    table_clean(&grown, Table::Gpt);
    let (start, size) = table_parts(&grown)[&n];
    assert_eq!(start, root.start);
    assert!(size > shrunk);
    let part = w.join("grown-root.img");
    extract(&grown, start, size, &part);
    let o = tool(Command::new("resize2fs").arg(&part));
    assert!(o.status.success(), "resize2fs: {}", text(&o));
    fsck_clean(&part);
    let d = dumpe2fs(&part);
    // resize2fs fills the partition, less a last group too small to be worth
    // having: at least the source's size again.
    let blocks = d["Block count"].parse::<u64>().unwrap();
    assert!(
        blocks <= size / 4096 && blocks >= ROOT_MIB * MIB / 4096,
        "{blocks} blocks in a {size}-byte partition"
    );
    assert_eq!(d["Filesystem UUID"], ROOT_UUID);
}

#[test]
fn gpt_disk_grows_with_size() {
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_disk(fx, Table::Gpt, &w.join("src.raw"));
    let big = w.join("big.raw");
    let want = 96 * MIB;
    repack_ok(&src.path, &big, &["--size", "96M"]);
    assert_eq!(fs::metadata(&big).unwrap().len(), want);
    check_output(fx, &src, &big, w);
    let root = src.part(Role::Root);
    let (start, size) = table_parts(&big)[&root.number];
    assert!(size > root.size, "{size} <= {}", root.size);
    // The root ends where the backup GPT's area begins.
    assert!(start + size <= want - 33 * SECTOR && start + size > want - 2 * MIB);
}

#[test]
fn mbr_disk_as_is_and_shrunk() {
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_disk(fx, Table::Mbr, &w.join("src.raw"));
    table_clean(&src.path, Table::Mbr);
    let before = b3(&src.path);
    let out = w.join("out.raw");
    repack_ok(&src.path, &out, &[]);
    check_output(fx, &src, &out, w);
    assert_eq!(
        b3_range(&out, 0, SECTOR),
        b3_range(&src.path, 0, SECTOR),
        "the MBR"
    );
    let small = w.join("small.raw");
    repack_ok(&src.path, &small, &["--shrink", "--margin", "4M"]);
    assert!(fs::metadata(&small).unwrap().len() < fs::metadata(&src.path).unwrap().len());
    check_output(fx, &src, &small, w);
    assert_eq!(b3(&src.path), before, "the input was modified");
}

#[test]
fn unreadable_input_leaves_no_output() {
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_disk(fx, Table::Gpt, &w.join("src.raw"));
    // One byte of the root's volume name: the superblock checksum no longer
    // matches.
    let root = src.part(Role::Root);
    let at = root.start + 1024 + 0x78;
    let mut b = read_range(&src.path, at, 1);
    b[0] ^= 0x20;
    write_at(&src.path, at, &b);
    let before = b3(&src.path);
    let listing = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let files = listing(w);
    let out = w.join("out.raw");
    let o = repack(&src.path, &out, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("partition 4"), "{}", text(&o));
    assert!(!out.exists());
    assert_eq!(listing(w), files, "a temporary file was left behind");
    assert_eq!(b3(&src.path), before);
    // Not an image at all: exit 3 too.
    let o = repack(&w.join("missing.raw"), &out, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!out.exists());
}
