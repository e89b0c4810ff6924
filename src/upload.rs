//! What an OpenStack image service (Glance) needs to take a sanitized disk: the disk
//! and container formats, the minimum disk, the digests Glance stores (MD5 as
//! `checksum`, SHA-512 as `os_hash_value`), the image properties read from the guest
//! and the request, and a ready `openstack image create` line. Also: whether the guest
//! grows its own root filesystem at first boot, which makes shrinking the disk safe and
//! the upload smaller.
//!
//! Reads the assembled guest (never the on-disk formats) and the request; renders
//! nothing but the command line. The digests come from the writer
//! ([`crate::output::digest`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::guest::namespace::Namespace;
use crate::image::Image;
use crate::inspect::os::{parse_assignments, OsInfo};
use crate::rules::request::{Request, Visibility};
use crate::tree::Kind;

/// Configuration files are small; a larger one is not read.
const CONFIG_LIMIT: u64 = 1 << 20;

const GIB: u64 = 1 << 30;

/// The `upload` object of a sanitize report.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub disk_format: &'static str,
    pub container_format: &'static str,
    /// The output's size in bytes (what is uploaded: holes are sent as zeros).
    pub size_bytes: u64,
    /// The output's size in whole GiB, rounded up: a flavor's disk must hold it.
    pub min_disk: u64,
    /// MD5 of the whole output, as Glance's `checksum`; null on a dry run.
    pub checksum: Option<String>,
    pub os_hash_algo: &'static str,
    /// SHA-512 of the whole output, as Glance's `os_hash_value`; null on a dry run.
    pub os_hash_value: Option<String>,
    /// The image name (`--name` or the request's).
    pub name: Option<String>,
    /// Glance's visibility: public, private or shared (the request's
    /// `specific-users`).
    pub visibility: Option<&'static str>,
    /// The request's tags.
    pub tags: Vec<String>,
    /// The request's users, to share a `shared` image with (Glance shares with
    /// projects: `openstack image add project`).
    pub share_with: Vec<String>,
    /// Image properties, from the guest and the request.
    pub properties: BTreeMap<String, String>,
    /// Properties left out, and why.
    pub notes: Vec<String>,
    /// The request's `installed_software`, each looked up in the output's guest.
    pub installed_software: Vec<SoftwareCheck>,
    pub shrink: ShrinkDecision,
    /// `openstack image create ...` for the written file.
    pub command: String,
}

/// One `installed_software` entry of the request, looked up in the sanitized guest.
#[derive(Debug, Clone, Serialize)]
pub struct SoftwareCheck {
    pub name: String,
    pub version: Option<String>,
    pub path: Option<String>,
    /// Whether `path` is a file in the guest (null without a path).
    pub present: Option<bool>,
}

/// Whether the disk was made smaller, and why (or why not).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShrinkDecision {
    pub shrunk: bool,
    /// `requested` (--shrink), `guest-grows-itself` (the default when it does),
    /// `kept-by-option` (--keep-size or --size), `guest-does-not-grow` (the
    /// default otherwise), `no-gain` (shrinking would not make it smaller).
    pub reason: &'static str,
    /// In words, with the guest files that decided it.
    pub detail: String,
}

/// How the operator asked for the disk's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeChoice {
    /// Nothing said: shrink when the guest grows itself, else keep the size.
    #[default]
    Auto,
    /// `--shrink`.
    Shrink,
    /// `--keep-size`, or `--size`.
    Keep,
}

// ---- does the guest grow itself? -------------------------------------------------

fn read_text(ns: &Namespace<'_>, path: &str) -> Option<String> {
    ns.read(path.as_bytes(), CONFIG_LIMIT)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn is_file(ns: &Namespace<'_>, path: &str) -> bool {
    ns.resolve(path.as_bytes(), true)
        .is_ok_and(|p| matches!(ns.node(p).kind, Kind::File(_)))
}

/// cloud-init's configuration files in the order it merges them: cloud.cfg, then
/// cloud.cfg.d/*.cfg by name.
fn cloud_cfg_files(ns: &Namespace<'_>) -> Vec<String> {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_string()];
    if let Ok(list) = ns.list(b"/etc/cloud/cloud.cfg.d") {
        let mut names: Vec<String> = list
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .filter(|n| n.ends_with(".cfg"))
            .collect();
        names.sort();
        files.extend(
            names
                .into_iter()
                .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
        );
    }
    files
}

/// What cloud-init's configuration says about growing the root filesystem.
#[derive(Debug, Default, PartialEq, Eq)]
struct GrowConfig {
    /// The file that lists each module, if one does.
    growpart_module: Option<String>,
    resizefs_module: Option<String>,
    /// A `growpart: {mode: off}` (or `false`), and where.
    growpart_off: Option<String>,
    /// `resize_rootfs: false`, and where.
    resize_off: Option<String>,
}

fn is_off(v: &str) -> bool {
    let v = v.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    matches!(v.as_str(), "off" | "false" | "no" | "0" | "disabled")
}

/// Reads cloud-init's YAML line by line, as far as growing goes: module list items
/// (`- growpart`, `- cc_growpart`, `- [growpart, always]`), the `growpart:` block's
/// `mode`, and `resize_rootfs`. Later files override earlier ones, as cloud-init
/// merges them.
fn grow_config(files: &[(String, String)]) -> GrowConfig {
    let mut g = GrowConfig::default();
    for (file, text) in files {
        let mut in_growpart = false;
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("");
            let l = line.trim();
            if l.is_empty() {
                continue;
            }
            let top_level = !line.starts_with([' ', '\t', '-']);
            if top_level {
                in_growpart = false;
            }
            if let Some(item) = l.strip_prefix('-') {
                let item = item.trim().trim_start_matches('[').trim();
                let first = item
                    .split([',', ' ', ']'])
                    .next()
                    .unwrap_or("")
                    .trim_matches(['"', '\'']);
                match first {
                    "growpart" | "cc_growpart" => g.growpart_module = Some(file.clone()),
                    "resizefs" | "cc_resizefs" | "resize_rootfs" => {
                        g.resizefs_module = Some(file.clone())
                    }
                    _ => {}
                }
                continue;
            }
            if top_level {
                if let Some(v) = l.strip_prefix("growpart:") {
                    let v = v.trim();
                    if v.is_empty() {
                        in_growpart = true;
                    } else if let Some(inner) = v.strip_prefix('{') {
                        // growpart: {mode: off, devices: [/]}
                        for kv in inner.trim_end_matches('}').split(',') {
                            if let Some((k, val)) = kv.split_once(':') {
                                if k.trim() == "mode" {
                                    g.growpart_off = is_off(val).then(|| file.clone());
                                }
                            }
                        }
                    } else {
                        g.growpart_off = is_off(v).then(|| file.clone());
                    }
                } else if let Some(v) = l.strip_prefix("resize_rootfs:") {
                    g.resize_off = is_off(v).then(|| file.clone());
                }
            } else if in_growpart {
                if let Some(v) = l.strip_prefix("mode:") {
                    g.growpart_off = is_off(v).then(|| file.clone());
                }
            }
        }
    }
    g
}

/// Whether the guest grows its root partition and filesystem at first boot:
/// cloud-init installed and enabled, its configuration running `growpart` and
/// `resizefs` (neither turned off), and the `growpart` program present. The evidence
/// (guest files) when it does, or what is missing.
pub fn grows_itself(ns: &Namespace<'_>) -> Result<Vec<String>, String> {
    let mut ev = crate::sanitize::ssh::cloud_init_enabled(ns)?;
    let files: Vec<(String, String)> = cloud_cfg_files(ns)
        .into_iter()
        .filter_map(|f| read_text(ns, &f).map(|t| (f, t)))
        .collect();
    if files.is_empty() {
        return Err("cloud-init has no configuration (/etc/cloud/cloud.cfg)".into());
    }
    let g = grow_config(&files);
    let growpart = g
        .growpart_module
        .ok_or("cloud-init's configuration does not run its growpart module")?;
    let resizefs = g
        .resizefs_module
        .ok_or("cloud-init's configuration does not run its resizefs module")?;
    if let Some(f) = g.growpart_off {
        return Err(format!("{f} turns cloud-init's growpart off"));
    }
    if let Some(f) = g.resize_off {
        return Err(format!("{f} sets resize_rootfs to false"));
    }
    let tool = [
        "/usr/bin/growpart",
        "/usr/sbin/growpart",
        "/bin/growpart",
        "/sbin/growpart",
    ]
    .into_iter()
    .find(|p| is_file(ns, p))
    .ok_or("the growpart program is not installed (cloud-guest-utils or cloud-utils-growpart)")?;
    ev.push(format!("{growpart} runs growpart"));
    ev.push(format!("{resizefs} runs resizefs"));
    ev.push(tool.to_string());
    Ok(ev)
}

// ---- properties ----------------------------------------------------------------

/// Glance's `os_distro` for an os-release ID: the values its documentation lists
/// (arch, centos, debian, fedora, freebsd, gentoo, mandrake, mandriva, mes, msdos,
/// netbsd, netware, openbsd, opensolaris, opensuse, rhel, rocky, sled, ubuntu,
/// windows), else the os-release ID itself (almalinux, ol, ...).
pub fn os_distro(os_release_id: &str) -> String {
    let id = os_release_id.to_ascii_lowercase();
    match id.as_str() {
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "opensuse-microos" => {
            "opensuse".into()
        }
        "archlinux" => "arch".into(),
        "redhat" | "red hat enterprise linux" => "rhel".into(),
        _ => id,
    }
}

/// The guest's CPU architecture in Glance's terms (x86_64, aarch64, ...), from the
/// ELF header of its shell, with the file it came from.
pub fn architecture(ns: &Namespace<'_>) -> Option<(&'static str, String)> {
    for path in [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/bash",
        "/usr/bin/bash",
        "/usr/bin/env",
    ] {
        let Ok(pos) = ns.resolve(path.as_bytes(), true) else {
            continue;
        };
        let node = ns.node(pos);
        if !matches!(node.kind, Kind::File(_)) || node.size < 20 {
            continue;
        }
        let mut h = [0u8; 20];
        if ns.tree(pos.vol).read_file(pos.node, 0, &mut h).is_err() || &h[..4] != b"\x7fELF" {
            continue;
        }
        let little = h[5] == 1;
        let machine = if little {
            u16::from_le_bytes([h[18], h[19]])
        } else {
            u16::from_be_bytes([h[18], h[19]])
        };
        let arch = match (machine, h[4], little) {
            (0x3e, 2, _) => "x86_64",
            (0x03, 1, _) => "i686",
            (0xb7, 2, _) => "aarch64",
            (0x28, 1, _) => "armv7l",
            (0x15, 2, true) => "ppc64le",
            (0x15, 2, false) => "ppc64",
            (0x16, 2, _) => "s390x",
            (0xf3, 2, _) => "riscv64",
            _ => continue,
        };
        return Some((arch, path.to_string()));
    }
    None
}

/// Glance's `hw_firmware_type` from what the disk holds: `bios` when BIOS boot code
/// is installed (the MBR's boot code, and on GPT a BIOS boot partition), since that
/// boots on a cloud's default firmware; `uefi` when only an EFI system partition and
/// an EFI boot loader in the guest are there. With both, `bios` (a note says UEFI
/// works too). `Err` says why neither was found.
pub fn firmware(
    image: &Image,
    ns: &Namespace<'_>,
    packages: &[String],
) -> Result<(&'static str, Option<String>), String> {
    use crate::disk::partition::TypeClass;
    let mut mbr = [0u8; 440];
    let boot_code = image.disk.read_at(0, &mut mbr).is_ok() && mbr.iter().any(|&b| b != 0);
    let class = |c: TypeClass| {
        image
            .volumes
            .iter()
            .find(|v| v.partition.as_ref().is_some_and(|p| p.part_type.class == c))
    };
    let gpt = image.volumes.iter().any(|v| {
        v.partition
            .as_ref()
            .is_some_and(|p| p.part_type.raw.contains('-'))
    });
    let bios = boot_code && (!gpt || class(TypeClass::BiosBoot).is_some());
    let efi_loader = packages.iter().find(|n| {
        let n = n.as_str();
        n.starts_with("grub-efi")
            || n.starts_with("grub2-efi")
            || n.starts_with("shim")
            || n == "systemd-boot"
            || n.starts_with("systemd-boot-efi")
    });
    let efi_dir = [
        "/usr/lib/grub/x86_64-efi",
        "/usr/lib/grub/arm64-efi",
        "/usr/lib/shim",
        "/boot/efi/EFI",
    ]
    .into_iter()
    .find(|p| ns.exists(p.as_bytes()));
    let uefi = class(TypeClass::Efi).is_some() && (efi_loader.is_some() || efi_dir.is_some());
    match (bios, uefi) {
        (true, true) => Ok((
            "bios",
            Some("the disk boots with UEFI too (EFI system partition and boot loader)".into()),
        )),
        (true, false) => Ok(("bios", None)),
        (false, true) => Ok(("uefi", None)),
        (false, false) => Err(if class(TypeClass::Efi).is_some() {
            "hw_firmware_type: an EFI system partition but no EFI boot loader in the guest, and no BIOS boot code".into()
        } else {
            "hw_firmware_type: no BIOS boot code in the MBR and no EFI system partition".into()
        }),
    }
}

/// The os-release VERSION_ID: the version as the distributor states it (Glance's
/// `os_version`), else the version imgsan identified.
fn os_version(ns: &Namespace<'_>, os: &OsInfo) -> Option<String> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .into_iter()
        .find_map(|p| ns.read(p.as_bytes(), CONFIG_LIMIT).ok())
        .and_then(|b| {
            parse_assignments(&b, "/etc/os-release")
                .0
                .remove("VERSION_ID")
        })
        .filter(|v| !v.is_empty())
        .or_else(|| os.version.as_ref().map(|v| v.text.clone()))
}

/// Whether the qemu guest agent is installed (its program).
fn guest_agent(ns: &Namespace<'_>) -> Option<&'static str> {
    [
        "/usr/sbin/qemu-ga",
        "/usr/bin/qemu-ga",
        "/sbin/qemu-ga",
        "/usr/local/bin/qemu-ga",
    ]
    .into_iter()
    .find(|p| is_file(ns, p))
}

// ---- the object and the command --------------------------------------------------

/// What the guest says for the upload, read before its trees go to the builder.
#[derive(Debug, Clone, Default)]
pub struct GuestPart {
    pub properties: BTreeMap<String, String>,
    pub notes: Vec<String>,
    pub installed_software: Vec<SoftwareCheck>,
    /// [`grows_itself`]'s answer.
    pub grows: Option<Result<Vec<String>, String>>,
}

/// Reads the sanitized guest: properties, the request's software, whether it grows
/// itself. `packages` are the installed package names (dpkg or rpm).
pub fn read_guest(
    image: &Image,
    ns: &Namespace<'_>,
    os: Option<&OsInfo>,
    packages: &[String],
    request: Option<&Request>,
) -> GuestPart {
    let mut properties = BTreeMap::new();
    let mut notes = Vec::new();
    match os {
        Some(os) => {
            properties.insert("os_distro".to_string(), os_distro(&os.id));
            match os_version(ns, os) {
                Some(v) => {
                    properties.insert("os_version".to_string(), v);
                }
                None => notes.push("os_version: the guest's version is unknown".to_string()),
            }
        }
        None => notes.push("os_distro, os_version: the guest's OS is unknown".to_string()),
    }
    match architecture(ns) {
        Some((a, _)) => {
            properties.insert("architecture".to_string(), a.to_string());
        }
        None => notes.push(
            "architecture: no ELF shell (/bin/sh) of a known machine in the guest".to_string(),
        ),
    }
    match firmware(image, ns, packages) {
        Ok((fw, note)) => {
            properties.insert("hw_firmware_type".to_string(), fw.to_string());
            notes.extend(note.map(|n| format!("hw_firmware_type: {n}")));
        }
        Err(why) => notes.push(why),
    }
    // Every distribution imgsan accepts boots from virtio-blk; it is also what a
    // KVM cloud uses when the property is not set.
    properties.insert("hw_disk_bus".to_string(), "virtio".to_string());
    if guest_agent(ns).is_some() {
        properties.insert("hw_qemu_guest_agent".to_string(), "yes".to_string());
    }
    let installed_software = request
        .map(|r| {
            r.installed_software
                .iter()
                .map(|s| SoftwareCheck {
                    name: s.name.clone(),
                    version: s.version.as_ref().map(|v| v.as_str().to_string()),
                    path: s.path.clone(),
                    present: s.path.as_deref().map(|p| is_file(ns, p)),
                })
                .collect()
        })
        .unwrap_or_default();
    GuestPart {
        properties,
        notes,
        installed_software,
        grows: Some(grows_itself(ns)),
    }
}

/// What the upload object is built from besides the guest.
pub struct UploadInputs<'a> {
    pub request: Option<&'a Request>,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub size_bytes: u64,
    /// The file written ("-" for standard output; `None` on a dry run).
    pub file: Option<&'a str>,
    pub digests: Option<crate::output::digest::Digests>,
    pub shrink: ShrinkDecision,
}

/// Builds the upload object.
pub fn upload(guest: &GuestPart, i: &UploadInputs<'_>) -> Upload {
    let mut properties = guest.properties.clone();
    if let Some(d) = i.description {
        // One line: a folded or literal YAML block keeps its line breaks, which
        // a property (and the command line) does not need.
        let one_line = d.split_whitespace().collect::<Vec<_>>().join(" ");
        properties.insert("description".to_string(), one_line);
    }
    let visibility = i
        .request
        .and_then(|r| r.visibility.as_ref())
        .map(|v| match v.value {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::SpecificUsers => "shared",
        });
    let tags = i.request.map(|r| r.tags.clone()).unwrap_or_default();
    let share_with = match visibility {
        Some("shared") => i.request.map(|r| r.users.clone()).unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut u = Upload {
        disk_format: "raw",
        container_format: "bare",
        size_bytes: i.size_bytes,
        min_disk: i.size_bytes.div_ceil(GIB),
        checksum: i.digests.map(|d| d.md5_hex()),
        os_hash_algo: "sha512",
        os_hash_value: i.digests.map(|d| d.sha512_hex()),
        name: i.name.map(str::to_string),
        visibility,
        tags,
        share_with,
        properties,
        notes: guest.notes.clone(),
        installed_software: guest.installed_software.clone(),
        shrink: i.shrink.clone(),
        command: String::new(),
    };
    u.command = command(&u, i.file);
    u
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `openstack image create --disk-format raw --container-format bare --min-disk N
/// [--public|--private|--shared] [--tag T]... --property K=V ... --file OUT NAME`.
/// Without a written file (a dry run, standard output) the file is `OUT.raw`.
pub fn command(u: &Upload, file: Option<&str>) -> String {
    let mut a: Vec<String> = vec![
        "openstack".into(),
        "image".into(),
        "create".into(),
        "--disk-format".into(),
        u.disk_format.into(),
        "--container-format".into(),
        u.container_format.into(),
        "--min-disk".into(),
        u.min_disk.to_string(),
    ];
    if let Some(v) = u.visibility {
        a.push(format!("--{v}"));
    }
    for t in &u.tags {
        a.push("--tag".into());
        a.push(shell_quote(t));
    }
    for (k, v) in &u.properties {
        a.push("--property".into());
        a.push(shell_quote(&format!("{k}={v}")));
    }
    let file = match file {
        Some(f) if f != "-" => f,
        _ => "OUT.raw",
    };
    a.push("--file".into());
    a.push(shell_quote(file));
    a.push(shell_quote(u.name.as_deref().unwrap_or("NAME")));
    a.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(files: &[(&str, &str)]) -> GrowConfig {
        let v: Vec<(String, String)> = files
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        grow_config(&v)
    }

    #[test]
    fn growpart_and_resizefs_modules_and_overrides() {
        let base = "cloud_init_modules:\n - bootcmd\n - growpart\n - [resizefs, always]\n - ssh\n";
        let g = cfg(&[("/etc/cloud/cloud.cfg", base)]);
        assert_eq!(g.growpart_module.as_deref(), Some("/etc/cloud/cloud.cfg"));
        assert!(g.resizefs_module.is_some());
        assert!(g.growpart_off.is_none() && g.resize_off.is_none());
        let off = cfg(&[
            ("/etc/cloud/cloud.cfg", base),
            (
                "/etc/cloud/cloud.cfg.d/99.cfg",
                "growpart:\n  mode: 'off'\n  devices: [/]\n",
            ),
        ]);
        assert_eq!(
            off.growpart_off.as_deref(),
            Some("/etc/cloud/cloud.cfg.d/99.cfg")
        );
        let inline = cfg(&[
            ("a", base),
            ("b", "growpart: {mode: false}\nresize_rootfs: False\n"),
        ]);
        assert!(inline.growpart_off.is_some() && inline.resize_off.is_some());
        // A later file turns it back on.
        let back = cfg(&[
            ("a", base),
            ("b", "growpart:\n  mode: off\n"),
            ("c", "growpart:\n  mode: auto\n"),
        ]);
        assert!(back.growpart_off.is_none());
        let none = cfg(&[("a", "cloud_init_modules:\n - ssh\n# - growpart\n")]);
        assert!(none.growpart_module.is_none());
    }

    #[test]
    fn os_distro_uses_glance_names_then_the_os_release_id() {
        assert_eq!(os_distro("ubuntu"), "ubuntu");
        assert_eq!(os_distro("opensuse-leap"), "opensuse");
        assert_eq!(os_distro("rocky"), "rocky");
        assert_eq!(os_distro("almalinux"), "almalinux");
        assert_eq!(os_distro("CentOS"), "centos");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("os_distro=ubuntu"), "os_distro=ubuntu");
        assert_eq!(
            shell_quote("description=it's a b"),
            r"'description=it'\''s a b'"
        );
        assert_eq!(shell_quote(""), "''");
    }
}
