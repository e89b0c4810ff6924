//! LVM2 end to end, through the binary: disks whose filesystems live on logical
//! volumes, made with lvm2's own tools and no device-mapper (pvcreate, vgcreate,
//! vgcfgbackup, a `logical_volumes` section added to the backup, vgcfgrestore;
//! each LV's filesystem then written at `pe_start + extent * extent size`).
//!
//! Oracles imgsan shares no code with: on loop devices over the output's PV
//! partitions, `pvs`, `vgs`, `lvs -o +seg_pe_ranges`, `pvck` and `vgck` must
//! accept what imgsan wrote, and say where each LV's extents are; each LV is then
//! cut out at those extents and checked with `e2fsck -fn` or `blkid`; `sgdisk -v`
//! for the rewritten partition table; a byte scan for planted markers.
//!
//! Every lvm2 command is confined to this test's own loop devices (`--devices`)
//! and keeps no archive or backup on the host. Runs in about a minute (dev
//! profile, no KVM needed); the sanitize case builds a Rocky 9 guest tree
//! (cached between runs).

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");
const MIB: u64 = 1 << 20;
const LVM_CONFIG: &str = "devices { use_devicesfile = 0 } backup { backup = 0 archive = 0 }";
const ROOT_UUID: &str = "6a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const BOOT_UUID: &str = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const SWAP_UUID: &str = "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9";

fn imgsan(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("CI", "1")
        .output()
        .expect("imgsan runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn tool(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("tool runs");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn run(cmd: &mut Command) -> String {
    let (good, out) = tool(cmd);
    assert!(good, "{cmd:?} failed:\n{out}");
    out
}

/// A loop device over a byte range of a file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(file: &Path, offset: u64, len: u64) -> Loop {
        let out = run(Command::new("losetup")
            .args([
                "-f",
                "--show",
                "-o",
                &offset.to_string(),
                "--sizelimit",
                &len.to_string(),
            ])
            .arg(file));
        Loop(out.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// An lvm2 command confined to `devs`. Its complaints about the missing
/// device-mapper are expected here and dropped from the output.
fn lvm(cmd: &str, devs: &[&Loop], args: &[&str]) -> (bool, String) {
    let names: Vec<&str> = devs.iter().map(|d| d.0.as_str()).collect();
    let (good, out) = tool(
        Command::new(cmd)
            .args(["--config", LVM_CONFIG, "--devices", &names.join(",")])
            .args(args)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1"),
    );
    let out = out
        .lines()
        .filter(|l| {
            !(l.contains("/dev/mapper/control")
                || l.contains("device-mapper")
                || l.contains("libdevmapper")
                || l.contains("Failed to check for active volumes"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    (good, out)
}

fn lvm_ok(cmd: &str, devs: &[&Loop], args: &[&str]) -> String {
    let (good, out) = lvm(cmd, devs, args);
    assert!(good, "{cmd} {args:?} failed:\n{out}");
    out
}

/// A partition: byte start and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    start: u64,
    len: u64,
}

/// The partitions of a disk as sfdisk reads them.
fn parts_of(img: &Path) -> Vec<Part> {
    let out = run(Command::new("sfdisk").arg("--json").arg(img));
    let v: Value = serde_json::from_str(&out).unwrap();
    let ss = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            start: p["start"].as_u64().unwrap() * ss,
            len: p["size"].as_u64().unwrap() * ss,
        })
        .collect()
}

/// A sparse GPT disk with partitions of the given sizes (MiB; 0 for the rest)
/// and sgdisk type codes.
fn gpt_disk(img: &Path, size: u64, parts: &[(u64, &str)]) -> Vec<Part> {
    let f = fs::File::create(img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut c = Command::new("sgdisk");
    for (i, (mib, code)) in parts.iter().enumerate() {
        let n = i + 1;
        let end = if *mib == 0 {
            "0".to_string()
        } else {
            format!("+{mib}M")
        };
        c.arg(format!("-n{n}:0:{end}")).arg(format!("-t{n}:{code}"));
    }
    run(c.arg(img));
    parts_of(img)
}

/// Copies `len` bytes of `src` from `src_off` into `dst` at `dst_off`, skipping
/// holes and all-zero blocks.
fn copy_range(src: &Path, src_off: u64, len: u64, dst: &Path, dst_off: u64) {
    use std::os::unix::fs::FileExt;
    let s = fs::File::open(src).unwrap();
    let d = fs::OpenOptions::new().write(true).open(dst).unwrap();
    let end = src_off + len;
    let mut pos = src_off;
    let mut buf = vec![0u8; 4 * MIB as usize];
    while pos < end {
        let data = match rustix::fs::seek(&s, rustix::fs::SeekFrom::Data(pos)) {
            Ok(x) => x,
            Err(_) => break,
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(&s, rustix::fs::SeekFrom::Hole(data))
            .unwrap_or(end)
            .min(end);
        let mut at = data;
        while at < hole {
            let n = (hole - at).min(buf.len() as u64) as usize;
            s.read_exact_at(&mut buf[..n], at).unwrap();
            for (i, chunk) in buf[..n].chunks(4096).enumerate() {
                if chunk.iter().any(|&b| b != 0) {
                    d.write_all_at(chunk, dst_off + (at - src_off) + i as u64 * 4096)
                        .unwrap();
                }
            }
            at += n as u64;
        }
        pos = hole;
    }
}

fn sparse_file(p: &Path, len: u64) {
    let f = fs::File::create(p).unwrap();
    f.set_len(len).unwrap();
}

/// mke2fs an ext4 image of `mib` MiB from `dir`.
fn make_ext4(img: &Path, dir: &Path, len: u64, uuid: &str, label: &str) {
    sparse_file(img, len);
    run(Command::new("mke2fs")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-U", uuid, "-L", label, "-d",
        ])
        .arg(dir)
        .arg(img));
}

fn make_swap(img: &Path, len: u64, uuid: &str, label: &str) {
    sparse_file(img, len);
    run(Command::new("mkswap")
        .args(["-q", "-U", uuid, "-L", label])
        .arg(img));
}

/// A segment of an LV: PV index in the VG, first physical extent, extent count.
type Seg = (usize, u64, u64);

struct LvSpec {
    name: &'static str,
    segs: Vec<Seg>,
    /// The LV's whole section as written, for what is not linear ("{pv0}"
    /// stands for the first PV's key).
    raw: Option<String>,
}

impl LvSpec {
    fn linear(name: &'static str, segs: Vec<Seg>) -> LvSpec {
        LvSpec {
            name,
            segs,
            raw: None,
        }
    }
}

/// What lvm2 reports about a VG it created.
struct VgMade {
    extent: u64,
    /// Per PV (in the order given): the partition and its first extent's offset.
    pvs: Vec<(Part, u64)>,
}

/// Makes a VG over the partitions `pvs` of `img` with the LVs given, through
/// vgcfgrestore. `copies` metadata areas per PV (1 or 2).
fn make_vg(
    img: &Path,
    pvs: &[Part],
    vg: &str,
    extent_mib: u64,
    lvs: &[LvSpec],
    copies: u32,
) -> VgMade {
    let work = tempfile::tempdir().unwrap();
    let loops: Vec<Loop> = pvs.iter().map(|p| Loop::new(img, p.start, p.len)).collect();
    let devs: Vec<&Loop> = loops.iter().collect();
    let names: Vec<&str> = loops.iter().map(|l| l.0.as_str()).collect();
    for l in &loops {
        lvm_ok(
            "pvcreate",
            &devs,
            &[
                "-q",
                "-ff",
                "-y",
                "--pvmetadatacopies",
                &copies.to_string(),
                &l.0,
            ],
        );
    }
    let mut args = vec!["-q", "-s"];
    let s = format!("{extent_mib}m");
    args.push(&s);
    args.push(vg);
    args.extend(names.iter().copied());
    lvm_ok("vgcreate", &devs, &args);
    let backup = work.path().join("vg.txt");
    lvm_ok(
        "vgcfgbackup",
        &devs,
        &["-q", "-f", backup.to_str().unwrap(), vg],
    );
    let t = fs::read_to_string(&backup).unwrap();
    // Which pvN key each loop device got.
    let key_of = |dev: &str| -> String {
        let at = t
            .find(&format!("device = \"{dev}\""))
            .expect("device in backup");
        let head = &t[..at];
        let k = head.rfind("pv").unwrap();
        head[k..].split_whitespace().next().unwrap().to_string()
    };
    let keys: Vec<String> = names.iter().map(|d| key_of(d)).collect();
    let mut section = String::from("logical_volumes {\n");
    for (n, lv) in lvs.iter().enumerate() {
        if let Some(raw) = &lv.raw {
            section += &raw.replace("{pv0}", &keys[0]);
            continue;
        }
        section += &format!(
            "{} {{\nid = \"lvlvlv-{:04}-aaaa-bbbb-cccc-dddd-eeeeee\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\nsegment_count = {}\n",
            lv.name,
            n,
            lv.segs.len()
        );
        let mut le = 0;
        for (i, (pv, pe, count)) in lv.segs.iter().enumerate() {
            section += &format!(
                "segment{} {{\nstart_extent = {le}\nextent_count = {count}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"{}\", {pe}]\n}}\n",
                i + 1,
                keys[*pv]
            );
            le += count;
        }
        section += "}\n";
    }
    section += "}\n";
    let i = t.rfind('}').unwrap();
    let restored = format!("{}{section}{}", &t[..i], &t[i..]);
    fs::write(&backup, restored).unwrap();
    lvm_ok(
        "vgcfgrestore",
        &devs,
        &["-q", "--force", "-f", backup.to_str().unwrap(), vg],
    );
    let extent = lvm_ok(
        "vgs",
        &devs,
        &[
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "-o",
            "vg_extent_size",
            vg,
        ],
    )
    .trim()
    .parse::<u64>()
    .unwrap();
    let mut made = Vec::new();
    for (l, p) in loops.iter().zip(pvs) {
        let pe_start = lvm_ok(
            "pvs",
            &devs,
            &[
                "--noheadings",
                "--nosuffix",
                "--units",
                "b",
                "-o",
                "pe_start",
                &l.0,
            ],
        )
        .trim()
        .parse::<u64>()
        .unwrap();
        made.push((*p, pe_start));
    }
    VgMade { extent, pvs: made }
}

/// Writes `content` (as long as the LV) into the LV's extents.
fn write_lv(img: &Path, vg: &VgMade, lv: &LvSpec, content: &Path) {
    let mut le = 0;
    for &(pv, pe, count) in &lv.segs {
        let (part, pe_start) = vg.pvs[pv];
        copy_range(
            content,
            le * vg.extent,
            count * vg.extent,
            img,
            part.start + pe_start + pe * vg.extent,
        );
        le += count;
    }
}

/// What lvm2 says about the output: every command accepts it, and where each
/// LV's extents are.
struct LvmView {
    extent: u64,
    /// Per LV: (name, [(PV partition start + pe_start + pe * extent, bytes)]).
    lvs: Vec<(String, Vec<(u64, u64)>)>,
    pv_sizes: Vec<u64>,
    pe_counts: Vec<u64>,
    seqno: u64,
    report: String,
}

fn json(out: &str) -> Value {
    let start = out.find('{').expect("JSON in lvm output");
    serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs lvm2 over the PV partitions of `img` (indices into its table).
fn lvm_accepts(img: &Path, pv_parts: &[usize], vg: &str) -> LvmView {
    let parts = parts_of(img);
    let loops: Vec<Loop> = pv_parts
        .iter()
        .map(|&i| Loop::new(img, parts[i].start, parts[i].len))
        .collect();
    let devs: Vec<&Loop> = loops.iter().collect();
    let mut report = String::new();
    for l in &loops {
        // pvck reads only the device it is given; with --devices it checks
        // nothing at all.
        for args in [&["pvck"][..], &["pvck", "--dump", "headers"]] {
            let (good, out) = tool(
                Command::new(args[0])
                    .args(["--config", LVM_CONFIG])
                    .args(&args[1..])
                    .arg(&l.0)
                    .env("LVM_SUPPRESS_FD_WARNINGS", "1"),
            );
            assert!(good, "{args:?} {}:\n{out}", l.0);
            assert!(
                out.contains("label_header") || out.contains("Found label"),
                "{args:?} {} checked nothing:\n{out}",
                l.0
            );
            for bad in ["CHECK", "WARNING", "rror", "bad", "Cannot"] {
                assert!(!out.contains(bad), "{args:?} {}:\n{out}", l.0);
            }
            report += &out;
        }
    }
    let out = lvm_ok("vgck", &devs, &[vg]);
    assert!(
        !out.contains("WARNING") && !out.contains("rror"),
        "vgck:\n{out}"
    );
    let pvs = json(&lvm_ok(
        "pvs",
        &devs,
        &[
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pv_name,vg_name,pe_start,pv_pe_count,dev_size,pv_size",
        ],
    ));
    let vgs = json(&lvm_ok(
        "vgs",
        &devs,
        &[
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_name,vg_extent_size,vg_seqno,pv_count,lv_count",
            vg,
        ],
    ));
    let lvs = json(&lvm_ok(
        "lvs",
        &devs,
        &[
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "+seg_pe_ranges,seg_start_pe,seg_size_pe",
            vg,
        ],
    ));
    report += &format!("{pvs}\n{vgs}\n{lvs}\n");
    let n = |v: &Value| -> u64 { v.as_str().unwrap().trim().parse().unwrap() };
    let vgr = &vgs["report"][0]["vg"][0];
    let extent = n(&vgr["vg_extent_size"]);
    let seqno = n(&vgr["vg_seqno"]);
    let mut pe_start = std::collections::HashMap::new();
    let mut pv_sizes = Vec::new();
    let mut pe_counts = Vec::new();
    for p in pvs["report"][0]["pv"].as_array().unwrap() {
        assert_eq!(p["vg_name"].as_str(), Some(vg), "{report}");
        let name = p["pv_name"].as_str().unwrap().to_string();
        let i = loops.iter().position(|l| l.0 == name).unwrap();
        pe_start.insert(name, parts[pv_parts[i]].start + n(&p["pe_start"]));
        pv_sizes.push(n(&p["dev_size"]));
        pe_counts.push(n(&p["pv_pe_count"]));
    }
    let mut out: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
    for s in lvs["report"][0]["lv"].as_array().unwrap() {
        let name = s["lv_name"].as_str().unwrap().to_string();
        // "/dev/loop3:10-19"
        let ranges = s["seg_pe_ranges"].as_str().unwrap();
        let (dev, r) = ranges.rsplit_once(':').unwrap();
        let (a, b) = r.split_once('-').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        let piece = (pe_start[dev] + a * extent, (b - a + 1) * extent);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(piece),
            None => out.push((name, vec![piece])),
        }
    }
    LvmView {
        extent,
        lvs: out,
        pv_sizes,
        pe_counts,
        seqno,
        report,
    }
}

impl LvmView {
    fn lv(&self, name: &str) -> &[(u64, u64)] {
        &self
            .lvs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no LV {name}:\n{}", self.report))
            .1
    }

    /// The LV's bytes cut out of `img` into a file of their own.
    fn extract(&self, img: &Path, name: &str, dir: &Path) -> PathBuf {
        let out = dir.join(format!("lv-{name}.img"));
        let pieces = self.lv(name);
        sparse_file(&out, pieces.iter().map(|p| p.1).sum());
        let mut at = 0;
        for &(off, len) in pieces {
            copy_range(img, off, len, &out, at);
            at += len;
        }
        out
    }
}

fn e2fsck_clean(img: &Path) {
    let (good, out) = tool(Command::new("e2fsck").arg("-fn").arg(img));
    assert!(good, "e2fsck -fn {}:\n{out}", img.display());
}

fn blkid(img: &Path) -> String {
    run(Command::new("blkid").args(["-p", "-o", "export"]).arg(img))
}

/// A small root tree: a Rocky-like os-release, an fstab naming LVs the way
/// Rocky's installer does, and a file of known bytes.
fn root_tree(dir: &Path, blob_len: usize) -> Vec<u8> {
    fs::create_dir_all(dir.join("etc/lvm/devices")).unwrap();
    fs::create_dir_all(dir.join("etc/lvm/archive")).unwrap();
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::create_dir_all(dir.join("boot")).unwrap();
    fs::write(
        dir.join("etc/os-release"),
        "NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/fstab"),
        format!("/dev/mapper/rocky-root / ext4 defaults 0 0\nUUID={BOOT_UUID} /boot ext4 defaults 1 2\n/dev/rocky/swap none swap defaults 0 0\n"),
    )
    .unwrap();
    fs::write(
        dir.join("etc/lvm/devices/system.devices"),
        "VERSION=1.1.1\nIDTYPE=sys_wwid IDNAME=naa.600 DEVNAME=/dev/sda3 PVID=x\n",
    )
    .unwrap();
    fs::write(dir.join("etc/lvm/archive/rocky_00000-1.vg"), "rocky { }\n").unwrap();
    let blob: Vec<u8> = (0..blob_len).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(dir.join("data/blob"), &blob).unwrap();
    blob
}

/// The Rocky 9-like layout: BIOS boot, ESP, /boot (ext4), and a PV holding
/// `root` (ext4) and `swap`. Returns the disk and the VG as made.
struct RockyDisk {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    img: PathBuf,
    blob: Vec<u8>,
}

fn rocky_disk(size: u64, root_extents: u64, swap_extents: u64, copies: u32) -> RockyDisk {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let img = dir.join("in.raw");
    let parts = gpt_disk(
        &img,
        size,
        &[(1, "ef02"), (16, "ef00"), (64, "8300"), (0, "8e00")],
    );
    let tree = dir.join("root");
    let blob = root_tree(&tree, 3 << 20);
    let bootdir = dir.join("boot");
    fs::create_dir_all(bootdir.join("grub2")).unwrap();
    fs::write(
        bootdir.join("grub2/grub.cfg"),
        "set root=(lvm/rocky-root)\n",
    )
    .unwrap();
    let boot = dir.join("boot.img");
    make_ext4(&boot, &bootdir, 64 * MIB, BOOT_UUID, "boot");
    copy_range(&boot, 0, 64 * MIB, &img, parts[2].start);
    let root = LvSpec::linear("root", vec![(0, 0, root_extents)]);
    let swap = LvSpec::linear("swap", vec![(0, root_extents, swap_extents)]);
    let vg = make_vg(
        &img,
        &parts[3..4],
        "rocky",
        4,
        &[
            LvSpec::linear("root", vec![(0, 0, root_extents)]),
            LvSpec::linear("swap", vec![(0, root_extents, swap_extents)]),
        ],
        copies,
    );
    let rimg = dir.join("root.img");
    make_ext4(&rimg, &tree, root_extents * vg.extent, ROOT_UUID, "root");
    write_lv(&img, &vg, &root, &rimg);
    let simg = dir.join("swap.img");
    make_swap(&simg, swap_extents * vg.extent, SWAP_UUID, "swap");
    write_lv(&img, &vg, &swap, &simg);
    fs::remove_file(&rimg).unwrap();
    fs::remove_file(&simg).unwrap();
    fs::remove_file(&boot).unwrap();
    RockyDisk {
        _dir: d,
        dir,
        img,
        blob,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn rocky_like_disk_is_inspected_repacked_and_shrunk() {
    let r = rocky_disk(1024 * MIB, 160, 32, 1);

    // inspect: the PV, the VG, both LVs with their segments, and the guest's
    // fstab names resolved to the LVs.
    let o = ok(imgsan(&["inspect", s(&r.img), "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let vg = &v["lvm"]["vgs"][0];
    assert_eq!(vg["name"], "rocky", "{v:#}");
    let lvs: Vec<&str> = vg["lvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(lvs, ["root", "swap"]);
    assert_eq!(vg["lvs"][0]["segments"][0]["extent_count"], 160);
    assert_eq!(vg["lvs"][1]["segments"][0]["pe"], 160);
    let vols = v["volumes"].as_array().unwrap();
    let root = vols
        .iter()
        .find(|x| x["lv"] == "rocky/root")
        .expect("root LV volume");
    assert_eq!(root["filesystem"]["type"], "ext4");
    assert_eq!(root["filesystem"]["uuid"], ROOT_UUID);
    let swap = vols
        .iter()
        .find(|x| x["lv"] == "rocky/swap")
        .expect("swap LV volume");
    assert_eq!(swap["filesystem"]["type"], "swap");
    let mounts = v["facts"]["mounts"].as_array().expect("mounts");
    for m in mounts {
        assert_eq!(m["resolution"]["status"], "volume", "{m:#}");
    }
    let o = ok(imgsan(&["inspect", s(&r.img)]));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("LV rocky/root") && t.contains("LVM VG rocky"),
        "{t}"
    );
    // The guest reads through the LV.
    let o = ok(imgsan(&["cat", s(&r.img), "/data/blob"]));
    assert!(o.stdout == r.blob, "/data/blob differs");

    // repack at the same size: lvm2 accepts the new metadata, the LVs are where
    // it says, and hold a clean ext4 and the same swap identity.
    let same = r.dir.join("same.raw");
    ok(imgsan(&["repack", s(&r.img), "-o", s(&same)]));
    let source_seqno = v["lvm"]["vgs"][0]["seqno"].as_u64().unwrap();
    let view = lvm_accepts(&same, &[3], "rocky");
    assert_eq!(view.seqno, source_seqno + 1, "{}", view.report);
    assert_eq!(
        view.lv("root"),
        &[(parts_of(&same)[3].start + MIB, 160 * view.extent)][..]
    );
    let lv = view.extract(&same, "root", &r.dir);
    e2fsck_clean(&lv);
    let b = blkid(&view.extract(&same, "swap", &r.dir));
    assert!(
        b.contains(&format!("UUID={SWAP_UUID}")) && b.contains("TYPE=swap"),
        "{b}"
    );
    let o = ok(imgsan(&["cat", s(&same), "/data/blob"]));
    assert!(o.stdout == r.blob);

    // --shrink: the root LV shrinks to its rebuilt filesystem, the swap LV moves
    // down behind it, the PV and its partition shrink, and lvm2 still accepts it.
    let small = r.dir.join("small.raw");
    ok(imgsan(&[
        "repack",
        s(&r.img),
        "-o",
        s(&small),
        "--shrink",
        "--margin",
        "16M",
    ]));
    let len = fs::metadata(&small).unwrap().len();
    assert!(len < 512 * MIB, "shrunk to {len}");
    let (good, out) = tool(Command::new("sgdisk").arg("-v").arg(&small));
    assert!(good && out.contains("No problems found"), "{out}");
    let view = lvm_accepts(&small, &[3], "rocky");
    let root = view.lv("root");
    let swap = view.lv("swap");
    assert_eq!(root.len(), 1);
    assert!(root[0].1 < 160 * view.extent, "{}", view.report);
    assert_eq!(
        swap,
        &[(root[0].0 + root[0].1, 32 * view.extent)][..],
        "{}",
        view.report
    );
    assert_eq!(view.pe_counts[0] * view.extent, root[0].1 + swap[0].1);
    let part = parts_of(&small)[3];
    assert_eq!(view.pv_sizes[0], part.len, "{}", view.report);
    e2fsck_clean(&view.extract(&small, "root", &r.dir));
    let b = blkid(&view.extract(&small, "swap", &r.dir));
    assert!(b.contains(&format!("UUID={SWAP_UUID}")), "{b}");
    let o = ok(imgsan(&["cat", s(&small), "/data/blob"]));
    assert!(o.stdout == r.blob);

    // --new-lvm-uuids: new VG, PV and LV UUIDs; filesystem UUIDs kept.
    let fresh = r.dir.join("fresh.raw");
    ok(imgsan(&[
        "repack",
        s(&r.img),
        "-o",
        s(&fresh),
        "--new-lvm-uuids",
    ]));
    lvm_accepts(&fresh, &[3], "rocky");
    let a: Value =
        serde_json::from_slice(&ok(imgsan(&["inspect", s(&r.img), "--json"])).stdout).unwrap();
    let b: Value =
        serde_json::from_slice(&ok(imgsan(&["inspect", s(&fresh), "--json"])).stdout).unwrap();
    assert_ne!(a["lvm"]["vgs"][0]["uuid"], b["lvm"]["vgs"][0]["uuid"]);
    assert_ne!(a["lvm"]["pvs"][0]["uuid"], b["lvm"]["pvs"][0]["uuid"]);
    assert_ne!(
        a["lvm"]["vgs"][0]["lvs"][0]["uuid"],
        b["lvm"]["vgs"][0]["lvs"][0]["uuid"]
    );
    let root_b = b["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["lv"] == "rocky/root")
        .unwrap();
    assert_eq!(root_b["filesystem"]["uuid"], ROOT_UUID);
}

#[test]
fn two_segment_lv_reads_and_repacks() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("in.raw");
    let parts = gpt_disk(&img, 256 * MIB, &[(0, "8e00")]);
    let tree = d.path().join("root");
    let blob = root_tree(&tree, 6 << 20);
    // root's first 20 extents sit after its last 12.
    let root = LvSpec::linear("root", vec![(0, 12, 20), (0, 0, 12)]);
    let vg = make_vg(
        &img,
        &parts,
        "segvg",
        4,
        &[LvSpec::linear("root", vec![(0, 12, 20), (0, 0, 12)])],
        1,
    );
    let rimg = d.path().join("root.img");
    make_ext4(&rimg, &tree, 32 * vg.extent, ROOT_UUID, "root");
    write_lv(&img, &vg, &root, &rimg);
    let o = ok(imgsan(&["inspect", s(&img), "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["lvm"]["vgs"][0]["lvs"][0]["segments"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let o = ok(imgsan(&["cat", s(&img), "/data/blob"]));
    assert!(o.stdout == blob, "read through two segments");
    let out = d.path().join("out.raw");
    ok(imgsan(&["repack", s(&img), "-o", s(&out)]));
    let view = lvm_accepts(&out, &[0], "segvg");
    assert_eq!(view.lv("root").len(), 2, "{}", view.report);
    e2fsck_clean(&view.extract(&out, "root", d.path()));
    let o = ok(imgsan(&["cat", s(&out), "/data/blob"]));
    assert!(o.stdout == blob);
}

#[test]
fn vg_over_two_pvs_reads_and_repacks() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("in.raw");
    let parts = gpt_disk(&img, 256 * MIB, &[(100, "8e00"), (0, "8e00")]);
    let tree = d.path().join("root");
    let blob = root_tree(&tree, 6 << 20);
    // root spans both PVs.
    let root = LvSpec::linear("root", vec![(0, 0, 20), (1, 0, 16)]);
    let vg = make_vg(
        &img,
        &parts,
        "twovg",
        4,
        &[LvSpec::linear("root", vec![(0, 0, 20), (1, 0, 16)])],
        1,
    );
    let rimg = d.path().join("root.img");
    make_ext4(&rimg, &tree, 36 * vg.extent, ROOT_UUID, "root");
    write_lv(&img, &vg, &root, &rimg);
    let o = ok(imgsan(&["inspect", s(&img), "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lvm"]["pvs"].as_array().unwrap().len(), 2);
    assert_eq!(v["lvm"]["vgs"][0]["pvs"].as_array().unwrap().len(), 2);
    let o = ok(imgsan(&["cat", s(&img), "/data/blob"]));
    assert!(o.stdout == blob);
    let out = d.path().join("out.raw");
    ok(imgsan(&["repack", s(&img), "-o", s(&out)]));
    let view = lvm_accepts(&out, &[0, 1], "twovg");
    e2fsck_clean(&view.extract(&out, "root", d.path()));
    // Shrinking would have to move extents between PVs: refused, not guessed.
    let o = imgsan(&[
        "repack",
        s(&img),
        "-o",
        s(&d.path().join("no.raw")),
        "--shrink",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("spans 2 PVs"), "{}", text(&o));
    assert!(!d.path().join("no.raw").exists());
}

/// A thin pool as lvcreate --thinpool writes it: the pool LV and its hidden
/// data and metadata sub-LVs.
const THIN_POOL: &str = r#"pool {
id = "thinth-0000-aaaa-bbbb-cccc-dddd-eeeeee"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 8
type = "thin-pool"
metadata = "pool_tmeta"
pool = "pool_tdata"
transaction_id = 0
chunk_size = 128
discards = "passdown"
zero_new_blocks = 1
}
}
pool_tmeta {
id = "thinth-0001-aaaa-bbbb-cccc-dddd-eeeeee"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = ["{pv0}", 8]
}
}
pool_tdata {
id = "thinth-0002-aaaa-bbbb-cccc-dddd-eeeeee"
status = ["READ", "WRITE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 8
type = "striped"
stripe_count = 1
stripes = ["{pv0}", 0]
}
}
"#;

#[test]
fn thin_pool_and_missing_pv_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("in.raw");
    let parts = gpt_disk(&img, 128 * MIB, &[(0, "8e00")]);
    make_vg(
        &img,
        &parts,
        "thinvg",
        4,
        &[LvSpec {
            name: "pool",
            segs: vec![],
            raw: Some(THIN_POOL.to_string()),
        }],
        1,
    );
    for cmd in ["inspect", "repack"] {
        let mut args = vec![cmd, s(&img)];
        let out = d.path().join("out.raw");
        if cmd == "repack" {
            args.extend(["-o", s(&out)]);
        }
        let o = imgsan(&args);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains("thinvg/pool") && t.contains("thin-pool"), "{t}");
        assert!(!out.exists());
    }

    // A VG over two PVs with one of them cut off the disk.
    let img2 = d.path().join("two.raw");
    let parts = gpt_disk(&img2, 128 * MIB, &[(60, "8e00"), (0, "8e00")]);
    make_vg(
        &img2,
        &parts,
        "halfvg",
        4,
        &[LvSpec::linear("data", vec![(0, 0, 4)])],
        1,
    );
    run(Command::new("sgdisk").arg("-d2").arg(&img2));
    let o = imgsan(&["inspect", s(&img2)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("not in the image"), "{}", text(&o));
}

#[test]
fn damaged_first_metadata_copy_falls_back_to_the_second() {
    let r = rocky_disk(512 * MIB, 64, 16, 2);
    let pv = parts_of(&r.img)[3];
    let before: Value =
        serde_json::from_slice(&ok(imgsan(&["inspect", s(&r.img), "--json"])).stdout).unwrap();
    let seqno = before["lvm"]["vgs"][0]["seqno"].as_u64().unwrap();
    // The first metadata area starts at 4 KiB of the PV; its header's first
    // raw_locn says where the current text is. Flip a byte of that text.
    let h = disk::read_at(&r.img, pv.start + 4096, 512);
    let text_at = u64::from_le_bytes(h[40..48].try_into().unwrap());
    let at = pv.start + 4096 + text_at + 10;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&r.img)
        .unwrap();
    let mut b = [0u8; 1];
    use std::io::Read;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x20]).unwrap();
    drop(f);
    let o = ok(imgsan(&["inspect", s(&r.img), "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mdas = v["lvm"]["pvs"][0]["metadata_areas"].as_array().unwrap();
    assert_eq!(mdas.len(), 2);
    assert!(
        mdas[0]["error"].as_str().unwrap().contains("checksum"),
        "{v:#}"
    );
    assert!(mdas[1]["error"].is_null());
    assert!(v["lvm"]["vgs"][0]["metadata"]
        .as_str()
        .unwrap()
        .contains("metadata area 2"));
    // The output has both copies again, both valid.
    let out = r.dir.join("out.raw");
    ok(imgsan(&[
        "repack",
        s(&r.img),
        "-o",
        s(&out),
        "--shrink",
        "--margin",
        "8M",
    ]));
    let view = lvm_accepts(&out, &[3], "rocky");
    e2fsck_clean(&view.extract(&out, "root", &r.dir));
    let o = ok(imgsan(&["inspect", s(&out), "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for m in v["lvm"]["pvs"][0]["metadata_areas"].as_array().unwrap() {
        assert!(m["error"].is_null(), "{v:#}");
        assert_eq!(m["seqno"].as_u64(), Some(seqno + 1));
    }
}

#[test]
fn sanitize_rocky_on_lvm_leaves_no_marker_and_halves_the_disk() {
    use guest::{Distro, GuestOptions};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    fs::create_dir(&tree).unwrap();
    let opts = GuestOptions {
        separate_boot: true,
        ..GuestOptions::new(Distro::Rocky9)
    };
    let g = guest::build(&tree, &opts);
    let mut markers = g.markers.clone();
    // Rocky names its LVs in fstab; the devices file and the archives are
    // stale state of the source disk.
    let fstab = g.host_path("/etc/fstab");
    let old = fs::read_to_string(&fstab).unwrap();
    let mut new = String::new();
    for line in old.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && f[1] == "/" {
            new += "/dev/mapper/rocky-root / ext4 defaults 0 0\n";
        } else if f.len() >= 3 && f[2] == "swap" {
            new += "/dev/mapper/rocky-swap none swap defaults 0 0\n";
        } else {
            new += line;
            new.push('\n');
        }
    }
    fs::write(&fstab, new).unwrap();
    let lvm_marker = "IMGSAN-LVM-DEVICES-MARKER-5c1e";
    let archive_marker = "IMGSAN-LVM-ARCHIVE-MARKER-77a2";
    fs::create_dir_all(g.host_path("/etc/lvm/devices")).unwrap();
    fs::create_dir_all(g.host_path("/etc/lvm/archive")).unwrap();
    fs::create_dir_all(g.host_path("/etc/lvm/backup")).unwrap();
    fs::write(
        g.host_path("/etc/lvm/devices/system.devices"),
        format!("IDNAME={lvm_marker}\n"),
    )
    .unwrap();
    fs::write(
        g.host_path("/etc/lvm/archive/rocky_00001.vg"),
        format!("# {archive_marker}\n"),
    )
    .unwrap();
    fs::write(
        g.host_path("/etc/lvm/backup/rocky"),
        format!("# {archive_marker}\n"),
    )
    .unwrap();
    for (t, p) in [
        (lvm_marker, "system.devices"),
        (archive_marker, "lvm archive"),
    ] {
        markers.push(guest::Marker {
            text: t.to_string(),
            place: p.to_string(),
            what: "lvm state",
        });
    }

    // GPT: BIOS boot, ESP, /boot, PV with root and swap; 2 GiB.
    let img = dir.join("in.raw");
    let parts = gpt_disk(
        &img,
        2048 * MIB,
        &[(1, "ef02"), (64, "ef00"), (256, "8300"), (0, "8e00")],
    );
    let efi = dir.join("efi.img");
    disk::make_vfat(
        &efi,
        g.efi.as_ref().unwrap(),
        64,
        &g.ids.efi_volid,
        &g.ids.efi_label,
    );
    copy_range(&efi, 0, 64 * MIB, &img, parts[1].start);
    let boot = dir.join("boot.img");
    make_ext4(
        &boot,
        g.boot.as_ref().unwrap(),
        256 * MIB,
        &g.ids.boot_uuid,
        &g.ids.boot_label,
    );
    copy_range(&boot, 0, 256 * MIB, &img, parts[2].start);
    let pv_extents = (parts[3].len - MIB) / (4 * MIB) - 1;
    let swap_extents = 64;
    let root_extents = pv_extents - swap_extents;
    let root = LvSpec::linear("root", vec![(0, 0, root_extents)]);
    let swap = LvSpec::linear("swap", vec![(0, root_extents, swap_extents)]);
    let vg = make_vg(
        &img,
        &parts[3..4],
        "rocky",
        4,
        &[
            LvSpec::linear("root", vec![(0, 0, root_extents)]),
            LvSpec::linear("swap", vec![(0, root_extents, swap_extents)]),
        ],
        1,
    );
    let rimg = dir.join("root.img");
    make_ext4(
        &rimg,
        &tree,
        root_extents * vg.extent,
        &g.ids.root_uuid,
        &g.ids.root_label,
    );
    write_lv(&img, &vg, &root, &rimg);
    let simg = dir.join("swap.img");
    make_swap(
        &simg,
        swap_extents * vg.extent,
        &g.ids.swap_uuid,
        &g.ids.swap_label,
    );
    // A page of "memory" in the swap area.
    let swap_marker = "IMGSAN-LVM-SWAP-MARKER-91d0";
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&simg).unwrap();
        f.write_all_at(swap_marker.as_bytes(), 8 * MIB).unwrap();
    }
    markers.push(guest::Marker {
        text: swap_marker.to_string(),
        place: "swap LV".into(),
        what: "paged-out memory",
    });
    write_lv(&img, &vg, &swap, &simg);
    for f in [&rimg, &simg, &boot, &efi] {
        fs::remove_file(f).unwrap();
    }
    assert!(
        !disk::markers_present(&img, &markers).is_empty(),
        "markers planted"
    );

    let out = dir.join("out.raw");
    let report = dir.join("report.json");
    let o = imgsan(&[
        "sanitize",
        s(&img),
        "-o",
        s(&out),
        "--shrink",
        "--report",
        s(&report),
        "--format",
        "json",
        "--name",
        "Rocky-LVM-Workshop",
        "--description",
        "Rocky 9 on LVM with the workshop's tools installed for the course",
        "--today",
        "2024-06-01",
    ]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        fs::read_to_string(&report).unwrap_or_default()
    );
    let len = fs::metadata(&out).unwrap().len();
    assert!(
        len <= 1024 * MIB,
        "output of {len} bytes is not half the input"
    );
    let left: Vec<String> = disk::markers_present(&out, &markers)
        .iter()
        .map(|m| format!("{} ({}: {})", m.text, m.place, m.what))
        .collect();
    assert!(left.is_empty(), "secrets survived: {left:#?}");
    let (good, t) = tool(Command::new("sgdisk").arg("-v").arg(&out));
    assert!(good && t.contains("No problems found"), "{t}");
    let view = lvm_accepts(&out, &[3], "rocky");
    e2fsck_clean(&view.extract(&out, "root", dir));
    let b = blkid(&view.extract(&out, "swap", dir));
    assert!(b.contains(&format!("UUID={}", g.ids.swap_uuid)), "{b}");
    // The hygiene rules: no devices file, empty archive and backup.
    let o = imgsan(&["ls", s(&out), "/etc/lvm/devices"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("system.devices"),
        "{}",
        text(&o)
    );
    for dirname in ["/etc/lvm/archive", "/etc/lvm/backup"] {
        let o = ok(imgsan(&["ls", s(&out), dirname]));
        assert!(
            o.stdout.iter().all(|c| c.is_ascii_whitespace()),
            "{dirname}: {}",
            text(&o)
        );
    }
}

// Keep the helper set honest for a disk with no VG at all: an orphan PV is
// listed and copied as it is.
#[test]
fn orphan_pv_is_listed() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("in.raw");
    let parts = gpt_disk(&img, 64 * MIB, &[(0, "8e00")]);
    let l = Loop::new(&img, parts[0].start, parts[0].len);
    lvm_ok("pvcreate", &[&l], &["-q", "-ff", "-y", &l.0]);
    drop(l);
    let o = ok(imgsan(&["inspect", s(&img), "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lvm"]["pvs"].as_array().unwrap().len(), 1);
    assert!(v["lvm"]["pvs"][0]["vg"].is_null());
    assert!(v["lvm"]["vgs"].as_array().unwrap().is_empty());
}
