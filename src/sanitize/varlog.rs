//! The var-log transform: under each rule path (/var/log), rotated logs are
//! deleted (`*.1`, `*.gz` and other compressed files, `*.old`, `-YYYYMMDD`),
//! every other regular file is truncated in place (owner, mode and SELinux
//! label kept, so daemons can still write: wtmp, btmp and lastlog included),
//! and the systemd journal directories (`<path>/journal` and
//! /run/log/journal) are emptied, keeping the directories with their mode and
//! ACLs. Directories, symlinks and special files are left alone.

use std::collections::HashSet;

use crate::error::Result;
use crate::guest::Pos;
use crate::tree::Kind;

use super::resolve::{join, show, symlink_on, Target};
use super::{Run, Spec};

const COMPRESSED: [&[u8]; 8] = [
    b".gz", b".xz", b".bz2", b".zst", b".lz4", b".lzma", b".Z", b".zip",
];

/// Whether a file name is a rotated log's: compressed, `.old`, `~`, a numeric
/// suffix (`syslog.1`, `dmesg.0`), or a date suffix (`messages-20231231`,
/// logrotate's `dateext`, also with an hour).
pub fn is_rotated(name: &[u8]) -> bool {
    if COMPRESSED
        .iter()
        .any(|e| name.ends_with(e) && name.len() > e.len())
    {
        return true;
    }
    if name.ends_with(b".old") || name.ends_with(b"~") {
        return true;
    }
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if let Some(i) = name.iter().rposition(|&b| b == b'.') {
        let tail = &name[i + 1..];
        if i > 0 && tail.len() <= 4 && digits(tail) {
            return true;
        }
    }
    if let Some(i) = name.iter().rposition(|&b| b == b'-') {
        let tail = &name[i + 1..];
        if i > 0
            && (tail.len() == 8 || tail.len() == 10)
            && digits(tail)
            && (tail.starts_with(b"19") || tail.starts_with(b"20"))
        {
            return true;
        }
    }
    false
}

#[derive(Default)]
struct Plan {
    /// Journal directories to empty: (canonical path, position).
    journals: Vec<(Vec<u8>, Pos)>,
    delete: Vec<Target>,
    truncate: Vec<Target>,
    /// Rule paths that lead through a symlink, left alone.
    warnings: Vec<String>,
}

fn collect(r: &Run<'_, '_>, spec: &Spec<'_>) -> Result<Plan> {
    let ns = r.ns()?;
    let mut plan = Plan::default();
    let mut seen = HashSet::new();
    let mut roots = Vec::new();
    for g in &spec.paths {
        let p = g.as_str().as_bytes();
        if let Some((link, to)) = symlink_on(&ns, p) {
            if r.within(&link) {
                plan.warnings.push(format!(
                    "{}: not followed: {} is a symlink to {}; its files are kept as they are (rules never follow symlinks)",
                    g.as_str(),
                    show(&link),
                    show(&to)
                ));
            }
            continue;
        }
        if let Ok((pos, canon)) = ns.resolve_with_path(p, true) {
            if ns.node(pos).is_dir() && r.within(&canon) {
                roots.push((canon, pos));
            }
        }
    }
    for (root, pos) in roots {
        let journal = join(&root, b"journal");
        let mut stack = vec![(root, pos)];
        while let Some((canon, dir)) = stack.pop() {
            if !seen.insert(dir) {
                continue;
            }
            let tree = ns.tree(dir.vol);
            for e in tree.entries(dir.node) {
                let name = tree.name(e.name);
                let child = join(&canon, name);
                let node = tree.node(e.node);
                match &node.kind {
                    Kind::Dir(_) => {
                        let pos = match r.layout.mounted_at(&child) {
                            Some(v) => Pos {
                                vol: v,
                                node: ns.tree(v).root,
                            },
                            None => Pos {
                                vol: dir.vol,
                                node: e.node,
                            },
                        };
                        if child == journal {
                            plan.journals.push((child, pos));
                        } else {
                            stack.push((child, pos));
                        }
                    }
                    Kind::File(_) => {
                        let t = Target {
                            path: child.clone(),
                            canonical: child,
                            vol: dir.vol,
                            parent: dir.node,
                            name: name.to_vec(),
                            node: e.node,
                            mounted: None,
                        };
                        if is_rotated(name) {
                            plan.delete.push(t);
                        } else {
                            plan.truncate.push(t);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let run_journal = b"/run/log/journal";
    if let (Ok((pos, canon)), None) = (
        ns.resolve_with_path(run_journal, true),
        symlink_on(&ns, run_journal),
    ) {
        if ns.node(pos).is_dir()
            && r.within(&canon)
            && !plan.journals.iter().any(|(_, p)| *p == pos)
        {
            plan.journals.push((canon, pos));
        }
    }
    plan.delete.sort_by(|a, b| a.path.cmp(&b.path));
    plan.truncate.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(plan)
}

pub(super) fn run(r: &mut Run<'_, '_>, spec: &Spec<'_>) -> Result<()> {
    let mut plan = collect(r, spec)?;
    for w in std::mem::take(&mut plan.warnings) {
        r.note(w.clone());
        r.warn(w);
    }
    for (canon, pos) in &plan.journals {
        r.empty_keeping_mounts(pos.vol, pos.node, canon)?;
    }
    for t in &plan.delete {
        if r.live(t) {
            r.delete_target(t)?;
        }
    }
    for t in &plan.truncate {
        if r.live(t) && r.ed.truncate(t.vol, t.node, &mut r.tally)? {
            r.changed(&t.path);
        }
    }
    if plan.journals.is_empty() {
        r.note("no systemd journal directory".into());
    } else {
        let dirs: Vec<String> = plan.journals.iter().map(|(c, _)| show(c)).collect();
        r.note(format!("emptied the journal: {}", dirs.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        for n in [
            "syslog.1",
            "syslog.2.gz",
            "auth.log.2.gz",
            "messages-20231231",
            "secure-2023123112",
            "dpkg.log.1",
            "wtmp.1",
            "Xorg.0.log.old",
            "eipp.log.xz",
            "dmesg.0",
            "cron-20240101.gz",
            "system.journal~",
        ] {
            assert!(is_rotated(n.as_bytes()), "{n}");
        }
        for n in [
            "syslog",
            "auth.log",
            "wtmp",
            "btmp",
            "lastlog",
            "Xorg.0.log",
            "cloud-init-output.log",
            "php7.4-fpm.log",
            "boot.log",
            "sa07",
            ".gz",
            "x-1",
            "build-12345678",
        ] {
            assert!(!is_rotated(n.as_bytes()), "{n}");
        }
    }
}
