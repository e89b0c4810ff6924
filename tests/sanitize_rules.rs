//! The sanitize rules applied to guests that look like used instances (built by
//! tests/common/guest.rs on the host, read into trees by tests/common/hosttree.rs,
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
#[path = "common/hosttree.rs"]
mod hosttree;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;

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
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("guest");
    fs::create_dir(&gdir).unwrap();
    let g = guest::build(&gdir, opts);
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
                Some(hosttree::read(&g.root, &data, &skip)),
                "ext4",
                g.ids.root_uuid.clone(),
                g.ids.root_label.clone(),
            ),
            Role::Boot => (
                Some(hosttree::read(g.boot.as_ref().unwrap(), &data, &[])),
                "ext4",
                g.ids.boot_uuid.clone(),
                g.ids.boot_label.clone(),
            ),
            Role::Efi => (
                Some(hosttree::read(g.efi.as_ref().unwrap(), &data, &[])),
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
        });
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
    let rs = RuleSet::embedded().unwrap();
    let (l, base) = layout(b, &rs);
    let cx = Context::new(&rs, base, request, options);
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
