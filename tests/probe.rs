//! Filesystem probing against `blkid -p -o export` (util-linux) on volumes made at
//! test time by the formats' own tools: mke2fs, mkfs.xfs, mkswap, mkfs.vfat and
//! pvcreate. Also the swap header imgsan builds, read back by blkid and swaplabel
//! and compared with mkswap's own header.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use imgsan::disk::partition::types::uuid_string_to_bytes;
use imgsan::disk::probe::{self, FsType, Probed};
use imgsan::disk::swap::{SwapHeader, SwapState};
use imgsan::disk::{self, partition, Disk, MemDisk, Slice};
use imgsan::ErrorKind;

const MIB: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let o = Command::new(cmd)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install it with .ci/setup.sh): {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tool(cmd: &str, args: &[&str]) -> String {
    tool_env(cmd, args, &[])
}

fn tool_env(cmd: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let (ok, out, err) = run(cmd, args, envs);
    assert!(ok, "{cmd} {args:?} failed:\n{out}\n{err}");
    out
}

fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(p: &Path) -> Arc<dyn Disk> {
    disk::open(p).unwrap()
}

fn probe_file(p: &Path) -> Probed {
    probe::probe(open(p).as_ref()).unwrap()
}

/// `blkid -p -o export` of a file, or of `size` bytes at `offset` in it.
fn blkid(p: &Path, window: Option<(u64, u64)>) -> HashMap<String, String> {
    let mut args = vec!["-p".to_string(), "-o".into(), "export".into()];
    if let Some((off, size)) = window {
        args.extend(["-O".into(), off.to_string(), "-S".into(), size.to_string()]);
    }
    args.push(s(p).into());
    let a: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
    // blkid exits 2 when it finds nothing; that is an answer too.
    let (_, out, _) = run("blkid", &a, &[]);
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
        .collect()
}

/// Type, UUID, label and version agree with blkid.
fn assert_matches_blkid(ours: &Probed, b: &HashMap<String, String>) {
    assert_eq!(
        Some(ours.blkid_type()),
        b.get("TYPE").map(|x| x.as_str()),
        "{ours:?}\n{b:?}"
    );
    assert_eq!(ours.uuid.as_ref(), b.get("UUID"), "{ours:?}\n{b:?}");
    assert_eq!(ours.label.as_ref(), b.get("LABEL"), "{ours:?}\n{b:?}");
    if let Some(v) = b.get("VERSION") {
        assert_eq!(ours.version.as_ref(), Some(v), "{ours:?}\n{b:?}");
    }
}

const UUID: &str = "0b5f2c1e-7d3a-4c8e-9f21-5a6b7c8d9e0f";

#[test]
fn ext2_ext3_ext4_match_blkid() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], FsType); 6] = [
        ("ext2", &[], FsType::Ext2),
        ("ext3", &[], FsType::Ext3),
        ("ext4", &[], FsType::Ext4),
        // ext4 without a journal is still ext4 (extents, flex_bg, ...).
        ("ext4", &["-O", "^has_journal"], FsType::Ext4),
        // ext3 plus one ext4 feature is ext4.
        ("ext3", &["-O", "extent"], FsType::Ext4),
        // An ext2 with 1 KiB blocks and no label.
        ("ext2", &["-b", "1024"], FsType::Ext2),
    ];
    for (i, (t, extra, want)) in cases.iter().enumerate() {
        let p = blank(dir.path(), &format!("e{i}.img"), 16 * MIB);
        let label = format!("vol-{i}");
        let mut args = vec!["-q", "-F", "-t", t, "-U", UUID];
        if i != 5 {
            args.extend(["-L", &label]);
        }
        args.extend(extra.iter());
        args.push(s(&p));
        tool("mke2fs", &args);
        let ours = probe_file(&p);
        assert_eq!(ours.fs, *want, "case {i}");
        assert_eq!(ours.uuid.as_deref(), Some(UUID));
        assert_eq!(ours.label.is_some(), i != 5);
        assert_matches_blkid(&ours, &blkid(&p, None));
    }
}

#[test]
fn ext4_superblock_checksum_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "e.img", 16 * MIB);
    tool(
        "mke2fs",
        &[
            "-q",
            "-t",
            "ext4",
            "-O",
            "metadata_csum",
            "-L",
            "csum",
            s(&p),
        ],
    );
    let mut b = std::fs::read(&p).unwrap();
    assert_eq!(
        probe::probe(&MemDisk::new(b.clone())).unwrap().fs,
        FsType::Ext4
    );
    b[1024 + 0x78] = b'X'; // the label, under the checksum
                           // A damaged primary is not trusted: the probe falls back to the first backup,
                           // as e2fsck -b does, and says both things.
    let p = probe::probe(&MemDisk::new(b.clone())).unwrap();
    assert_eq!(p.fs, FsType::Ext4);
    assert_eq!(p.label.as_deref(), Some("csum"), "the backup's label");
    let w = p.warnings.join("\n");
    assert!(w.contains("backup superblock"), "{w}");
    assert!(w.contains("checksum mismatch in ext4 superblock"), "{w}");
    // With the backups gone too, the damaged checksum is the error.
    let bs = 1024usize;
    for group in [1usize, 3, 5, 7, 9] {
        let at = (group * 8192 + 1) * bs;
        if at + 1024 <= b.len() {
            b[at..at + 1024].fill(0);
        }
    }
    let e = probe::probe(&MemDisk::new(b)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(e.to_string().contains("ext4 superblock"), "{e}");
}

/// mkfs.xfs refuses filesystems under 300 MB unless it runs under fstests; these
/// variables are how fstests makes small test filesystems.
const XFS_SMALL: [(&str, &str); 3] = [("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")];

#[test]
fn xfs_v5_and_v4_match_blkid() {
    let dir = tempfile::tempdir().unwrap();
    for (name, crc) in [("v5", "crc=1"), ("v4", "crc=0")] {
        let p = blank(dir.path(), &format!("{name}.img"), 32 * MIB);
        let m = format!("{crc},uuid={UUID}");
        tool_env(
            "mkfs.xfs",
            &["-q", "-f", "-m", &m, "-L", &format!("xfs-{name}"), s(&p)],
            &XFS_SMALL,
        );
        let ours = probe_file(&p);
        assert_eq!(ours.fs, FsType::Xfs);
        assert_eq!(ours.uuid.as_deref(), Some(UUID));
        assert_matches_blkid(&ours, &blkid(&p, None));
    }
    // A damaged v5 superblock fails its CRC.
    let p = dir.path().join("v5.img");
    let mut b = std::fs::read(&p).unwrap()[..MIB as usize].to_vec();
    b[108] = b'Y';
    let e = probe::probe(&MemDisk::new(b)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
}

#[test]
fn swap_with_uuid_and_label_matches_blkid_at_several_page_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [4096u32, 16384, 65536] {
        let p = blank(dir.path(), &format!("swap{ps}.img"), 4 * MIB);
        let pss = ps.to_string();
        tool(
            "mkswap",
            &["-q", "-p", &pss, "-U", UUID, "-L", "myswap", s(&p)],
        );
        let ours = probe_file(&p);
        assert_eq!(ours.fs, FsType::Swap);
        let h = ours.swap.as_ref().unwrap();
        assert_eq!(h.page_size, ps);
        assert_eq!(h.state, SwapState::Swap);
        assert_eq!(h.area_len(), 4 * MIB);
        assert_eq!(ours.label.as_deref(), Some("myswap"));
        assert!(!ours.hibernated());
        assert_matches_blkid(&ours, &blkid(&p, None));
    }
}

#[test]
fn hibernation_signatures_match_blkid() {
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "swap.img", 4 * MIB);
    tool("mkswap", &["-q", "-U", UUID, "-L", "resume", s(&p)]);
    let clean = std::fs::read(&p).unwrap();
    for sig in [
        &b"S1SUSPEND\0"[..],
        b"S2SUSPEND\0",
        b"ULSUSPEND\0",
        b"LINHIB0001",
    ] {
        // As the kernel does (kernel/power/swap.c): the old signature moves to
        // orig_sig, just before the new one.
        let mut b = clean.clone();
        b[4096 - 20..4096 - 10].copy_from_slice(b"SWAPSPACE2");
        b[4096 - 10..4096].copy_from_slice(sig);
        let hp = dir.path().join("hib.img");
        std::fs::write(&hp, &b).unwrap();
        let ours = probe_file(&hp);
        assert_eq!(ours.fs, FsType::Swap);
        assert!(ours.hibernated(), "{sig:?}");
        assert_eq!(ours.blkid_type(), "swsuspend");
        assert_matches_blkid(&ours, &blkid(&hp, None));
    }
    // TuxOnIce: its magic at offset 0 over an intact swap signature.
    let mut b = clean.clone();
    b[..8].copy_from_slice(b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c");
    let hp = dir.path().join("toi.img");
    std::fs::write(&hp, &b).unwrap();
    let ours = probe_file(&hp);
    assert!(ours.hibernated());
    assert_matches_blkid(&ours, &blkid(&hp, None));
}

#[test]
fn recreated_swap_header_reads_back_and_matches_mkswap() {
    let dir = tempfile::tempdir().unwrap();
    let uuid = uuid_string_to_bytes(UUID).unwrap();
    // mkswap keeps at most 15 label bytes (it NUL-terminates); the field holds 16,
    // which swaplabel and blkid accept, and which a source area may carry.
    for (ps, size, label) in [
        (4096u32, 8 * MIB, &b"swap0"[..]),
        (65536, 8 * MIB, b"fifteen-chars-l"),
        (4096, 3 * MIB + 5000, b""),
        (16384, 8 * MIB, b"sixteen-chars-lb"),
    ] {
        let h = SwapHeader::new(ps, size, uuid, label).unwrap();
        let ours_path = blank(dir.path(), "ours.img", size);
        let mut bytes = std::fs::read(&ours_path).unwrap();
        bytes[..ps as usize].copy_from_slice(&h.to_page().unwrap());
        std::fs::write(&ours_path, &bytes).unwrap();

        // blkid and swaplabel read our header back.
        let b = blkid(&ours_path, None);
        assert_eq!(b["TYPE"], "swap");
        assert_eq!(b["UUID"], UUID);
        let want_label = String::from_utf8(label.to_vec()).unwrap();
        assert_eq!(b.get("LABEL").cloned().unwrap_or_default(), want_label);
        let sl = tool("swaplabel", &[s(&ours_path)]);
        assert!(sl.contains(&format!("UUID:  {UUID}")), "{sl}");
        if !label.is_empty() {
            assert!(sl.contains(&format!("LABEL: {want_label}")), "{sl}");
        }

        if label.len() > 15 {
            continue;
        }
        // mkswap with the same parameters writes the same first page.
        let theirs = blank(dir.path(), "theirs.img", size);
        let pss = ps.to_string();
        let mut args = vec!["-q", "-p", &pss, "-U", UUID];
        if !label.is_empty() {
            args.extend(["-L", want_label.as_str()]);
        }
        args.push(s(&theirs));
        tool("mkswap", &args);
        let t = std::fs::read(&theirs).unwrap();
        let ours = h.to_page().unwrap();
        let diff = (0..ps as usize).find(|&i| t[i] != ours[i]);
        assert_eq!(diff, None, "page size {ps}: first difference from mkswap");
        // And nothing else: mkswap leaves the rest of the area alone.
        assert!(t[ps as usize..].iter().all(|&x| x == 0));
    }

    // Re-creating from a probed area keeps identity, resizes the page count.
    let src = blank(dir.path(), "src.img", 16 * MIB);
    tool("mkswap", &["-q", "-U", UUID, "-L", "keepme", s(&src)]);
    let probed = probe_file(&src);
    let again = probed.swap.as_ref().unwrap().recreate(4 * MIB).unwrap();
    assert_eq!(again.label().as_deref(), Some("keepme"));
    assert_eq!(again.uuid().as_deref(), Some(UUID));
    assert_eq!(again.area_len(), 4 * MIB);
    let mut b = again.to_page().unwrap();
    b.resize(4 * MIB as usize, 0);
    let r = probe::probe(&MemDisk::new(b)).unwrap();
    assert_eq!((r.label, r.uuid), (probed.label, probed.uuid));
}

#[test]
fn vfat_12_16_32_match_blkid() {
    let dir = tempfile::tempdir().unwrap();
    for (fat, size, id, label) in [
        ("12", 4 * MIB, "1234ABCD", "SMALLFAT"),
        ("16", 32 * MIB, "0000BEEF", "MIDFAT"),
        ("32", 40 * MIB, "DEAD0001", "EFI"),
    ] {
        let p = blank(dir.path(), &format!("fat{fat}.img"), size);
        tool("mkfs.vfat", &["-F", fat, "-i", id, "-n", label, s(&p)]);
        let ours = probe_file(&p);
        assert_eq!(ours.fs, FsType::Vfat);
        assert_eq!(ours.version.as_deref(), Some(format!("FAT{fat}").as_str()));
        assert_eq!(
            ours.uuid.as_deref(),
            Some(format!("{}-{}", &id[..4], &id[4..]).as_str())
        );
        assert_eq!(ours.label.as_deref(), Some(label));
        assert_matches_blkid(&ours, &blkid(&p, None));
    }
    // No label at all.
    let p = blank(dir.path(), "nolabel.img", 8 * MIB);
    tool("mkfs.vfat", &["-i", "00000001", s(&p)]);
    let ours = probe_file(&p);
    assert_eq!(ours.label, None);
    assert_matches_blkid(&ours, &blkid(&p, None));
}

#[test]
fn a_partition_table_is_not_a_filesystem() {
    // The 0x55AA signature of an MBR (with boot code in the BPB's place, as GRUB
    // leaves it) must not pass for FAT.
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "mbr.img", 16 * MIB);
    let (ok, _, err) = {
        use std::io::Write;
        let mut c = Command::new("sfdisk")
            .args(["-q", s(&p)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, type=83\n")
            .unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.success(),
            (),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(ok, "{err}");
    let mut b = std::fs::read(&p).unwrap();
    // Boot code like GRUB's: a jump over the BPB area, then code bytes.
    b[0..3].copy_from_slice(&[0xeb, 0x63, 0x90]);
    for (i, x) in b[0x5a..0x1b8].iter_mut().enumerate() {
        *x = (i * 7 + 3) as u8;
    }
    std::fs::write(&p, &b).unwrap();
    let ours = probe_file(&p);
    assert_eq!(ours.fs, FsType::Unknown);
    let bl = blkid(&p, None);
    assert_eq!(bl.get("TYPE"), None, "{bl:?}");
    assert_eq!(bl.get("PTTYPE").map(|x| x.as_str()), Some("dos"));
    assert_eq!(
        partition::read(open(&p).as_ref()).unwrap().partitions.len(),
        1
    );
}

/// Detach a loop device when the test ends, pass or fail.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = run("losetup", &["-d", &self.0], &[]);
    }
}

#[test]
fn lvm_physical_volume_matches_blkid() {
    // pvcreate works on block devices only, so the image is attached to a loop
    // device for it (this needs root, as CI has), then read back as a file.
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "pv.img", 16 * MIB);
    let dev = {
        let out = tool("losetup", &["-f", "--show", s(&p)]);
        Loop(out.trim().to_string())
    };
    let pv_uuid = "AbCdEf-1234-5678-9abc-DEFG-hijk-LMNOPq";
    let env = [("LVM_SUPPRESS_FD_WARNINGS", "1")];
    tool_env(
        "pvcreate",
        &[
            "-q",
            "--uuid",
            pv_uuid,
            "--norestorefile",
            "-ff",
            "-y",
            // Keep the machine's LVM device filters and devices file out of it.
            "--devices",
            &dev.0,
            &dev.0,
        ],
        &env,
    );
    drop(dev);
    let ours = probe_file(&p);
    assert_eq!(ours.fs, FsType::LvmPv);
    assert_eq!(ours.uuid.as_deref(), Some(pv_uuid));
    assert_matches_blkid(&ours, &blkid(&p, None));

    // A changed byte under the label's CRC: no longer a PV.
    let mut b = std::fs::read(&p).unwrap()[..MIB as usize].to_vec();
    let at = (0..4)
        .map(|s| s * 512)
        .find(|o| &b[*o..*o + 8] == b"LABELONE")
        .unwrap();
    b[at + 40] ^= 1;
    assert_eq!(probe::probe(&MemDisk::new(b)).unwrap().fs, FsType::Unknown);
}

#[test]
fn every_partition_of_a_disk_probes_like_blkid() {
    // A GPT disk with an EFI system partition (FAT32), a root (ext4), swap and an
    // XFS data partition, each filesystem made separately and copied into place.
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "disk.img", 96 * MIB);
    tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+40M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+16M",
            "-t",
            "2:8300",
            "-n",
            "3:0:+4M",
            "-t",
            "3:8200",
            "-n",
            "4:0:0",
            "-t",
            "4:8300",
            s(&p),
        ],
    );
    let t = partition::read(open(&p).as_ref()).unwrap();
    let mut disk = std::fs::read(&p).unwrap();
    for part in &t.partitions {
        let fs = blank(dir.path(), &format!("p{}.img", part.index), part.len);
        match part.index {
            1 => tool("mkfs.vfat", &["-F", "32", "-n", "ESP", s(&fs)]),
            2 => tool("mke2fs", &["-q", "-t", "ext4", "-L", "root", s(&fs)]),
            3 => tool("mkswap", &["-q", "-L", "swap", s(&fs)]),
            _ => tool_env("mkfs.xfs", &["-q", "-f", "-L", "data", s(&fs)], &XFS_SMALL),
        };
        let bytes = std::fs::read(&fs).unwrap();
        disk[part.start as usize..part.end() as usize].copy_from_slice(&bytes);
    }
    std::fs::write(&p, &disk).unwrap();

    let d = open(&p);
    let t = partition::read(d.as_ref()).unwrap();
    let mut types = Vec::new();
    for v in t.volumes() {
        let slice = Slice::new(d.clone(), v.start, v.len).unwrap();
        let ours = probe::probe(&slice).unwrap();
        assert_matches_blkid(&ours, &blkid(&p, Some((v.start, v.len))));
        types.push(ours.blkid_type());
    }
    assert_eq!(types, ["vfat", "ext4", "swap", "xfs"]);
}
