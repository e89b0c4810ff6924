//! Human-readable text of the [`Facts`], for `imgsan inspect`. Guest strings are
//! untrusted: control characters are escaped before they reach a terminal.

use std::fmt::Write as _;

use crate::guest::Resolution;
use crate::units::escape_terminal as esc;

use super::facts::{text as lossy, Facts};

pub use crate::units::human;

fn date_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    match crate::rules::Date::from_days_since_epoch(days) {
        Some(d) => format!(
            "{d} {:02}:{:02}:{:02} UTC",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        ),
        None => format!("{secs} s since the epoch"),
    }
}

/// Renders the facts as sections of aligned text.
pub fn render(f: &Facts) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "\nfilesystems:");
    for v in &f.volumes {
        let state = match (&v.state, &v.error) {
            (_, Some(e)) => format!("unreadable: {}", esc(e)),
            (Some(s), None) if s.captured_live() => {
                if s.replayed {
                    format!(
                        "captured live: journal replayed ({} transactions, {} blocks)",
                        s.transactions_replayed, s.blocks_replayed
                    )
                } else {
                    format!("captured live ({})", s.superblock_state)
                }
            }
            (Some(s), None) => format!("{}, cleanly unmounted", s.superblock_state),
            (None, None) if v.hibernated => "holds a hibernation image".into(),
            (None, None) => "not read".into(),
        };
        let _ = writeln!(
            w,
            "  {:<16} {:<10} {:<12} {state}",
            v.name,
            v.fs_type(),
            v.mount_point
                .as_deref()
                .map(esc)
                .unwrap_or_else(|| "-".into()),
        );
    }
    let Some(root) = f.root_volume else {
        let _ = writeln!(
            w,
            "\nguest: no volume holds an OS (no /etc/os-release, /usr/lib/os-release or /etc/redhat-release)"
        );
        warnings(w, f);
        return o;
    };
    let _ = writeln!(
        w,
        "\nguest root: {}",
        f.volumes.get(root).map(|v| v.name.as_str()).unwrap_or("?")
    );
    match &f.os {
        Some(os) => {
            let _ = writeln!(
                w,
                "os:            {} (id {}, version {}, family {}, from {})",
                esc(os.pretty_name.as_deref().unwrap_or(&os.id)),
                esc(&os.id),
                os.version
                    .as_ref()
                    .map(|v| esc(&v.text))
                    .unwrap_or_else(|| "unknown".into()),
                serde_json::to_value(os.family)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                esc(&os.source)
            );
        }
        None => {
            let _ = writeln!(w, "os:            unknown");
        }
    }

    let _ = writeln!(w, "\nfstab:");
    if !f.fstab_present {
        let _ = writeln!(w, "  (no /etc/fstab)");
    }
    for m in &f.mounts {
        let e = &m.mount.entry;
        let how = match &m.mount.resolution {
            Resolution::Volume { volume } => format!(
                "-> {}{}",
                f.volumes
                    .get(*volume)
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
                if m.mount.mounted { ", mounted" } else { "" }
            ),
            Resolution::Missing { reason } => format!("MISSING: {}", esc(reason)),
            Resolution::Unresolvable { reason } => match m.swap_file_present {
                Some(true) => "swap file present".into(),
                Some(false) => "swap file MISSING".into(),
                None => format!("unresolved: {}", esc(reason)),
            },
            Resolution::NotAVolume => format!("{:?} mount", e.class).to_lowercase(),
        };
        let _ = writeln!(
            w,
            "  {:>3}: {:<40} {:<14} {:<8} {how}",
            e.line,
            esc(&e.spec),
            esc(&e.mount_point),
            esc(&e.fs_type)
        );
    }

    if let Some(u) = &f.users {
        let humans: Vec<String> = u
            .humans()
            .map(|a| format!("{} ({})", esc(&a.name), a.uid))
            .collect();
        let _ = writeln!(
            w,
            "\nusers:         {} accounts, {} groups, shadow {}; human ({}..{}): {}",
            u.accounts.len(),
            u.groups.len(),
            if u.shadow_present {
                "present"
            } else {
                "absent"
            },
            u.ranges.uid_min,
            u.ranges.uid_max,
            if humans.is_empty() {
                "none".into()
            } else {
                humans.join(", ")
            }
        );
    }
    if !f.homes.is_empty() {
        let _ = writeln!(w, "homes:");
        for h in &f.homes {
            let _ = writeln!(
                w,
                "  {:<30} {:>10} {:>7} files  {}",
                esc(&h.path),
                human(h.bytes),
                h.files,
                match (&h.owner, h.exists) {
                    (_, false) => "(missing)".to_string(),
                    (Some(o), true) => esc(o),
                    (None, true) => "(no account)".into(),
                }
            );
        }
    }

    match &f.packages {
        Some(p) => {
            let _ = writeln!(
                w,
                "\npackages:      {} installed ({:?}, {})",
                p.installed,
                p.manager,
                esc(&p.database)
            );
        }
        None => {
            let _ = writeln!(w, "\npackages:      no dpkg or rpm database");
        }
    }
    let c = &f.cloud;
    let comp = |x: &Option<crate::inspect::software::Component>| {
        x.as_ref()
            .map(|c| esc(&super::facts::component_text(c)))
            .unwrap_or_else(|| "not installed".into())
    };
    let _ = writeln!(w, "cloud-init:    {}", comp(&c.packages.cloud_init));
    let _ = writeln!(
        w,
        "sshd:          {}; binary {}; sshd_config {}",
        comp(&c.packages.openssh_server),
        c.sshd_binary.as_deref().unwrap_or("missing"),
        match (c.sshd_config_present, c.sshd_config_readable) {
            (true, true) => "readable",
            (true, false) => "unreadable",
            _ => "missing",
        }
    );
    let py: Vec<String> = c.packages.python.iter().map(|p| esc(&p.package)).collect();
    let _ = writeln!(
        w,
        "python:        packages [{}]; interpreters [{}]",
        py.join(", "),
        c.python_binaries.join(", ")
    );
    let k: Vec<String> = c
        .packages
        .kernels
        .iter()
        .map(|p| esc(&super::facts::component_text(p)))
        .collect();
    let _ = writeln!(w, "kernels:       {}", k.join(", "));
    if let Some(u) = &c.last_update {
        let _ = writeln!(
            w,
            "last update:   {} ({})",
            date_time(u.time),
            esc(&u.evidence)
        );
    }

    if !f.outside_packages.is_empty() {
        let _ = writeln!(w, "\nsoftware outside packages:");
        for i in &f.outside_packages {
            let _ = writeln!(
                w,
                "  {:<40} {:>10} {:>7} files",
                esc(&i.path),
                human(i.entry.size),
                i.entry.files
            );
        }
    }
    if !f.home_software.is_empty() {
        let _ = writeln!(w, "\nsoftware under /home:");
        for h in &f.home_software {
            let _ = writeln!(
                w,
                "  {:<40} {:>10}  {}",
                esc(&h.path),
                human(h.bytes),
                h.evidence.join(", ")
            );
        }
    }
    let ps = &f.post_scripts;
    if let Some(m) = ps.dir_mode {
        let _ = writeln!(w, "\npost-boot scripts (folder mode {m:04o}):");
        for s in &ps.scripts {
            let _ = writeln!(
                w,
                "  {:<50} {:04o}  {}",
                esc(&s.path),
                s.mode,
                s.first_line
                    .as_deref()
                    .map(|l| esc(&lossy(l)))
                    .unwrap_or_else(|| format!("({:?})", s.kind))
            );
        }
    }
    if !f.daemon_configs.is_empty() {
        let _ = writeln!(w, "\ndaemon configurations:");
        for d in &f.daemon_configs {
            let _ = writeln!(w, "  {:<50} {}", esc(&d.path), d.daemon);
        }
    }
    let d = &f.denylist;
    if !d.matches.is_empty() || !d.licence_files.is_empty() {
        let _ = writeln!(w, "\ndenylist matches:");
        for m in &d.matches {
            let mut what: Vec<String> = m
                .packages
                .iter()
                .map(|p| format!("package {}", esc(p)))
                .collect();
            what.extend(m.paths.iter().take(3).map(|p| esc(p)));
            if m.path_count > 3 {
                what.push(format!("{} paths in all", m.path_count));
            }
            what.extend(
                m.known_binaries
                    .iter()
                    .map(|p| format!("{} (hash)", esc(p))),
            );
            let _ = writeln!(
                w,
                "  {} ({}): {}",
                m.entry,
                esc(&m.product),
                what.join("; ")
            );
        }
        for l in &d.licence_files {
            let _ = writeln!(
                w,
                "  licence file {} ({}, vendor {})",
                esc(&l.path),
                l.format,
                esc(&l.vendors.join(", "))
            );
        }
    }
    let _ = writeln!(
        w,
        "\nwalked:        {} files ({}), {} directories, {} symlinks",
        f.walk.files,
        human(f.walk.bytes),
        f.walk.directories,
        f.walk.symlinks
    );
    warnings(w, f);
    o
}

fn warnings(w: &mut String, f: &Facts) {
    for x in &f.warnings {
        let _ = writeln!(w, "warning: {}", esc(x));
    }
}
