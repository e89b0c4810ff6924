//! Whole-disk images packed from guest trees, and the checks tests run on images.
//!
//! Owns: turning a [`guest::GuestTree`] into a RAW disk image (GPT with a BIOS boot
//! partition, an EFI system partition, an ext4 root, optionally a separate ext4 /boot, and
//! swap; or an MBR variant) with the filesystem identities the guest's fstab names, and
//! converting it to QCOW2; hashing files; scanning an image for marker strings; asking
//! libguestfs (the Linux kernel) about an image.
//! Must not: use loop devices, mounts or anything needing a kernel filesystem driver on
//! the host; implement anything imgsan does.
//!
//! Include it beside the guest builder:
//! ```ignore
//! #[path = "common/guest.rs"]
//! mod guest;
//! #[path = "common/disk.rs"]
//! mod disk;
//! ```
//! Tools: mke2fs, debugfs (e2fsprogs), mkfs.vfat and mtools, mkswap, sgdisk, sfdisk,
//! qemu-img, guestfish/virt-inspector (libguestfs), all installed by `.ci/setup.sh`.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::guest::{self, det_bytes, det_hex, run, GuestTree, Marker, PartitionTable, Role};

pub const MIB: u64 = 1024 * 1024;
const SECTOR: u64 = 512;

#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// Size of the root filesystem; default: what the tree needs plus `slack_mib`.
    pub root_mib: Option<u64>,
    /// Free space left in the root filesystem when its size is computed.
    pub slack_mib: u64,
    pub efi_mib: u64,
    pub swap_mib: u64,
    /// Plant a marker in the swap area, as memory paged out by a running guest would be.
    pub swap_marker: bool,
    /// Fill the MBR boot code and the BIOS boot partition (or, on MBR disks, the gap
    /// before the first partition) with deterministic bytes that must be copied verbatim.
    pub boot_code_pattern: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            root_mib: None,
            slack_mib: 24,
            efi_mib: 16,
            swap_mib: 8,
            swap_marker: true,
            boot_code_pattern: true,
        }
    }
}

/// A byte range of the disk outside any repacked filesystem, with its hash, that a
/// sanitizer must copy unchanged.
#[derive(Clone, Debug)]
pub struct Region {
    pub what: String,
    pub offset: u64,
    pub len: u64,
    pub blake3: String,
}

#[derive(Clone, Debug)]
pub struct PartInfo {
    pub number: u32,
    pub role: Role,
    /// Byte offset and length on the disk.
    pub start: u64,
    pub size: u64,
    pub partuuid: String,
    /// The filesystem (or swap) UUID as blkid prints it.
    pub fs_uuid: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug)]
pub struct GuestDisk {
    pub path: PathBuf,
    pub size: u64,
    pub table: PartitionTable,
    /// In disk order.
    pub parts: Vec<PartInfo>,
    pub verbatim: Vec<Region>,
    /// Markers this step planted outside files (swap).
    pub markers: Vec<Marker>,
}

impl GuestDisk {
    pub fn part(&self, role: Role) -> &PartInfo {
        self.parts
            .iter()
            .find(|p| p.role == role)
            .unwrap_or_else(|| panic!("disk has no {role:?} partition"))
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Bytes a tree occupies: allocated blocks plus a block per directory and inode overhead.
pub fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        total += md.blocks() * 512 + 256;
        if md.is_dir() {
            total += 4096;
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    total
}

fn ext4_size_mib(dir: &Path, slack: u64) -> u64 {
    // Metadata (inode tables, bitmaps, the journal) on top of the data.
    let data = tree_bytes(dir);
    let mib = round_up(data + data / 4, MIB) / MIB + slack;
    let mib = mib.max(32);
    // The default journal grows at 128 MiB; keep room for it.
    if mib > 128 {
        mib + 16
    } else {
        mib + 4
    }
}

/// mke2fs an ext4 filesystem image from a directory, with the identity given.
pub fn make_ext4(
    img: &Path,
    dir: &Path,
    size_mib: u64,
    features: &str,
    uuid: &str,
    label: &str,
    hash_seed: &str,
) {
    run(Command::new("mke2fs")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-i", "16384",
        ])
        .args(["-O", features])
        .args(["-U", uuid, "-L", label])
        .arg("-E")
        .arg(format!("hash_seed={hash_seed},root_owner=0:0"))
        .arg("-d")
        .arg(dir)
        .arg(img)
        .arg(format!("{size_mib}M"))
        .env("E2FSPROGS_FAKE_TIME", guest::CAPTURE_TIME.to_string())
        .env("SOURCE_DATE_EPOCH", guest::CAPTURE_TIME.to_string()));
}

/// A FAT filesystem image holding `dir`, made with mkfs.vfat and mtools.
pub fn make_vfat(img: &Path, dir: &Path, size_mib: u64, volid: &str, label: &str) {
    let f = fs::File::create(img).unwrap();
    f.set_len(size_mib * MIB).unwrap();
    drop(f);
    run(Command::new("mkfs.vfat")
        .args(["--invariant", "-i", &volid.replace('-', ""), "-n", label])
        .arg(img)
        .env("SOURCE_DATE_EPOCH", guest::CAPTURE_TIME.to_string()));
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    if !entries.is_empty() {
        run(Command::new("mcopy")
            .args(["-s", "-m", "-Q", "-i"])
            .arg(img)
            .args(&entries)
            .arg("::/")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC"));
    }
}

/// A swap area with the given identity.
pub fn make_swap(img: &Path, size_mib: u64, uuid: &str, label: &str) {
    let f = fs::File::create(img).unwrap();
    f.set_len(size_mib * MIB).unwrap();
    drop(f);
    run(Command::new("mkswap")
        .args(["-q", "-U", uuid, "-L", label])
        .arg(img));
}

/// Copies `src` into `dst` at `offset`, leaving all-zero blocks as holes.
pub fn copy_into(dst: &Path, offset: u64, src: &Path) {
    let mut input = fs::File::open(src).unwrap();
    let mut out = fs::OpenOptions::new().write(true).open(dst).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf);
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(4096).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                out.seek(SeekFrom::Start(offset + pos + (i as u64) * 4096))
                    .unwrap();
                out.write_all(chunk).unwrap();
            }
        }
        pos += n as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        let n = f.read(&mut buf[got..]).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    got
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact(&mut v).unwrap();
    v
}

/// blake3 of a byte range of a file.
pub fn blake3_range(path: &Path, offset: u64, len: u64) -> String {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f.take(len), &mut h).unwrap();
    h.finalize().to_hex().to_string()
}

/// blake3 of a whole file.
pub fn blake3_file(path: &Path) -> String {
    guest::blake3_of(path)
}

/// Packs the tree into a RAW disk image at `out`.
pub fn pack(tree: &GuestTree, out: &Path, opts: &DiskOptions) -> GuestDisk {
    let o = &tree.options;
    let ids = &tree.ids;
    let work = tempfile::Builder::new()
        .prefix(".pack-")
        .tempdir_in(out.parent().expect("output has a parent"))
        .unwrap();
    let features = o.distro.mke2fs_features();

    // Each filesystem is built in its own file, then copied to its offset.
    let mut images: Vec<(Role, PathBuf, u64)> = Vec::new();
    let mut markers = Vec::new();
    for plan in &tree.partitions {
        let img = work.path().join(format!("p{}", plan.number));
        let size_mib = match plan.role {
            Role::BiosBoot => 1,
            Role::Efi => {
                make_vfat(
                    &img,
                    tree.efi.as_ref().unwrap(),
                    opts.efi_mib,
                    &ids.efi_volid,
                    &ids.efi_label,
                );
                opts.efi_mib
            }
            Role::Boot => {
                let dir = tree.boot.as_ref().unwrap();
                let mib = ext4_size_mib(dir, 8);
                make_ext4(
                    &img,
                    dir,
                    mib,
                    features,
                    &ids.boot_uuid,
                    &ids.boot_label,
                    &ids.hash_seed,
                );
                mib
            }
            Role::Root => {
                let mib = opts
                    .root_mib
                    .unwrap_or_else(|| ext4_size_mib(&tree.root, opts.slack_mib));
                make_ext4(
                    &img,
                    &tree.root,
                    mib,
                    features,
                    &ids.root_uuid,
                    &ids.root_label,
                    &ids.hash_seed,
                );
                for p in &tree.delete_after_pack {
                    run(Command::new("debugfs")
                        .args(["-w", "-R"])
                        .arg(format!("rm {p}"))
                        .arg(&img));
                }
                mib
            }
            Role::Swap => {
                make_swap(&img, opts.swap_mib, &ids.swap_uuid, &ids.swap_label);
                if opts.swap_marker {
                    let text = format!(
                        "IMGSAN-SECRET-{}",
                        det_hex(&format!("{}/{}/swap", o.distro.name(), o.seed), 20)
                    );
                    // A page of "memory" well past the swap header.
                    let mut page = det_bytes(&format!("{text}/page"), 4096);
                    page[512..512 + text.len()].copy_from_slice(text.as_bytes());
                    write_at(&img, 3 * 4096, &page);
                    markers.push(Marker {
                        text,
                        place: "swap partition".into(),
                        what: "paged-out memory",
                    });
                }
                opts.swap_mib
            }
        };
        images.push((plan.role, img, size_mib * MIB));
    }

    // Layout: 1 MiB alignment, partitions in plan order, 1 MiB at the end for the
    // backup GPT.
    let mut parts = Vec::new();
    let mut at = MIB;
    for (plan, (_, _, size)) in tree.partitions.iter().zip(&images) {
        let fs_uuid = match plan.role {
            Role::Efi => Some(ids.efi_volid.clone()),
            Role::Boot => Some(ids.boot_uuid.clone()),
            Role::Root => Some(ids.root_uuid.clone()),
            Role::Swap => Some(ids.swap_uuid.clone()),
            Role::BiosBoot => None,
        };
        let label = match plan.role {
            Role::Efi => Some(ids.efi_label.clone()),
            Role::Boot => Some(ids.boot_label.clone()),
            Role::Root => Some(ids.root_label.clone()),
            Role::Swap => Some(ids.swap_label.clone()),
            Role::BiosBoot => None,
        };
        parts.push(PartInfo {
            number: plan.number,
            role: plan.role,
            start: at,
            size: *size,
            partuuid: plan.partuuid.clone(),
            fs_uuid,
            label,
        });
        at += size;
    }
    let disk_size = at + MIB;
    let _ = fs::remove_file(out);
    let f = fs::File::create(out).unwrap();
    f.set_len(disk_size).unwrap();
    drop(f);

    match o.table {
        PartitionTable::Gpt => {
            let mut c = Command::new("sgdisk");
            c.arg("-o").arg(format!("--disk-guid={}", ids.disk_guid));
            for (p, plan) in parts.iter().zip(&tree.partitions) {
                let n = p.number;
                let code = match p.role {
                    Role::BiosBoot => "EF02",
                    Role::Efi => "EF00",
                    // Ubuntu marks its /boot partition as XBOOTLDR.
                    Role::Boot if o.distro.family() == guest::Family::Debian => "EA00",
                    Role::Boot | Role::Root => "8300",
                    Role::Swap => "8200",
                };
                c.arg(format!(
                    "--new={n}:{}:{}",
                    p.start / SECTOR,
                    (p.start + p.size) / SECTOR - 1
                ));
                c.arg(format!("--typecode={n}:{code}"));
                c.arg(format!("--partition-guid={n}:{}", plan.partuuid));
                c.arg(format!("--change-name={n}:{}", plan.name));
            }
            c.arg(out);
            run(&mut c);
        }
        PartitionTable::Mbr => {
            let mut script = format!("label: dos\nlabel-id: 0x{}\nunit: sectors\n\n", ids.mbr_id);
            for p in &parts {
                let ty = match p.role {
                    Role::Efi => "ef",
                    Role::Swap => "82",
                    _ => "83",
                };
                let bootable = match p.role {
                    Role::Boot => ", bootable",
                    Role::Root if !parts.iter().any(|q| q.role == Role::Boot) => ", bootable",
                    _ => "",
                };
                script.push_str(&format!(
                    "start={}, size={}, type={ty}{bootable}\n",
                    p.start / SECTOR,
                    p.size / SECTOR
                ));
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
            let res = child.wait_with_output().unwrap();
            assert!(
                res.status.success(),
                "sfdisk failed: {}",
                String::from_utf8_lossy(&res.stderr)
            );
        }
    }

    for (p, (_, img, _)) in parts.iter().zip(&images) {
        if p.role != Role::BiosBoot {
            copy_into(out, p.start, img);
        }
    }

    // Boot code and the space GRUB would use: deterministic bytes a sanitizer must copy.
    let mut verbatim = Vec::new();
    let key = format!("{}/{}", o.distro.name(), o.seed);
    if opts.boot_code_pattern {
        let mut code = det_bytes(&format!("{key}/mbr-code"), 440);
        code[0] = 0xeb; // a short jump, as boot code starts
        code[1] = 0x63;
        code[2] = 0x90;
        write_at(out, 0, &code);
        verbatim.push(Region {
            what: "MBR boot code".into(),
            offset: 0,
            len: 440,
            blake3: blake3_range(out, 0, 440),
        });
        let (what, off, len, blob) = match o.table {
            PartitionTable::Gpt => {
                let bb = parts.iter().find(|p| p.role == Role::BiosBoot).unwrap();
                let mut blob = b"GRUB-LIKE CORE IMAGE (fixture)\0".to_vec();
                blob.extend(det_bytes(&format!("{key}/core"), 64 * 1024));
                ("BIOS boot partition", bb.start, bb.size, blob)
            }
            // GRUB embeds its core image between the MBR and the first partition:
            // a real one (grub-mkimage), copied to the length its block list gives.
            PartitionTable::Mbr => {
                let core = grub_core_image();
                let len = core.len() as u64;
                ("GRUB core image", SECTOR, len, core)
            }
        };
        write_at(out, off, &blob);
        verbatim.push(Region {
            what: what.into(),
            offset: off,
            len,
            blake3: blake3_range(out, off, len),
        });
    }
    if let Some(efi) = parts.iter().find(|p| p.role == Role::Efi) {
        verbatim.push(Region {
            what: "EFI system partition".into(),
            offset: efi.start,
            len: efi.size,
            blake3: blake3_range(out, efi.start, efi.size),
        });
    }

    GuestDisk {
        path: out.to_path_buf(),
        size: disk_size,
        table: o.table,
        parts,
        verbatim,
        markers,
    }
}

/// A real GRUB i386-pc core image (grub-mkimage, grub-pc-bin), padded to whole
/// sectors, made once per test binary: what grub-install embeds after an MBR.
pub fn grub_core_image() -> Vec<u8> {
    static CORE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CORE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("core.img");
        run(Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-p", "(hd0,msdos1)/boot/grub", "-o"])
            .arg(&out)
            .args(["biosdisk", "part_msdos", "ext2"]));
        let mut core = fs::read(&out).unwrap();
        core.resize(round_up(core.len() as u64, SECTOR) as usize, 0);
        core
    })
    .clone()
}

/// Converts a RAW image to QCOW2 (zlib-compressed clusters when `compress`).
pub fn to_qcow2(raw: &Path, out: &Path, compress: bool) {
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-q", "-f", "raw", "-O", "qcow2"]);
    if compress {
        c.args(["-c", "-o", "compression_type=zlib"]);
    }
    run(c.arg(raw).arg(out));
}

/// Byte offsets at which each needle occurs in the file (data ranges only: holes read as
/// zeros and hold no marker). Reads the file once, in large chunks.
pub fn scan(path: &Path, needles: &[&str]) -> Vec<Vec<u64>> {
    let finders: Vec<memchr::memmem::Finder> = needles
        .iter()
        .map(|n| memchr::memmem::Finder::new(n.as_bytes()))
        .collect();
    let overlap = needles.iter().map(|n| n.len()).max().unwrap_or(1).max(1) - 1;
    let mut found = vec![Vec::new(); needles.len()];
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut pos = 0u64;
    let chunk = 8 * MIB as usize;
    let mut buf = vec![0u8; chunk + overlap];
    while pos < len {
        // Skip holes.
        let data = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA on {}: {e}", path.display()),
        };
        let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(data)).unwrap_or(len);
        let mut at = data;
        while at < hole {
            let want = (chunk as u64).min(hole - at) as usize + overlap;
            let want = want.min((len - at) as usize);
            let n = rustix::io::pread(&f, &mut buf[..want], at).unwrap();
            assert!(n > 0, "short read at {at}");
            for (i, fd) in finders.iter().enumerate() {
                for hit in fd.find_iter(&buf[..n]) {
                    let off = at + hit as u64;
                    if found[i].last() != Some(&off) {
                        found[i].push(off);
                    }
                }
            }
            at += (n.saturating_sub(overlap)).max(1) as u64;
        }
        pos = hole;
    }
    for v in &mut found {
        v.sort_unstable();
        v.dedup();
    }
    found
}

/// The markers (of those given) that occur anywhere in the image.
pub fn markers_present<'a>(img: &Path, markers: &'a [Marker]) -> Vec<&'a Marker> {
    let needles: Vec<&str> = markers.iter().map(|m| m.text.as_str()).collect();
    let hits = scan(img, &needles);
    markers
        .iter()
        .zip(hits)
        .filter(|(_, h)| !h.is_empty())
        .map(|(m, _)| m)
        .collect()
}

fn libguestfs_env(c: &mut Command) -> &mut Command {
    // No KVM on the CI machines: the appliance runs under TCG (10 to 20 s to start).
    c.env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .env("LIBGUESTFS_CACHEDIR", guest::cache_dir().join("libguestfs"))
}

/// Runs guestfish once on the image with `-i` (inspect and mount the guest read-only)
/// and executes `commands` in one appliance session. Returns each command's output.
pub fn guestfish(img: &Path, format: &str, commands: &[&str]) -> Vec<String> {
    guestfish_session(&[(img, format)], true, commands)
}

/// One read-only guestfish session over several drives (`/dev/sda`, `/dev/sdb`, ... in
/// order), with or without `-i`. The appliance starts once (10 to 20 s under TCG), so
/// tests batch everything they ask into one call. Returns each command's output.
pub fn guestfish_session(
    drives: &[(&Path, &str)],
    inspect: bool,
    commands: &[&str],
) -> Vec<String> {
    const SEP: &str = "--8<--imgsan-fixture-separator--8<--";
    let mut script = String::new();
    for c in commands {
        script.push_str(c);
        script.push('\n');
        script.push_str(&format!("echo {SEP}\n"));
    }
    fs::create_dir_all(guest::cache_dir().join("libguestfs")).unwrap();
    let mut cmd = Command::new("guestfish");
    libguestfs_env(&mut cmd).arg("--ro");
    for (img, format) in drives {
        cmd.arg(format!("--format={format}")).arg("-a").arg(img);
    }
    if inspect {
        cmd.arg("-i");
    } else {
        script.insert_str(0, "run\n");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("guestfish runs (libguestfs-tools, see .ci/setup.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "guestfish failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts: Vec<String> = text
        .split(&format!("{SEP}\n"))
        .map(str::to_string)
        .collect();
    parts.truncate(commands.len());
    assert_eq!(parts.len(), commands.len(), "guestfish output: {text}");
    parts
}

/// virt-inspector's XML report on the image.
pub fn virt_inspector(img: &Path, format: &str) -> String {
    fs::create_dir_all(guest::cache_dir().join("libguestfs")).unwrap();
    run(libguestfs_env(&mut Command::new("virt-inspector"))
        .arg(format!("--format={format}"))
        .arg("-a")
        .arg(img))
}
