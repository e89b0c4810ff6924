//! The test fixtures are what they claim to be, checked with tools imgsan does not
//! share code with: dpkg-query and rpm read the package databases, e2fsck and blkid the
//! filesystems, sgdisk and sfdisk the partition tables, qemu-img the QCOW2 conversion,
//! and libguestfs (the Linux kernel plus its inspection code) the whole guest. And every
//! planted marker is really in the raw image, so a later "no marker survives sanitizing"
//! test cannot pass by accident.

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use guest::{Distro, Family, Fate, GuestOptions, GuestTree, PartitionTable, Role, RootRef};

fn tool(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every regular file's bytes under a host directory, keyed by guest path.
fn files_under(host: &Path, guest_prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in fs::read_dir(host).unwrap() {
        let e = e.unwrap();
        let g = format!(
            "{}/{}",
            guest_prefix.trim_end_matches('/'),
            e.file_name().to_string_lossy()
        );
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            files_under(&e.path(), &g, out);
        } else if md.is_file() {
            out.insert(g, fs::read(e.path()).unwrap());
        }
    }
}

fn all_files(t: &GuestTree) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    files_under(&t.root, "/", &mut m);
    if let Some(b) = &t.boot {
        files_under(b, "/boot", &mut m);
    }
    if let Some(e) = &t.efi {
        files_under(e, "/boot/efi", &mut m);
    }
    m
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr::memmem::find(hay, needle.as_bytes()).is_some()
}

/// The layouts the disk tests use: every distribution, and between them GPT and MBR,
/// separate /boot or not, and each way of naming the root in fstab.
fn layout(d: Distro) -> GuestOptions {
    let mut o = GuestOptions::with_every_problem(d);
    match d {
        Distro::Ubuntu1604 => {
            o.table = PartitionTable::Mbr;
            o.efi = false;
            o.root_ref = RootRef::Device;
        }
        Distro::Ubuntu1804 => o.root_ref = RootRef::Label,
        Distro::Ubuntu2404 => o.separate_boot = true,
        Distro::Debian12 => {
            o.root_ref = RootRef::PartUuid;
            o.cloud_init = false;
        }
        Distro::CentOS7 => {
            o.table = PartitionTable::Mbr;
            o.separate_boot = true;
        }
        Distro::Rocky9 => o.separate_boot = true,
        _ => {}
    }
    o
}

#[test]
fn guest_trees_are_self_consistent_and_their_package_databases_read() {
    for d in Distro::ALL {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let o = layout(d);
        let t = guest::build(dir.path(), &o);
        eprintln!("{}: guest tree built in {:?}", d.name(), t0.elapsed());
        let files = all_files(&t);
        let text = |p: &str| String::from_utf8(files[p].clone()).unwrap();

        // Accounts: every primary group exists; shadow covers passwd; humans are in the
        // login.defs range and system accounts are not.
        let passwd = text("/etc/passwd");
        let group = text("/etc/group");
        let shadow = text("/etc/shadow");
        let gshadow = text("/etc/gshadow");
        let gids: BTreeSet<&str> = group
            .lines()
            .map(|l| l.split(':').nth(2).unwrap())
            .collect();
        let names = |s: &str| -> Vec<String> {
            s.lines()
                .map(|l| l.split(':').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(&passwd),
            names(&shadow),
            "{}: passwd vs shadow",
            d.name()
        );
        assert_eq!(
            names(&group),
            names(&gshadow),
            "{}: group vs gshadow",
            d.name()
        );
        let defs = text("/etc/login.defs");
        let def = |k: &str| -> u32 {
            defs.lines()
                .find_map(|l| {
                    l.strip_prefix(k)
                        .filter(|r| r.starts_with(char::is_whitespace))
                })
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (uid_min, uid_max) = (def("UID_MIN"), def("UID_MAX"));
        for l in passwd.lines() {
            let f: Vec<&str> = l.split(':').collect();
            assert_eq!(f.len(), 7, "{}: {l}", d.name());
            assert!(
                gids.contains(f[3]) || f[3] == "1",
                "{}: gid {} of {} has no group",
                d.name(),
                f[3],
                f[0]
            );
            let uid: u32 = f[2].parse().unwrap();
            let human = t.human_users.iter().any(|u| u.name == f[0]);
            assert_eq!(
                human,
                (uid_min..=uid_max).contains(&uid),
                "{}: {} (uid {uid}) human={human}",
                d.name(),
                f[0]
            );
        }
        assert_eq!(t.human_users.len(), 2);
        assert!(t.system_users.contains(&"root".to_string()));

        // OS release texts.
        let osr = fs::read_to_string(t.host_path("/etc/os-release")).unwrap();
        assert!(
            osr.contains(&format!("ID={}", d.os_id()))
                || osr.contains(&format!("ID=\"{}\"", d.os_id()))
        );
        assert!(osr.contains(&format!("VERSION_ID=\"{}\"", d.version_id())));
        match d {
            Distro::CentOS7 => assert!(text("/etc/centos-release").contains(d.full_version())),
            Distro::Rocky9 => assert!(text("/etc/rocky-release").contains(d.full_version())),
            Distro::Debian12 => assert_eq!(text("/etc/debian_version").trim(), d.full_version()),
            _ => assert!(text("/etc/lsb-release").contains(d.full_version())),
        }

        // Markers: each is in some file of the tree (the swap one is planted by the
        // packer); no kept file holds one; markers are distinct.
        let texts: BTreeSet<&str> = t.markers.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts.len(),
            t.markers.len(),
            "{}: duplicate markers",
            d.name()
        );
        assert!(
            t.markers.len() >= 40,
            "{}: only {} markers",
            d.name(),
            t.markers.len()
        );
        for m in &t.markers {
            assert!(
                files.values().any(|v| contains(v, &m.text)),
                "{}: marker for {} ({}) is in no file",
                d.name(),
                m.place,
                m.what
            );
        }
        for k in &t.keep {
            let p = t.host_path(k);
            let md = fs::symlink_metadata(&p)
                .unwrap_or_else(|_| panic!("{}: kept {k} missing", d.name()));
            if md.is_file() {
                let v = fs::read(&p).unwrap();
                for m in &t.markers {
                    assert!(
                        !contains(&v, &m.text),
                        "{}: kept {k} holds a marker",
                        d.name()
                    );
                }
            }
        }
        // The fstab on disk is exactly the lines reported.
        let fstab: Vec<String> = text("/etc/fstab").lines().map(str::to_string).collect();
        let reported: Vec<String> = t.fstab.iter().map(|l| l.line.clone()).collect();
        assert_eq!(fstab, reported);
        assert_eq!(t.fstab.iter().filter(|l| l.fate == Fate::Drop).count(), 6);
        assert_eq!(t.fstab.iter().filter(|l| l.policy_error).count(), 3);

        // Hard links and holes made it to the host tree.
        let a = fs::metadata(t.host_path("/opt/app/share/one")).unwrap();
        assert_eq!(a.nlink(), 3);
        let s = fs::metadata(t.host_path("/var/lib/app/sparse.img")).unwrap();
        assert!(s.blocks() * 512 < s.len() / 4, "sparse.img is not sparse");

        // Package databases, read by the distributions' own tools.
        match d.family() {
            Family::Debian => {
                let (ok, out) = tool(
                    Command::new("dpkg-query")
                        .arg(format!(
                            "--admindir={}",
                            t.host_path("/var/lib/dpkg").display()
                        ))
                        .args(["-W", "-f", "${Package}\t${Version}\t${Status}\n"]),
                );
                assert!(ok, "{}: dpkg-query: {out}", d.name());
                let got: BTreeSet<(String, String, String)> = out
                    .lines()
                    .map(|l| {
                        let f: Vec<&str> = l.split('\t').collect();
                        (f[0].to_string(), f[1].to_string(), f[2].to_string())
                    })
                    .collect();
                let want: BTreeSet<(String, String, String)> = t
                    .packages
                    .iter()
                    .map(|p| (p.name.clone(), p.version.clone(), p.status.clone()))
                    .collect();
                assert_eq!(got, want, "{}: dpkg-query disagrees", d.name());
                assert!(want.iter().any(|p| p.0 == "openssh-server"));
                assert!(want.iter().any(|p| p.2 == "deinstall ok config-files"));
                assert_eq!(want.iter().any(|p| p.0 == "cloud-init"), o.cloud_init);
                assert!(want.iter().any(|p| p.0 == "xmrig"));
            }
            Family::RedHat => {
                let (ok, out) = tool(
                    Command::new("rpm")
                        .args(["-qa", "--dbpath"])
                        .arg(t.host_path("/var/lib/rpm"))
                        .args([
                            "--qf",
                            "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE} %{ARCH} %{VENDOR}\n",
                        ]),
                );
                assert!(ok, "{}: rpm -qa: {out}", d.name());
                for p in &t.packages {
                    let v = if p.version.contains(':') {
                        p.version.clone()
                    } else {
                        format!("(none):{}", p.version)
                    };
                    let line = format!("{} {v} {}", p.name, p.arch);
                    assert!(
                        out.lines().any(|l| l.starts_with(&line)),
                        "{}: rpm lacks {line}",
                        d.name()
                    );
                }
                if d == Distro::CentOS7 {
                    let n = out.lines().filter(|l| !l.starts_with("warning:")).count();
                    assert_eq!(n, 303, "{out}");
                    assert!(t.host_path("/var/lib/rpm/Packages").is_file());
                } else {
                    assert!(t.host_path("/var/lib/rpm/rpmdb.sqlite").is_file());
                    assert!(out
                        .lines()
                        .all(|l| l.ends_with("Rocky Enterprise Software Foundation")));
                    assert!(out.lines().any(|l| l.starts_with("cloud-init ")));
                    assert!(out.lines().any(|l| l.starts_with("xmrig ")));
                }
            }
        }
    }
}

#[test]
fn disk_images_are_valid_and_hold_every_marker() {
    for d in Distro::ALL {
        let dir = tempfile::tempdir().unwrap();
        let o = layout(d);
        let t0 = Instant::now();
        let t = guest::build(&dir.path().join("tree").tap_mkdir(), &o);
        let t1 = Instant::now();
        let img = dir.path().join("disk.raw");
        let disk = disk::pack(&t, &img, &disk::DiskOptions::default());
        let t2 = Instant::now();
        eprintln!(
            "{}: tree {:?}, disk {:?} ({} MiB, {} MiB allocated)",
            d.name(),
            t1 - t0,
            t2 - t1,
            disk.size / disk::MIB,
            fs::metadata(&img).unwrap().blocks() * 512 / disk::MIB
        );
        let name = d.name();

        // The partition table.
        match o.table {
            PartitionTable::Gpt => {
                let (ok, out) = tool(Command::new("sgdisk").arg("-v").arg(&img));
                assert!(
                    ok && out.contains("No problems found"),
                    "{name}: sgdisk -v: {out}"
                );
                let (_, out) = tool(Command::new("sgdisk").arg("-p").arg(&img));
                for p in &disk.parts {
                    let start = format!("{}", p.start / 512);
                    assert!(
                        out.lines().any(|l| {
                            let f: Vec<&str> = l.split_whitespace().collect();
                            f.len() > 2 && f[0] == p.number.to_string() && f[1] == start
                        }),
                        "{name}: partition {} at {start} not in\n{out}",
                        p.number
                    );
                }
            }
            PartitionTable::Mbr => {
                let (ok, out) = tool(Command::new("sfdisk").arg("--verify").arg(&img));
                assert!(ok, "{name}: sfdisk --verify: {out}");
                let (_, out) = tool(Command::new("sfdisk").arg("--dump").arg(&img));
                assert!(
                    out.contains(&format!("label-id: 0x{}", t.ids.mbr_id)),
                    "{out}"
                );
            }
        }

        // Filesystems: fsck-clean, and blkid sees the identities fstab names.
        for p in &disk.parts {
            if p.role == Role::BiosBoot {
                continue;
            }
            let (_, out) = tool(
                Command::new("blkid")
                    .args(["-p", "-o", "export", "-O"])
                    .arg(p.start.to_string())
                    .arg(&img),
            );
            let kv: BTreeMap<String, String> = out
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                kv.get("UUID"),
                p.fs_uuid.as_ref(),
                "{name}: {:?} {out}",
                p.role
            );
            assert_eq!(
                kv.get("LABEL"),
                p.label.as_ref(),
                "{name}: {:?} {out}",
                p.role
            );
            let want_type = match p.role {
                Role::Efi => "vfat",
                Role::Swap => "swap",
                _ => "ext4",
            };
            assert_eq!(
                kv.get("TYPE").map(String::as_str),
                Some(want_type),
                "{name}: {out}"
            );
            if want_type == "ext4" {
                let dev = format!("{}?offset={}", img.display(), p.start);
                let (ok, out) = tool(Command::new("e2fsck").args(["-fn", &dev]));
                assert!(ok, "{name}: e2fsck -fn {:?}: {out}", p.role);
            }
        }
        for l in t
            .fstab
            .iter()
            .filter(|l| l.fate == Fate::Keep && !l.line.starts_with('#') && !l.line.is_empty())
        {
            let spec = l.line.split_whitespace().next().unwrap();
            let found = disk.parts.iter().any(|p| {
                let uuid = p.fs_uuid.as_deref().unwrap_or("-");
                match spec.split_once('=') {
                    Some(("UUID", v)) => v == uuid,
                    Some(("LABEL", v)) => Some(v) == p.label.as_deref(),
                    Some(("PARTUUID", v)) => v == p.partuuid,
                    _ => spec == format!("/dev/vda{}", p.number),
                }
            });
            assert!(found, "{name}: fstab line names no partition: {}", l.line);
        }
        let detached = &t.ids.detached_uuid;
        assert!(disk
            .parts
            .iter()
            .all(|p| p.fs_uuid.as_ref() != Some(detached)));

        // The file deleted after packing is gone from the filesystem, its data is not.
        let root = disk.part(Role::Root);
        for p in &t.delete_after_pack {
            let (_, out) = tool(
                Command::new("debugfs")
                    .args(["-R", &format!("stat {p}")])
                    .arg(format!("{}?offset={}", img.display(), root.start)),
            );
            assert!(
                out.contains("File not found"),
                "{name}: {p} still in the fs: {out}"
            );
        }

        // Every marker is somewhere in the raw image.
        let mut markers = t.markers.clone();
        markers.extend(disk.markers.clone());
        let t3 = Instant::now();
        let present = disk::markers_present(&img, &markers);
        eprintln!(
            "{name}: scanned {} markers in {:?}",
            markers.len(),
            t3.elapsed()
        );
        let missing: Vec<_> = markers
            .iter()
            .filter(|m| !present.iter().any(|p| p.text == m.text))
            .map(|m| format!("{} ({})", m.place, m.what))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: markers not in the image: {missing:?}"
        );
        assert!(disk.markers.iter().any(|m| m.place == "swap partition"));

        // Verbatim regions are where they were said to be.
        assert!(disk.verbatim.len() >= 2);
        for r in &disk.verbatim {
            assert_eq!(
                disk::blake3_range(&img, r.offset, r.len),
                r.blake3,
                "{name}: {}",
                r.what
            );
        }

        // QCOW2, compressed: the same guest, byte for byte.
        if matches!(d, Distro::Ubuntu2204 | Distro::CentOS7) {
            let q = dir.path().join("disk.qcow2");
            let t4 = Instant::now();
            disk::to_qcow2(&img, &q, true);
            eprintln!("{name}: qcow2 (zlib) in {:?}", t4.elapsed());
            let (ok, out) = tool(
                Command::new("qemu-img")
                    .args(["info", "--output=json"])
                    .arg(&q),
            );
            assert!(ok && out.contains("\"format\": \"qcow2\""), "{out}");
            assert!(out.contains("\"compression-type\": \"zlib\""), "{out}");
            let (ok, out) = tool(
                Command::new("qemu-img")
                    .args(["compare", "-f", "raw", "-F", "qcow2"])
                    .arg(&img)
                    .arg(&q),
            );
            assert!(ok, "{name}: qemu-img compare: {out}");
        }
    }
}

/// One libguestfs appliance looks at three guests: its inspection code must recognise
/// each OS from the fixture files alone, find /boot and /boot/efi through the fstab
/// UUIDs, and list the applications from the dpkg database; the kernel must
/// mount the ext4 filesystems and read them.
#[test]
fn libguestfs_inspects_the_images_as_real_guests() {
    let dir = tempfile::tempdir().unwrap();
    let mut drives = Vec::new();
    let mut roots = Vec::new();
    for (i, d) in [Distro::Ubuntu2204, Distro::CentOS7, Distro::Rocky9]
        .into_iter()
        .enumerate()
    {
        let mut o = layout(d);
        // Keep only problems that a kernel mount would not trip on.
        o.fstab_problems.clear();
        let sub = dir.path().join(d.name());
        fs::create_dir(&sub).unwrap();
        let t = guest::build(&sub, &o);
        let img = dir.path().join(format!("{}.raw", d.name()));
        let disk = disk::pack(&t, &img, &disk::DiskOptions::default());
        let letter = (b'a' + u8::try_from(i).unwrap()) as char;
        let root = format!("/dev/sd{letter}{}", disk.part(Role::Root).number);
        drives.push(img);
        roots.push((d, root, t));
    }
    let mut cmds: Vec<String> = vec!["inspect-os".into()];
    for (_, r, _) in &roots {
        for q in [
            "inspect-get-distro",
            "inspect-get-major-version",
            "inspect-get-minor-version",
            "inspect-get-package-format",
            "inspect-get-hostname",
            "inspect-get-mountpoints",
        ] {
            cmds.push(format!("{q} {r}"));
        }
        // Listing applications reads the package database: mount the root first.
        cmds.push(format!("mount-ro {r} /"));
        // The appliance's librpm (Debian's rpm 4.18, libguestfs 1.48) lists neither
        // CentOS 7's Berkeley DB nor Rocky's sqlite rpmdb, which the host's rpm reads
        // (see the first test): a leading `-` lets guestfish go on after that error.
        cmds.push(format!("-inspect-list-applications2 {r}"));
        cmds.push("umount-all".into());
    }
    // The kernel reads the Ubuntu root (and its ext4 with metadata_csum).
    cmds.push(format!("mount-ro {} /", roots[0].1));
    cmds.push("cat /etc/lsb-release".into());
    cmds.push("ll /opt/app/share".into());
    let drive_refs: Vec<(&Path, &str)> = drives.iter().map(|p| (p.as_path(), "raw")).collect();
    let cmd_refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let out = disk::guestfish_session(&drive_refs, false, &cmd_refs);
    eprintln!("libguestfs session: {:?}", t0.elapsed());

    let found: BTreeSet<&str> = out[0].lines().collect();
    for (_, r, _) in &roots {
        assert!(
            found.contains(r.as_str()),
            "inspect-os found {found:?}, not {r}"
        );
    }
    for (i, (d, _, t)) in roots.iter().enumerate() {
        let o = &out[1 + i * 9..1 + (i + 1) * 9];
        let (distro, fmt) = match d {
            Distro::Ubuntu2204 => ("ubuntu", "deb"),
            Distro::CentOS7 => ("centos", "rpm"),
            _ => ("rocky", "rpm"),
        };
        assert_eq!(o[0].trim(), distro, "{}", d.name());
        let (maj, min) = d
            .version_id()
            .split_once('.')
            .unwrap_or((d.version_id(), "0"));
        let min = if *d == Distro::CentOS7 { "4" } else { min };
        assert_eq!(o[1].trim(), maj.trim_start_matches('0'), "{}", d.name());
        assert_eq!(
            o[2].trim().parse::<u32>().unwrap(),
            min.parse::<u32>().unwrap(),
            "{}",
            d.name()
        );
        assert_eq!(o[3].trim(), fmt, "{}", d.name());
        assert_eq!(o[4].trim(), t.hostname, "{}", d.name());
        assert!(
            o[5].contains("/boot/efi:"),
            "{}: mountpoints {}",
            d.name(),
            o[5]
        );
        if t.options.separate_boot {
            assert!(
                o[5].contains("/boot:"),
                "{}: mountpoints {}",
                d.name(),
                o[5]
            );
        }
        let apps: BTreeSet<&str> = o[7]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("app2_name: "))
            .collect();
        if d.family() == Family::RedHat {
            // Checked with the host's rpm instead (see above).
            continue;
        }
        assert!(
            apps.contains("openssh-server"),
            "{}: apps {apps:?}",
            d.name()
        );
        let want = t
            .packages
            .iter()
            .filter(|p| !p.status.contains("config-files"))
            .count();
        assert_eq!(apps.len(), want, "{}: apps {apps:?}", d.name());
    }
    let n = 1 + roots.len() * 9;
    assert!(
        out[n + 1].contains("DISTRIB_RELEASE=22.04"),
        "{}",
        out[n + 1]
    );
    assert!(
        out[n + 2].contains("one") && out[n + 2].contains("three"),
        "{}",
        out[n + 2]
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}
