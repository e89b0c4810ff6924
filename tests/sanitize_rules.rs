//! The sanitize rules applied to guests that look like used instances (built by
//! tests/common/guest.rs on the host, read into trees by tests/common/hostvol.rs,
//! assembled by imgsan's guest layer): no planted secret survives in any file's
//! content or name, kept files are unchanged, emptied directories keep their mode and
//! owner, SELinux labels survive truncation, fstab lines meet the fate the fixture
//! expects, accounts lose the humans, ssh host keys get regenerated exactly one way,
//! and the request file's exclusions and exceptions and the rule switches work.
//!
//! Oracles imgsan does not share code with: the fixture's own bookkeeping (markers,
//! keep list, fstab fates), std::fs metadata of the host tree for the counts, python's
//! jsonschema for the report, systemd-analyze for the unit imgsan adds.

#[path = "common/guest.rs"]
mod guest;
#[path = "common/hostvol.rs"]
mod hostvol;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use guest::{Distro, Family, Fate, GuestOptions, GuestTree, Role};
use imgsan::guest::assemble::{assemble, NsFiles};
use imgsan::guest::VolumeId;
use imgsan::inspect::os::identify_guest;
use imgsan::rules::{Request, RuleSet};
use imgsan::sanitize::{self, Context, Layout, Options, Regeneration, SanitizeReport, Status};
use imgsan::tree::{Kind, NodeId, Tree};

// ---------------------------------------------------------------------------------
// Building and sanitizing
// ---------------------------------------------------------------------------------

struct Built {
    g: GuestTree,
    _dir: tempfile::TempDir,
    trees: Vec<Option<Tree>>,
    vols: Vec<VolumeId>,
}

fn build(opts: &GuestOptions) -> Built {
    build_with(opts, |_, _| Vec::new())
}

/// Builds a guest; `prepare` may edit the host tree before it is read, and returns
/// extra volumes (host directory, identity) to add after the fixture's own.
fn build_with(
    opts: &GuestOptions,
    prepare: impl FnOnce(&GuestTree, &std::path::Path) -> Vec<(PathBuf, VolumeId)>,
) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("guest");
    fs::create_dir(&gdir).unwrap();
    let g = guest::build(&gdir, opts);
    let extra = prepare(&g, dir.path());
    let skip: Vec<PathBuf> = g
        .delete_after_pack
        .iter()
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .collect();
    let mut trees = Vec::new();
    let mut vols = Vec::new();
    for p in &g.partitions {
        let data = dir.path().join(format!("vol{}.raw", p.number));
        let (tree, fs_type, uuid, label) = match p.role {
            Role::Root => (
                Some(hostvol::read(&g.root, &data, &skip)),
                "ext4",
                g.ids.root_uuid.clone(),
                g.ids.root_label.clone(),
            ),
            Role::Boot => (
                Some(hostvol::read(g.boot.as_ref().unwrap(), &data, &[])),
                "ext4",
                g.ids.boot_uuid.clone(),
                g.ids.boot_label.clone(),
            ),
            Role::Efi => (
                Some(hostvol::read(g.efi.as_ref().unwrap(), &data, &[])),
                "vfat",
                g.ids.efi_volid.clone(),
                g.ids.efi_label.clone(),
            ),
            Role::Swap => (
                None,
                "swap",
                g.ids.swap_uuid.clone(),
                g.ids.swap_label.clone(),
            ),
            Role::BiosBoot => (None, "", String::new(), String::new()),
        };
        trees.push(tree);
        vols.push(VolumeId {
            partition: Some(p.number),
            partuuid: Some(p.partuuid.clone()),
            partlabel: (!p.name.is_empty()).then(|| p.name.clone()),
            fs_type: (!fs_type.is_empty()).then(|| fs_type.to_string()),
            uuid: (!uuid.is_empty()).then_some(uuid),
            label: (!label.is_empty()).then_some(label),
            ..Default::default()
        });
    }
    for (i, (host, id)) in extra.into_iter().enumerate() {
        let data = dir.path().join(format!("extra{i}.raw"));
        trees.push(Some(hostvol::read(&host, &data, &[])));
        vols.push(id);
    }
    Built {
        g,
        _dir: dir,
        trees,
        vols,
    }
}

/// Assembles the guest and returns its layout and distribution base.
fn layout(b: &Built, rs: &RuleSet) -> (Layout, Option<imgsan::rules::Base>) {
    let g = assemble(&b.vols, b.trees.iter().map(Option::as_ref).collect())
        .unwrap()
        .expect("a root filesystem");
    let os = identify_guest(&NsFiles {
        ns: &g.ns,
        limit: 1 << 20,
    })
    .unwrap()
    .expect("an OS");
    (Layout::of(&g), sanitize::base_for(&rs.policy, &os))
}

fn run(b: &mut Built, options: &Options, request: Option<&Request>) -> (Layout, SanitizeReport) {
    run_rules(b, &RuleSet::embedded().unwrap(), options, request)
}

fn run_rules(
    b: &mut Built,
    rs: &RuleSet,
    options: &Options,
    request: Option<&Request>,
) -> (Layout, SanitizeReport) {
    let (l, base) = layout(b, rs);
    let cx = Context::new(rs, base, request, options);
    let report = sanitize::apply(&mut b.trees, &l, &cx).unwrap();
    (l, report)
}

// ---------------------------------------------------------------------------------
// Looking at trees
// ---------------------------------------------------------------------------------

fn ns<'a>(trees: &'a [Option<Tree>], l: &Layout) -> imgsan::guest::Namespace<'a> {
    l.namespace(trees).unwrap()
}

fn content(t: &Tree, node: NodeId) -> Vec<u8> {
    let n = t.node(node);
    let mut v = vec![0u8; usize::try_from(n.size).unwrap()];
    t.read_file(node, 0, &mut v).unwrap();
    v
}

/// The file at a guest path (following symlinks), or None.
fn read(trees: &[Option<Tree>], l: &Layout, path: &str) -> Option<Vec<u8>> {
    ns(trees, l).read(path.as_bytes(), 64 << 20).ok()
}

fn exists(trees: &[Option<Tree>], l: &Layout, path: &str) -> bool {
    ns(trees, l).resolve(path.as_bytes(), false).is_ok()
}

/// Everything about a node the fidelity contract covers, hashed: kind, mode, owner,
/// times, size, xattrs, link count, content or target.
fn digest(trees: &[Option<Tree>], l: &Layout, path: &str) -> String {
    let n = ns(trees, l);
    let pos = n
        .resolve(path.as_bytes(), false)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let t = n.tree(pos.vol);
    let node = t.node(pos.node);
    let links = t.link_counts()[pos.node as usize];
    let mut h = blake3::Hasher::new();
    h.update(
        format!(
            "{}|{:o}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}|",
            node.kind.name(),
            node.perm,
            node.uid,
            node.gid,
            node.atime,
            node.mtime,
            node.ctime,
            node.crtime,
            node.size,
            links
        )
        .as_bytes(),
    );
    let mut xs: Vec<(Vec<u8>, Vec<u8>)> = node
        .xattrs
        .iter()
        .map(|x| (t.xattr_name(x).to_vec(), t.xattr_value(x).to_vec()))
        .collect();
    xs.sort();
    for (k, v) in xs {
        h.update(&k);
        h.update(b"=");
        h.update(&v);
        h.update(b"|");
    }
    match &node.kind {
        Kind::File(_) => {
            h.update(&content(t, pos.node));
        }
        Kind::Symlink(to) => {
            h.update(to);
        }
        Kind::CharDev(d) | Kind::BlockDev(d) => {
            h.update(format!("{}:{}", d.major, d.minor).as_bytes());
        }
        _ => {}
    }
    h.finalize().to_hex().to_string()
}

fn selinux(trees: &[Option<Tree>], l: &Layout, path: &str) -> Option<Vec<u8>> {
    let n = ns(trees, l);
    let pos = n.resolve(path.as_bytes(), false).ok()?;
    let t = n.tree(pos.vol);
    t.node(pos.node)
        .xattrs
        .iter()
        .find(|x| t.xattr_name(x) == b"security.selinux")
        .map(|x| t.xattr_value(x).to_vec())
}

/// Every (marker, guest path) where a marker appears in a reachable node's name,
/// symlink target or file content, on every volume (shadowed directories too).
fn find_markers(trees: &[Option<Tree>], l: &Layout, markers: &[String]) -> Vec<(String, String)> {
    let prefix = |vol: usize| -> Vec<u8> {
        l.mounts
            .iter()
            .find(|(_, v)| *v == vol)
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    };
    let finders: Vec<memchr::memmem::Finder> = markers
        .iter()
        .map(|m| memchr::memmem::Finder::new(m.as_bytes()))
        .collect();
    let mut hits = Vec::new();
    for (vol, t) in trees.iter().enumerate() {
        let Some(t) = t else { continue };
        let mut seen = HashSet::new();
        for (path, node) in t.paths() {
            let mut guest = prefix(vol);
            if path != b"/" || guest.is_empty() {
                guest.extend_from_slice(&path);
            }
            let shown = String::from_utf8_lossy(&guest).into_owned();
            let mut hay: Vec<u8> = guest.clone();
            if seen.insert(node) {
                match &t.node(node).kind {
                    Kind::File(_) => hay.extend(content(t, node)),
                    Kind::Symlink(to) => hay.extend_from_slice(to),
                    _ => {}
                }
            }
            for (m, f) in markers.iter().zip(&finders) {
                if f.find(&hay).is_some() {
                    hits.push((m.to_string(), shown.clone()));
                }
            }
        }
    }
    hits.sort();
    hits.dedup();
    hits
}

/// Instance identifiers the default rules leave on purpose (none is a secret):
/// - a MAC address in the network configuration cloud-init wrote (netplan's
///   `match: macaddress`, an ifcfg HWADDR): those files configure the network, and
///   cloud-init rewrites them on a new instance;
/// - the machine id in the name of a Boot Loader Specification entry
///   (/boot/loader/entries/<machine-id>-<kernel>.conf on the RHEL family): the boot
///   menu is read from those files, deleting them breaks boot.
fn expected_survivor(g: &GuestTree, marker: &str, path: &str) -> bool {
    let id = |what: &str| {
        g.instance_ids
            .iter()
            .any(|m| m.text == marker && m.what == what)
    };
    (id("MAC address")
        && matches!(
            path,
            "/etc/netplan/50-cloud-init.yaml" | "/etc/sysconfig/network-scripts/ifcfg-eth0"
        ))
        || (id("machine-id")
            && path.starts_with(&format!("/boot/loader/entries/{marker}-"))
            && path.ends_with(".conf"))
}

fn all_markers(g: &GuestTree) -> Vec<String> {
    g.markers
        .iter()
        .chain(&g.instance_ids)
        .filter(|m| !m.place.starts_with("free blocks"))
        .map(|m| m.text.clone())
        .collect()
}

// ---------------------------------------------------------------------------------
// The default rules, distribution by distribution
// ---------------------------------------------------------------------------------

fn default_rules_leave_a_clean_guest(d: Distro, tweak: impl FnOnce(&mut GuestOptions)) {
    let mut o = GuestOptions::with_every_problem(d);
    tweak(&mut o);
    let mut b = build(&o);
    let rs = RuleSet::embedded().unwrap();
    let (l0, _) = layout(&b, &rs);

    // Before: every marker is really in the trees, and the keep list is hashed.
    let markers = all_markers(&b.g);
    let before = find_markers(&b.trees, &l0, &markers);
    let found: BTreeSet<&str> = before.iter().map(|(m, _)| m.as_str()).collect();
    for m in &markers {
        assert!(
            found.contains(m.as_str()),
            "{}: marker {m} not planted",
            d.name()
        );
    }
    let keep: BTreeMap<String, String> =
        b.g.keep
            .iter()
            .map(|p| (p.clone(), digest(&b.trees, &l0, p)))
            .collect();
    let labels = [
        "/var/log/messages",
        "/var/log/secure",
        "/var/log/wtmp",
        "/etc/machine-id",
        "/etc/hosts",
        "/etc/shadow",
        "/etc/passwd",
    ];
    let labels_before: Vec<Option<Vec<u8>>> =
        labels.iter().map(|p| selinux(&b.trees, &l0, p)).collect();
    let fstab_before = String::from_utf8(read(&b.trees, &l0, "/etc/fstab").unwrap()).unwrap();

    let (l, report) = run(&mut b, &Options::default(), None);
    let trees = &b.trees;
    let g = &b.g;
    let name = d.name();

    // 1. No secret survives, anywhere.
    let left: Vec<(String, String)> = find_markers(trees, &l, &markers)
        .into_iter()
        .filter(|(m, p)| !expected_survivor(g, m, p))
        .collect();
    assert!(left.is_empty(), "{name}: markers survived: {left:#?}");

    // 2. Kept files are unchanged.
    for (p, h) in &keep {
        assert_eq!(&digest(trees, &l, p), h, "{name}: kept file {p} changed");
    }

    // 3. Emptied directories keep their mode and owner; the guideline's ones are empty.
    for k in &g.kept_dirs {
        let n = ns(trees, &l);
        let pos = n
            .resolve(k.path.as_bytes(), true)
            .unwrap_or_else(|e| panic!("{name}: kept dir {} gone: {e}", k.path));
        let node = n.node(pos);
        assert!(node.is_dir(), "{name}: {}", k.path);
        assert_eq!(
            (u32::from(node.perm), node.uid, node.gid),
            (k.mode, k.uid, k.gid),
            "{name}: {} lost its mode or owner",
            k.path
        );
        if ["/home", "/root", "/tmp", "/mnt", "/var/tmp"].contains(&k.path.as_str()) {
            assert!(
                n.tree(pos.vol).entries(pos.node).is_empty(),
                "{name}: {} not emptied",
                k.path
            );
        }
    }

    // 4. SELinux labels survive truncation and replacement.
    for (p, was) in labels.iter().zip(&labels_before) {
        if was.is_some() {
            assert_eq!(&selinux(trees, &l, p), was, "{name}: {p} lost its label");
        }
    }
    if d.family() == Family::RedHat {
        assert!(
            labels_before[0].is_some(),
            "{name}: fixture has SELinux labels"
        );
        assert_eq!(read(trees, &l, "/var/log/messages").unwrap(), b"");
        assert_eq!(read(trees, &l, "/etc/machine-id").unwrap(), b"");
    }

    // 5. fstab: each line meets the fixture's fate; nothing else changes.
    let fstab = String::from_utf8(read(trees, &l, "/etc/fstab").unwrap()).unwrap();
    let kept: Vec<&str> = fstab.lines().collect();
    for fl in &g.fstab {
        match fl.fate {
            Fate::Keep => assert!(
                kept.contains(&fl.line.as_str()),
                "{name}: fstab lost {:?}",
                fl.line
            ),
            Fate::Drop => assert!(
                !kept.contains(&fl.line.as_str()),
                "{name}: fstab kept {:?}",
                fl.line
            ),
        }
    }
    let expect: Vec<&str> = fstab_before
        .lines()
        .filter(|line| {
            !g.fstab
                .iter()
                .any(|f| f.fate == Fate::Drop && f.line == *line)
        })
        .collect();
    assert_eq!(kept, expect, "{name}: fstab");
    let fr = report.rule("fstab").unwrap().fstab.as_ref().unwrap();
    assert_eq!(
        fr.dropped.len(),
        g.fstab.iter().filter(|f| f.fate == Fate::Drop).count(),
        "{name}: {fr:?}"
    );

    // 6. Accounts: the humans and their groups are gone, system accounts stay, the
    // stale copies are deleted.
    for f in [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
        "/etc/gshadow",
        "/etc/subuid",
        "/etc/subgid",
    ] {
        let text = String::from_utf8(read(trees, &l, f).unwrap()).unwrap();
        for u in &g.human_users {
            let prefix = format!("{}:", u.name);
            assert!(
                !text.lines().any(|line| line.starts_with(&prefix)),
                "{name}: {f} still has {}",
                u.name
            );
            for line in text.lines() {
                let members = line.rsplit(':').next().unwrap_or("");
                assert!(
                    !members.split(',').any(|m| m == u.name),
                    "{name}: {f}: {} still a member: {line}",
                    u.name
                );
            }
        }
    }
    let passwd = String::from_utf8(read(trees, &l, "/etc/passwd").unwrap()).unwrap();
    for s in &g.system_users {
        assert!(
            passwd.lines().any(|x| x.starts_with(&format!("{s}:"))),
            "{name}: {s} removed"
        );
    }
    for p in imgsan::inspect::users::STALE_COPIES {
        assert!(!exists(trees, &l, p), "{name}: {p} survived");
    }
    let acc = report.rule("accounts").unwrap().accounts.as_ref().unwrap();
    let removed: BTreeSet<&str> = acc
        .removed_accounts
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    let humans: BTreeSet<&str> = g.human_users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(removed, humans, "{name}");

    // 7. ssh: keys gone, config kept, cloud-init (or sshd-keygen) regenerates.
    let ssh_dir: Vec<String> = ns(trees, &l)
        .list(b"/etc/ssh")
        .unwrap()
        .into_iter()
        .map(|(n, _)| String::from_utf8_lossy(&n).into_owned())
        .collect();
    assert!(
        !ssh_dir.iter().any(|n| n.starts_with("ssh_host_")),
        "{name}: {ssh_dir:?}"
    );
    assert!(ssh_dir.contains(&"sshd_config".to_string()));
    let ssh = report.rule("ssh-host-keys").unwrap().ssh.as_ref().unwrap();
    assert_eq!(
        ssh.regenerated_by,
        Regeneration::CloudInit,
        "{name}: {ssh:?}"
    );
    assert!(
        report.added_files.is_empty(),
        "{name}: {:?}",
        report.added_files
    );

    // 8. Typos: the literal names were handled too.
    if o.typo_paths {
        let t = sanitize_template(d, "hosts.allow");
        assert_eq!(read(trees, &l, "/etc/host.allow").unwrap(), t, "{name}");
        assert_eq!(
            read(trees, &l, "/etc/resolve.conf").unwrap(),
            sanitize_template(d, "resolv.conf")
        );
        assert!(
            exists(trees, &l, "/etc/sshd/sshd_config.bak"),
            "{name}: only keys go"
        );
    }

    // 9. resolv.conf: a symlink stays a symlink; a file becomes the template.
    let n = ns(trees, &l);
    let pos = n.resolve(b"/etc/resolv.conf", false).unwrap();
    match d {
        Distro::Debian12 | Distro::CentOS7 | Distro::Rocky9 => {
            drop(n);
            assert_eq!(
                read(trees, &l, "/etc/resolv.conf").unwrap(),
                sanitize_template(d, "resolv.conf")
            );
        }
        _ => assert!(matches!(n.node(pos).kind, Kind::Symlink(_)), "{name}"),
    }

    // 10. The report adds up, and lists what it did.
    let sum: u64 = report
        .rules
        .iter()
        .filter(|r| r.status == Status::Applied)
        .map(|r| r.bytes_freed)
        .sum();
    assert_eq!(report.totals.bytes_freed, sum);
    assert!(
        report.totals.files_deleted > 50,
        "{name}: {:?}",
        report.totals
    );
    let home = report.rule("home").unwrap();
    assert!(
        home.paths.iter().any(|p| p == "/home/alice"),
        "{name}: {:?}",
        home.paths
    );
    let vl = report.rule("var-log").unwrap();
    assert!(
        vl.files_truncated >= 3 && vl.files_deleted >= 2,
        "{name}: {vl:?}"
    );
}

fn sanitize_template(d: Distro, name: &str) -> Vec<u8> {
    let rs = RuleSet::embedded().unwrap();
    let base = match d.family() {
        Family::Debian => imgsan::rules::Base::Debian,
        Family::RedHat => imgsan::rules::Base::Rhel,
    };
    rs.templates.get(base, name).unwrap().to_vec()
}

#[test]
fn ubuntu_1804_default_rules() {
    default_rules_leave_a_clean_guest(Distro::Ubuntu1804, |_| {});
}

#[test]
fn ubuntu_2204_default_rules_with_a_separate_boot() {
    default_rules_leave_a_clean_guest(Distro::Ubuntu2204, |o| o.separate_boot = true);
}

#[test]
fn ubuntu_2404_default_rules() {
    default_rules_leave_a_clean_guest(Distro::Ubuntu2404, |_| {});
}

#[test]
fn debian_12_default_rules() {
    default_rules_leave_a_clean_guest(Distro::Debian12, |_| {});
}

#[test]
fn centos_7_default_rules() {
    default_rules_leave_a_clean_guest(Distro::CentOS7, |_| {});
}

#[test]
fn rocky_9_default_rules() {
    default_rules_leave_a_clean_guest(Distro::Rocky9, |o| o.separate_boot = true);
}

// ---------------------------------------------------------------------------------
// ssh host keys: regenerated at first boot, exactly one way
// ---------------------------------------------------------------------------------

/// Writes guest files (content and mode) under a host root, for host tools.
fn export(trees: &[Option<Tree>], l: &Layout, paths: &[&str], root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in paths {
        let n = ns(trees, l);
        let pos = n
            .resolve(p.as_bytes(), true)
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let t = n.tree(pos.vol);
        let host = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        fs::write(&host, content(t, pos.node)).unwrap();
        let perm = u32::from(t.node(pos.node).perm);
        fs::set_permissions(&host, fs::Permissions::from_mode(perm)).unwrap();
    }
}

/// `systemd-analyze verify` on the units, offline in a root holding the exported
/// guest files and the host's targets and slices. Returns its complaints.
fn systemd_verify(root: &std::path::Path, units: &[&str]) -> String {
    let lib = root.join("usr/lib/systemd/system");
    fs::create_dir_all(&lib).unwrap();
    for e in fs::read_dir("/usr/lib/systemd/system").expect("the host's systemd units") {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if (n.ends_with(".target") || n.ends_with(".slice")) && e.file_type().unwrap().is_file() {
            let dst = lib.join(&n);
            if !dst.exists() {
                fs::copy(e.path(), dst).unwrap();
            }
        }
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .expect("systemd-analyze (systemd) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {text}"
    );
    text
}

struct SshCase {
    distro: Distro,
    cloud_init: bool,
    keygen_unit: bool,
    /// Remove cloud-init's ssh module from cloud.cfg before reading the guest.
    no_ssh_module: bool,
    want: Regeneration,
    /// The daemon's unit that gets the drop-in, when one is added.
    unit: &'static str,
}

#[test]
fn ssh_host_keys_are_regenerated_exactly_one_way() {
    let cases = [
        // Debian and Ubuntu without cloud-init: nothing else creates keys.
        SshCase {
            distro: Distro::Debian12,
            cloud_init: false,
            keygen_unit: false,
            no_ssh_module: false,
            want: Regeneration::AddedUnit,
            unit: "ssh.service",
        },
        SshCase {
            distro: Distro::Ubuntu1804,
            cloud_init: false,
            keygen_unit: false,
            no_ssh_module: false,
            want: Regeneration::AddedUnit,
            unit: "ssh.service",
        },
        SshCase {
            distro: Distro::Ubuntu2404,
            cloud_init: true,
            keygen_unit: false,
            no_ssh_module: false,
            want: Regeneration::CloudInit,
            unit: "ssh.service",
        },
        // cloud-init installed but its ssh module not configured: it will not help.
        SshCase {
            distro: Distro::Ubuntu2204,
            cloud_init: true,
            keygen_unit: false,
            no_ssh_module: true,
            want: Regeneration::AddedUnit,
            unit: "ssh.service",
        },
        // The RHEL family's sshd-keygen units.
        SshCase {
            distro: Distro::CentOS7,
            cloud_init: false,
            keygen_unit: true,
            no_ssh_module: false,
            want: Regeneration::SshdKeygen,
            unit: "sshd.service",
        },
        SshCase {
            distro: Distro::Rocky9,
            cloud_init: false,
            keygen_unit: true,
            no_ssh_module: false,
            want: Regeneration::SshdKeygen,
            unit: "sshd.service",
        },
        SshCase {
            distro: Distro::Rocky9,
            cloud_init: true,
            keygen_unit: true,
            no_ssh_module: false,
            want: Regeneration::CloudInit,
            unit: "sshd.service",
        },
        // EL9: sshd-keygen stands down when cloud-init runs, and this cloud-init
        // will not create keys.
        SshCase {
            distro: Distro::Rocky9,
            cloud_init: true,
            keygen_unit: true,
            no_ssh_module: true,
            want: Regeneration::AddedUnit,
            unit: "sshd.service",
        },
        SshCase {
            distro: Distro::CentOS7,
            cloud_init: false,
            keygen_unit: false,
            no_ssh_module: false,
            want: Regeneration::AddedUnit,
            unit: "sshd.service",
        },
    ];
    for c in cases {
        let mut o = GuestOptions::new(c.distro);
        o.cloud_init = c.cloud_init;
        o.sshd_keygen_unit = c.keygen_unit;
        let strip = c.no_ssh_module;
        let mut b = build_with(&o, |g, _| {
            if strip {
                let p = g.host_path("/etc/cloud/cloud.cfg");
                let text = fs::read_to_string(&p).unwrap();
                let cut: String = text
                    .lines()
                    .filter(|l| l.trim() != "- ssh")
                    .map(|l| format!("{l}\n"))
                    .collect();
                assert_ne!(cut, text);
                fs::write(&p, cut).unwrap();
            }
            Vec::new()
        });
        let name = format!(
            "{} cloud-init={} keygen={} ssh-module={}",
            c.distro.name(),
            c.cloud_init,
            c.keygen_unit,
            !strip
        );
        let (l0, _) = layout(&b, &RuleSet::embedded().unwrap());
        let etc_label = selinux(&b.trees, &l0, "/etc/systemd/system");
        let (l, report) = run(&mut b, &Options::default(), None);
        let trees = &b.trees;
        let r = report.rule("ssh-host-keys").unwrap();
        let ssh = r.ssh.as_ref().unwrap();
        assert_eq!(ssh.regenerated_by, c.want, "{name}: {r:#?}");
        assert_eq!(ssh.unit.as_deref(), Some(c.unit), "{name}");
        assert_eq!(r.files_deleted, 6, "{name}: three key pairs");
        let unit = "/etc/systemd/system/imgsan-ssh-keygen.service";
        let drop_in = format!("/etc/systemd/system/{}.d/imgsan-ssh-keygen.conf", c.unit);
        let added = c.want == Regeneration::AddedUnit;
        assert_eq!(exists(trees, &l, unit), added, "{name}");
        assert_eq!(exists(trees, &l, &drop_in), added, "{name}");
        if !added {
            assert!(report.added_files.is_empty(), "{name}");
            continue;
        }
        assert_eq!(
            report.added_files,
            [unit.to_string(), drop_in.clone()],
            "{name}"
        );
        // Root-owned 0644 files in a 0755 directory, labelled like their directory.
        let n = ns(trees, &l);
        for p in [unit, drop_in.as_str()] {
            let pos = n.resolve(p.as_bytes(), false).unwrap();
            let node = n.node(pos);
            assert_eq!(
                (node.perm, node.uid, node.gid),
                (0o644, 0, 0),
                "{name}: {p}"
            );
        }
        let d = n
            .resolve(
                format!("/etc/systemd/system/{}.d", c.unit).as_bytes(),
                false,
            )
            .unwrap();
        assert_eq!((n.node(d).perm, n.node(d).uid), (0o755, 0), "{name}");
        drop(n);
        assert_eq!(selinux(trees, &l, unit), etc_label, "{name}");
        let text = String::from_utf8(read(trees, &l, unit).unwrap()).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/ssh-keygen -A"),
            "{name}: {text}"
        );
        assert!(
            text.contains(&format!("Before={}", c.unit)),
            "{name}: {text}"
        );
        // systemd reads the daemon's unit, the drop-in and the new unit without a
        // complaint.
        let root = tempfile::tempdir().unwrap();
        let daemon = match c.distro.family() {
            Family::Debian if c.distro == Distro::Ubuntu1804 => "/lib/systemd/system/ssh.service",
            Family::Debian => "/usr/lib/systemd/system/ssh.service",
            Family::RedHat => "/usr/lib/systemd/system/sshd.service",
        };
        export(
            trees,
            &l,
            &[
                daemon,
                unit,
                &drop_in,
                "/usr/bin/ssh-keygen",
                "/usr/sbin/sshd",
            ],
            root.path(),
        );
        if daemon.starts_with("/lib/") {
            // systemd looks in /usr/lib; the guest's /lib is a plain directory there.
            let dst = root.path().join("usr/lib/systemd/system/ssh.service");
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(root.path().join("lib/systemd/system/ssh.service"), dst).unwrap();
        }
        // The fixture's daemon unit names programs the fixture does not ship
        // (/bin/kill): stand-ins, so systemd judges the units, not the fixture.
        let daemon_text =
            fs::read_to_string(root.path().join(daemon.trim_start_matches('/'))).unwrap();
        for line in daemon_text.lines().filter(|l| l.starts_with("Exec")) {
            let prog = line
                .split_once('=')
                .unwrap()
                .1
                .split_whitespace()
                .next()
                .unwrap();
            let prog = prog.trim_start_matches(['-', '@', ':', '+', '!']);
            let host = root.path().join(prog.trim_start_matches('/'));
            if !host.exists() {
                use std::os::unix::fs::PermissionsExt;
                fs::create_dir_all(host.parent().unwrap()).unwrap();
                fs::write(&host, "#!/bin/sh\n").unwrap();
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let complaints = systemd_verify(root.path(), &[c.unit, "imgsan-ssh-keygen.service"]);
        let ours: Vec<&str> = complaints
            .lines()
            .filter(|l| l.contains("imgsan"))
            .collect();
        assert!(ours.is_empty(), "{name}: systemd complains: {complaints}");
    }
}

// ---------------------------------------------------------------------------------
// The request file
// ---------------------------------------------------------------------------------

#[test]
fn request_exclusions_become_deletions_and_exceptions_skip_rules() {
    let mut b = build(&GuestOptions::new(Distro::Ubuntu2204));
    let rs = RuleSet::embedded().unwrap();
    let req = rs
        .parse_request(
            "request.yaml",
            "version: 1\nkind: request\nname: Lab-Image\n\
             exceptions:\n  - rule: hosts\n    reason: the lab mirror is reached by name\n\
             \x20 - rule: accounts\n    reason: the workshop accounts stay\n\
             exclude:\n  - /opt/app/data/**\n  - /var/lib/app/sparse.img\n  - /\n",
        )
        .unwrap();
    let (l0, _) = layout(&b, &rs);
    let hosts = digest(&b.trees, &l0, "/etc/hosts");
    let passwd = digest(&b.trees, &l0, "/etc/passwd");
    let shadow_backup = digest(&b.trees, &l0, "/etc/shadow-");
    let tagged = fs::metadata(b.g.host_path("/opt/app/data/tagged.txt"))
        .unwrap()
        .len();
    let (l, report) = run(&mut b, &Options::default(), Some(&req));
    let trees = &b.trees;

    // Exceptions: the rules did not run, the files are untouched, the report says why.
    assert_eq!(digest(trees, &l, "/etc/hosts"), hosts);
    assert_eq!(digest(trees, &l, "/etc/passwd"), passwd);
    assert_eq!(digest(trees, &l, "/etc/shadow-"), shadow_backup);
    let skipped: Vec<(&str, &str)> = report
        .skipped_by_exception
        .iter()
        .map(|s| (s.rule.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("accounts", "the workshop accounts stay"),
            ("hosts", "the lab mirror is reached by name")
        ]
    );
    let h = report.rule("hosts").unwrap();
    assert_eq!(h.status, Status::Excepted);
    assert_eq!(
        h.reason.as_deref(),
        Some("the lab mirror is reached by name")
    );
    assert!(!sanitize::will_run(
        "hosts",
        &Context::new(
            &rs,
            Some(imgsan::rules::Base::Debian),
            Some(&req),
            &Options::default()
        )
    ));
    // The other rules ran.
    assert_eq!(report.rule("host-conf").unwrap().status, Status::Applied);

    // Exclusions: deleted; the directory named by the prefix stays; "/" is refused.
    let ex = report.rule(sanitize::REQUEST_EXCLUDE).unwrap();
    assert_eq!(ex.status, Status::Applied);
    assert!(!exists(trees, &l, "/opt/app/data/tagged.txt"));
    assert!(!exists(trees, &l, "/opt/app/data/tail-hole.bin"));
    assert!(!exists(trees, &l, "/var/lib/app/sparse.img"));
    assert!(exists(trees, &l, "/opt/app/data"));
    assert!(
        exists(trees, &l, "/opt/app/bin/app"),
        "the rest of /opt stays"
    );
    assert_eq!(
        ex.paths,
        [
            "/opt/app/data/tagged.txt",
            "/opt/app/data/tail-hole.bin",
            "/var/lib/app/sparse.img"
        ]
    );
    assert!(
        ex.notes.iter().any(|n| n.starts_with("/: refused")),
        "{:?}",
        ex.notes
    );
    // Bytes are data, not sizes: sparse.img holds 2 x 64 KiB in 8 MiB, tail-hole.bin
    // 8 KiB in 3 MiB.
    assert_eq!(ex.bytes_freed, 2 * 65536 + 8192 + tagged);
    assert_eq!(ex.files_deleted, 3);
}

// ---------------------------------------------------------------------------------
// Switches
// ---------------------------------------------------------------------------------

#[test]
fn disabled_rules_and_the_hygiene_switch_leave_their_files() {
    let o = GuestOptions::new(Distro::Ubuntu2204);
    let rs = RuleSet::embedded().unwrap();

    // --disable shell-history --disable var-log, and `enabled: false` for mnt.
    let mut b = build(&o);
    let (l0, _) = layout(&b, &rs);
    let syslog = digest(&b.trees, &l0, "/var/log/syslog");
    let mut rules = rs.clone();
    assert!(rules.sanitize.set_enabled("mnt", false));
    let opts = Options {
        disabled: ["shell-history", "var-log"].map(String::from).into(),
        ..Options::default()
    };
    assert!(opts.unknown_rules(&rules.sanitize).is_empty());
    let (l, report) = run_rules(&mut b, &rules, &opts, None);
    let trees = &b.trees;
    assert_eq!(
        report.rule("shell-history").unwrap().status,
        Status::DisabledByOption
    );
    assert_eq!(
        report.rule("var-log").unwrap().status,
        Status::DisabledByOption
    );
    assert_eq!(report.rule("mnt").unwrap().status, Status::Disabled);
    assert_eq!(digest(trees, &l, "/var/log/syslog"), syslog);
    assert!(exists(trees, &l, "/srv/www/.bash_history"));
    assert!(exists(trees, &l, "/mnt/data/x"));
    // What those rules would have removed is exactly what is left.
    let markers = all_markers(&b.g);
    let left: BTreeSet<String> = find_markers(trees, &l, &markers)
        .into_iter()
        .filter(|(m, p)| !expected_survivor(&b.g, m, p))
        .map(|(_, p)| p)
        .collect();
    assert!(
        left.contains("/srv/www/.bash_history") && left.contains("/mnt/data/x"),
        "{left:?}"
    );
    for p in &left {
        assert!(
            p.starts_with("/var/log/") || p == "/srv/www/.bash_history" || p == "/mnt/data/x",
            "{p}"
        );
    }
    let unknown = Options {
        disabled: ["no-such-rule".to_string()].into(),
        ..Options::default()
    };
    assert_eq!(unknown.unknown_rules(&rs.sanitize), ["no-such-rule"]);

    // --no-hygiene: machine identity and caches stay, the required rules still run.
    let mut b = build(&o);
    let (l0, _) = layout(&b, &rs);
    let kept = [
        "/etc/machine-id",
        "/var/lib/systemd/random-seed",
        "/var/tmp/x",
        "/etc/udev/rules.d/70-persistent-net.rules",
    ];
    let before: Vec<String> = kept.iter().map(|p| digest(&b.trees, &l0, p)).collect();
    let (l, report) = run(
        &mut b,
        &Options {
            no_hygiene: true,
            ..Options::default()
        },
        None,
    );
    for (p, h) in kept.iter().zip(&before) {
        assert_eq!(&digest(&b.trees, &l, p), h, "{p}");
    }
    for r in &report.rules {
        let want = if r.group == "hygiene" {
            Status::HygieneOff
        } else {
            Status::Applied
        };
        if r.status != Status::NotForBase {
            assert_eq!(r.status, want, "{}", r.id);
        }
    }
    assert!(!exists(&b.trees, &l, "/home/alice"));
}

// ---------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------

#[test]
fn home_on_its_own_volume_and_a_mount_below_mnt_are_emptied_in_place() {
    let o = GuestOptions::new(Distro::Debian12);
    let home_uuid = "3f1c2f8e-6d0b-4c57-9d0a-1b2c3d4e5f60";
    let scratch_uuid = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
    let mut b = build_with(&o, |g, dir| {
        // Move /home's contents to a volume of their own, and add a scratch volume
        // mounted under /mnt holding a secret; fstab mounts both.
        let homevol = dir.join("homevol");
        fs::rename(g.host_path("/home"), &homevol).unwrap();
        fs::create_dir(g.host_path("/home")).unwrap();
        let scratch = dir.join("scratch");
        fs::create_dir(&scratch).unwrap();
        fs::write(
            scratch.join("big.dat"),
            "IMGSAN-SECRET-scratch-volume-0123456789\n",
        )
        .unwrap();
        fs::create_dir(g.host_path("/mnt/scratch")).unwrap();
        let fstab = g.host_path("/etc/fstab");
        let mut text = fs::read_to_string(&fstab).unwrap();
        text.push_str(&format!("UUID={home_uuid}\t/home\text4\tdefaults\t0 2\n"));
        text.push_str(&format!(
            "UUID={scratch_uuid}\t/mnt/scratch\text4\tdefaults\t0 2\n"
        ));
        fs::write(&fstab, text).unwrap();
        let vol = |n: u32, uuid: &str| VolumeId {
            partition: Some(n),
            fs_type: Some("ext4".into()),
            uuid: Some(uuid.into()),
            ..VolumeId::default()
        };
        vec![
            (homevol, vol(20, home_uuid)),
            (scratch, vol(21, scratch_uuid)),
        ]
    });
    let home_vol = b.trees.len() - 2;
    let scratch_vol = b.trees.len() - 1;
    let home_root_before = b.trees[home_vol].as_ref().unwrap().node(0).clone();
    let (l, report) = run(&mut b, &Options::default(), None);
    assert_eq!(l.mounted_at(b"/home"), Some(home_vol));
    assert_eq!(l.mounted_at(b"/mnt/scratch"), Some(scratch_vol));
    let trees = &b.trees;
    // The home volume's root is empty and keeps its metadata.
    let ht = trees[home_vol].as_ref().unwrap();
    assert!(ht.entries(ht.root).is_empty());
    let root_after = ht.node(ht.root);
    assert_eq!(
        (
            root_after.perm,
            root_after.uid,
            root_after.gid,
            root_after.mtime,
            &root_after.xattrs
        ),
        (
            home_root_before.perm,
            home_root_before.uid,
            home_root_before.gid,
            home_root_before.mtime,
            &home_root_before.xattrs
        )
    );
    // /mnt is empty but for the mount point, whose volume is empty.
    let n = ns(trees, &l);
    let mnt: Vec<String> = n
        .list(b"/mnt")
        .unwrap()
        .into_iter()
        .map(|(x, _)| String::from_utf8_lossy(&x).into_owned())
        .collect();
    assert_eq!(mnt, ["scratch"]);
    let st = trees[scratch_vol].as_ref().unwrap();
    assert!(st.entries(st.root).is_empty());
    drop(n);
    let home = report.rule("home").unwrap();
    assert!(home.paths.contains(&"/home/alice".to_string()), "{home:?}");
    assert!(report
        .rule("mnt")
        .unwrap()
        .paths
        .contains(&"/mnt/scratch/big.dat".to_string()));
    // Both mounts resolve, so fstab keeps them.
    let fstab = String::from_utf8(read(trees, &l, "/etc/fstab").unwrap()).unwrap();
    assert!(fstab.contains(home_uuid) && fstab.contains(scratch_uuid));
    assert!(find_markers(
        trees,
        &l,
        &["IMGSAN-SECRET-scratch-volume-0123456789".into()]
    )
    .is_empty());
}

// ---------------------------------------------------------------------------------
// Counts, against std::fs
// ---------------------------------------------------------------------------------

#[test]
fn counts_follow_inodes_as_the_host_sees_them() {
    use std::os::unix::fs::MetadataExt;
    let mut b = build(&GuestOptions::new(Distro::Ubuntu2204));
    // Under /home on the host: every inode once, directories, and data bytes (the
    // files there are dense, so data bytes are sizes).
    let mut inodes = BTreeMap::new();
    let mut dirs = 0u64;
    let mut names = 0u64;
    let mut stack = vec![b.g.host_path("/home")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                dirs += 1;
                stack.push(e.path());
            } else {
                names += 1;
                let bytes = if md.is_file() { md.len() } else { 0 };
                inodes.insert((md.dev(), md.ino()), bytes);
            }
        }
    }
    assert!(
        names > inodes.len() as u64,
        "the fixture has hard links under /home"
    );
    let (_, report) = run(&mut b, &Options::default(), None);
    let home = report.rule("home").unwrap();
    assert_eq!(home.files_deleted, inodes.len() as u64);
    assert_eq!(home.dirs_deleted, dirs);
    assert_eq!(home.bytes_freed, inodes.values().sum::<u64>());
    assert_eq!(
        report.totals.files_deleted,
        report.rules.iter().map(|r| r.files_deleted).sum::<u64>()
    );
}

// ---------------------------------------------------------------------------------
// The report, read by an independent JSON Schema validator
// ---------------------------------------------------------------------------------

const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
doc = json.load(open(sys.argv[2]))
errors = sorted(e.message + " at " + "/".join(map(str, e.absolute_path))
                for e in jsonschema.Draft202012Validator(schema).iter_errors(doc))
print(json.dumps(errors))
"#;

fn schema_errors(doc: &serde_json::Value) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("report.json");
    fs::write(&p, doc.to_string()).unwrap();
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/report.schema.json");
    let out = Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .arg(&schema)
        .arg(&p)
        .output()
        .expect("python3 with jsonschema (.ci/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_sanitize_report_follows_the_json_schema() {
    use imgsan::policy::{ImageInfo, Mode, Report};
    let mut o = GuestOptions::with_every_problem(Distro::Debian12);
    o.cloud_init = false;
    let mut b = build(&o);
    let rs = RuleSet::embedded().unwrap();
    let req = rs
        .parse_request(
            "r.yaml",
            "version: 1\nkind: request\nexceptions:\n  - rule: ldap-conf\n    reason: site LDAP\nexclude: [/srv/**]\n",
        )
        .unwrap();
    let (_, sr) = run(&mut b, &Options::default(), Some(&req));
    // Every optional part is there: transform details, an exception, an added unit.
    assert!(sr.rule("accounts").unwrap().accounts.is_some());
    assert!(sr.rule("fstab").unwrap().fstab.is_some());
    assert_eq!(
        sr.rule("ssh-host-keys")
            .unwrap()
            .ssh
            .as_ref()
            .unwrap()
            .regenerated_by,
        Regeneration::AddedUnit
    );
    assert_eq!(sr.skipped_by_exception.len(), 1);
    let mut r = Report::new(
        Mode::Sanitize,
        imgsan::rules::Date::parse("2025-01-01").unwrap(),
        ImageInfo::default(),
        [],
        Vec::new(),
        serde_json::Value::Null,
    );
    sr.attach(&mut r);
    let doc = serde_json::to_value(&r).unwrap();
    assert_eq!(schema_errors(&doc), Vec::<String>::new());
    // It reads back as the same report.
    let back: SanitizeReport = serde_json::from_value(doc["sanitize"].clone()).unwrap();
    assert_eq!(back, sr);
    // The schema is not vacuous: a bad status, a negative count and an unknown key.
    let mut bad = doc.clone();
    bad["sanitize"]["rules"][0]["status"] = "maybe".into();
    bad["sanitize"]["totals"]["bytes_freed"] = (-1).into();
    bad["sanitize"]["rules"][1]["surprise"] = true.into();
    assert_eq!(schema_errors(&bad).len(), 3, "{:?}", schema_errors(&bad));
}
