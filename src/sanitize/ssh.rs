//! The ssh-host-keys transform: deletes the host keys (links, not their
//! targets; never sshd_config) so every child instance gets its own, then makes
//! sure something creates new ones at first boot:
//!
//! - cloud-init, when it is installed, not disabled, its init-stage unit is
//!   enabled and its `ssh` module is configured (cc_ssh generates missing host
//!   keys once per instance, and the instance state is gone, so it runs);
//! - else the distribution's generator: the RHEL family's sshd.service pulls in
//!   sshd-keygen.service (EL7) or sshd-keygen.target with sshd-keygen@.service
//!   (EL8 and later), which create missing keys. cloud-init on EL9 ships a
//!   drop-in that stands sshd-keygen down when cloud-init is active; then only
//!   cloud-init counts;
//! - else imgsan adds a small unit that runs `ssh-keygen -A` and a drop-in for
//!   the daemon's unit that pulls it in before the daemon starts. Debian's and
//!   Ubuntu's openssh-server create keys only when the package is configured
//!   (postinst), not at boot, and their unit runs `sshd -t` as its first
//!   ExecStartPre, which fails without host keys; a drop-in's ExecStartPre would
//!   run after it, so the generator is a separate unit ordered before the daemon.

use crate::error::Result;
use crate::guest::Namespace;
use crate::tree::Kind;

use super::report::{Regeneration, SshDetails};
use super::resolve::{join, lookup, show};
use super::{Run, Spec, CONFIG_LIMIT};

/// Where systemd looks for system units, in its order of precedence (with
/// /lib for Debian and Ubuntu releases before the /usr merge).
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The unit imgsan adds, and the drop-in name.
pub const KEYGEN_UNIT: &str = "imgsan-ssh-keygen.service";
pub const DROP_IN: &str = "imgsan-ssh-keygen.conf";

/// A unit as systemd would find it.
enum Unit {
    /// A unit file: its real name (an alias link resolves to its target's
    /// name), canonical path and text.
    File {
        name: String,
        path: String,
        text: String,
    },
    /// Linked to /dev/null.
    Masked { path: String },
}

fn read_text(ns: &Namespace<'_>, path: &[u8]) -> Option<String> {
    ns.read(path, CONFIG_LIMIT)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn exists_file(ns: &Namespace<'_>, path: &str) -> bool {
    ns.resolve(path.as_bytes(), true)
        .is_ok_and(|p| matches!(ns.node(p).kind, Kind::File(_)))
}

fn exists(ns: &Namespace<'_>, path: &str) -> bool {
    ns.resolve(path.as_bytes(), false).is_ok()
}

/// The unit file systemd loads for `name` (a template instance falls back to
/// its template, `a@x.service` to `a@.service`).
fn find_unit(ns: &Namespace<'_>, name: &str) -> Option<Unit> {
    let mut names = vec![name.to_string()];
    if let Some((pre, rest)) = name.split_once('@') {
        if let Some((_, suffix)) = rest.rsplit_once('.') {
            names.push(format!("{pre}@.{suffix}"));
        }
    }
    for n in &names {
        for dir in UNIT_DIRS {
            let path = format!("{dir}/{n}");
            let Ok(pos) = ns.resolve(path.as_bytes(), false) else {
                continue;
            };
            if let Kind::Symlink(to) = &ns.node(pos).kind {
                if to.as_ref() == b"/dev/null" {
                    return Some(Unit::Masked { path });
                }
            }
            let Ok((pos, canon)) = ns.resolve_with_path(path.as_bytes(), true) else {
                continue;
            };
            if !matches!(ns.node(pos).kind, Kind::File(_)) {
                continue;
            }
            let real = canon
                .rsplit(|&b| b == b'/')
                .next()
                .map(show)
                .unwrap_or_else(|| n.clone());
            let text = read_text(ns, &canon)?;
            return Some(Unit::File {
                name: real,
                path: show(&canon),
                text,
            });
        }
    }
    None
}

/// Values of `Key=` lines in a unit's text (all sections), split on spaces.
fn unit_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            (k.trim() == key).then_some(v)
        })
        .flat_map(str::split_whitespace)
        .collect()
}

/// The ssh daemon's unit: `(real name, path)`.
fn ssh_unit(ns: &Namespace<'_>, prefer_ssh: bool) -> Option<(String, String)> {
    let mut found = Vec::new();
    for n in ["ssh.service", "sshd.service"] {
        if let Some(Unit::File { name, path, .. }) = find_unit(ns, n) {
            if !found.iter().any(|(f, _): &(String, String)| *f == name) {
                found.push((name, path));
            }
        }
    }
    let want = if prefer_ssh {
        "ssh.service"
    } else {
        "sshd.service"
    };
    found
        .iter()
        .position(|(n, _)| n == want)
        .map(|i| found.swap_remove(i))
        .or_else(|| found.into_iter().next())
}

/// Whether cloud-init's units are installed and enabled (what its
/// sshd-keygen stand-down drop-in tests), with evidence; or why not.
pub(crate) fn cloud_init_enabled(ns: &Namespace<'_>) -> Result<Vec<String>, String> {
    let mut ev = Vec::new();
    let bin = ["/usr/bin/cloud-init", "/usr/local/bin/cloud-init"]
        .into_iter()
        .find(|p| exists_file(ns, p))
        .ok_or("cloud-init is not installed")?;
    ev.push(bin.to_string());
    if exists(ns, "/etc/cloud/cloud-init.disabled") {
        return Err("cloud-init is disabled by /etc/cloud/cloud-init.disabled".into());
    }
    // The init (network) stage runs cc_ssh: cloud-init.service, renamed
    // cloud-init-network.service in cloud-init 24.3. Older releases hang it on
    // multi-user.target, newer ones on cloud-init.target.
    let mut enabled = None;
    'outer: for wants in [
        "/etc/systemd/system/cloud-init.target.wants",
        "/etc/systemd/system/multi-user.target.wants",
    ] {
        for unit in ["cloud-init.service", "cloud-init-network.service"] {
            let p = format!("{wants}/{unit}");
            if exists(ns, &p) && !matches!(find_unit(ns, unit), Some(Unit::Masked { .. }) | None) {
                enabled = Some(p);
                break 'outer;
            }
        }
    }
    ev.push(enabled.ok_or("cloud-init's init-stage unit is not enabled")?);
    Ok(ev)
}

/// Whether cloud-init will create host keys: enabled, and its configuration
/// lists the `ssh` module without emptying `ssh_genkeytypes`.
fn cloud_init_regenerates(ns: &Namespace<'_>) -> Result<Vec<String>, String> {
    let mut ev = cloud_init_enabled(ns)?;
    let mut files = vec!["/etc/cloud/cloud.cfg".to_string()];
    if let Ok(list) = ns.list(b"/etc/cloud/cloud.cfg.d") {
        let mut names: Vec<String> = list
            .iter()
            .map(|(n, _)| show(n))
            .filter(|n| n.ends_with(".cfg"))
            .collect();
        names.sort();
        files.extend(
            names
                .into_iter()
                .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
        );
    }
    let mut module = None;
    for f in &files {
        let Some(text) = read_text(ns, f.as_bytes()) else {
            continue;
        };
        for line in text.lines() {
            let l = line.split('#').next().unwrap_or("").trim();
            if let Some(item) = l.strip_prefix('-') {
                // `- ssh`, `- cc_ssh`, `- [ssh, always]`, `- "ssh"`
                let item = item.trim().trim_start_matches('[').trim();
                let first = item
                    .split([',', ' ', ']'])
                    .next()
                    .unwrap_or("")
                    .trim_matches(['"', '\'']);
                if first == "ssh" || first == "cc_ssh" {
                    module = Some(f.clone());
                }
            }
            if let Some(v) = l.strip_prefix("ssh_genkeytypes:") {
                if v.trim() == "[]" {
                    return Err(format!("{f} sets ssh_genkeytypes to none"));
                }
            }
        }
    }
    ev.push(module.ok_or("cloud-init's ssh module is not configured")?);
    Ok(ev)
}

/// Whether the daemon's unit pulls in a distribution key generator that will
/// run: sshd-keygen.service (EL7) or sshd-keygen.target / sshd-keygen@.service.
fn distro_keygen(ns: &Namespace<'_>, daemon_text: &str) -> Result<Vec<String>, String> {
    let refs: Vec<&str> = ["Wants", "Requires"]
        .iter()
        .flat_map(|k| unit_values(daemon_text, k))
        .filter(|u| u.starts_with("sshd-keygen"))
        .collect();
    if refs.is_empty() {
        return Err("the ssh daemon's unit pulls in no sshd-keygen unit".into());
    }
    let mut ev = Vec::new();
    for r in refs {
        match find_unit(ns, r) {
            Some(Unit::File { path, text, .. }) => {
                ev.push(path);
                // A target: the instances it wants must exist too.
                for w in unit_values(&text, "Wants") {
                    match find_unit(ns, w) {
                        Some(Unit::File { path, .. }) => {
                            if !ev.contains(&path) {
                                ev.push(path)
                            }
                        }
                        Some(Unit::Masked { path }) => return Err(format!("{path} is masked")),
                        None => return Err(format!("{w} (wanted by {r}) is missing")),
                    }
                }
            }
            Some(Unit::Masked { path }) => return Err(format!("{path} is masked")),
            None => return Err(format!("{r} is missing")),
        }
    }
    // The unit that does the work must have its program.
    let worker = ["sshd-keygen@.service", "sshd-keygen.service"]
        .into_iter()
        .find_map(|n| match find_unit(ns, n) {
            Some(Unit::File { text, .. }) => Some(text),
            _ => None,
        })
        .ok_or("no sshd-keygen service unit")?;
    let prog = unit_values(&worker, "ExecStart")
        .first()
        .map(|p| p.trim_start_matches(['-', '@', ':', '+', '!']).to_string())
        .ok_or("the sshd-keygen unit has no ExecStart")?;
    if !exists_file(ns, &prog) {
        return Err(format!("{prog} (the sshd-keygen program) is missing"));
    }
    ev.push(prog);
    Ok(ev)
}

/// Whether a drop-in stands sshd-keygen down when cloud-init is active (what
/// cloud-init ships on EL9).
fn keygen_stood_down_by_cloud_init(ns: &Namespace<'_>) -> Option<String> {
    for dir in UNIT_DIRS {
        let d = format!("{dir}/sshd-keygen@.service.d");
        let Ok(list) = ns.list(d.as_bytes()) else {
            continue;
        };
        for (name, _) in list {
            let p = format!("{d}/{}", show(&name));
            if p.ends_with(".conf")
                && read_text(ns, p.as_bytes()).is_some_and(|t| t.contains("cloud-init"))
            {
                return Some(p);
            }
        }
    }
    None
}

fn keygen_unit_text(daemon: &str, keygen: &str) -> String {
    format!(
        "# Added by imgsan when this image was made. The image's ssh host keys were\n\
         # removed so that every instance gets its own, and nothing else in the\n\
         # image creates them at boot. `ssh-keygen -A` creates each missing key\n\
         # type and leaves existing keys alone.\n\
         [Unit]\n\
         Description=Create missing SSH host keys (added by imgsan)\n\
         Before={daemon}\n\
         ConditionPathExists={keygen}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={keygen} -A\n\
         RemainAfterExit=yes\n"
    )
}

fn drop_in_text() -> String {
    format!(
        "# Added by imgsan: create missing host keys before the daemon starts.\n\
         [Unit]\n\
         Wants={KEYGEN_UNIT}\n\
         After={KEYGEN_UNIT}\n"
    )
}

pub(super) fn run(r: &mut Run<'_, '_>, spec: &Spec<'_>) -> Result<()> {
    // 1. Delete the keys.
    for t in r.targets(&spec.paths)? {
        if !r.live(&t) {
            continue;
        }
        if t.name.starts_with(b"sshd_config") {
            r.note(format!(
                "{}: the daemon's configuration is never touched",
                show(&t.path)
            ));
            continue;
        }
        r.delete_target(&t)?;
    }

    // 2. Who creates new ones?
    let prefer_ssh = r.cx.base == Some(crate::rules::Base::Debian);
    let (decision, unit) = {
        let ns = r.ns()?;
        let unit = ssh_unit(&ns, prefer_ssh);
        let decision = match &unit {
            None => Err(vec![
                "no ssh daemon unit (ssh.service, sshd.service) found".to_string()
            ]),
            Some((_, path)) => decide(&ns, path),
        };
        (decision, unit)
    };
    let unit_name = unit.as_ref().map(|(n, _)| n.clone());
    let details = match (decision, unit) {
        (Ok((by, evidence)), _) => SshDetails {
            regenerated_by: by,
            evidence,
            unit: unit_name,
        },
        (Err(why), None) => {
            for w in why {
                r.note(w);
            }
            SshDetails {
                regenerated_by: Regeneration::Nothing,
                evidence: Vec::new(),
                unit: None,
            }
        }
        (Err(why), Some((name, path))) => {
            for w in &why {
                r.note(w.clone());
            }
            add_generator(r, &name, path, why)?
        }
    };
    r.rr.ssh = Some(details);
    Ok(())
}

/// Who regenerates keys, with evidence; or every reason nobody does.
fn decide(
    ns: &Namespace<'_>,
    daemon_path: &str,
) -> Result<(Regeneration, Vec<String>), Vec<String>> {
    let mut why = Vec::new();
    match cloud_init_regenerates(ns) {
        Ok(ev) => return Ok((Regeneration::CloudInit, ev)),
        Err(w) => why.push(w),
    }
    let daemon_text = read_text(ns, daemon_path.as_bytes()).unwrap_or_default();
    match distro_keygen(ns, &daemon_text) {
        Ok(mut ev) => match keygen_stood_down_by_cloud_init(ns) {
            Some(dropin) if cloud_init_enabled(ns).is_ok() => {
                why.push(format!(
                    "sshd-keygen stands down when cloud-init runs ({dropin}), and cloud-init will not create keys"
                ));
            }
            _ => {
                ev.insert(0, daemon_path.to_string());
                return Ok((Regeneration::SshdKeygen, ev));
            }
        },
        Err(w) => why.push(w),
    }
    Err(why)
}

/// Adds the key generation unit and the daemon's drop-in.
fn add_generator(
    r: &mut Run<'_, '_>,
    daemon: &str,
    daemon_path: String,
    why: Vec<String>,
) -> Result<SshDetails> {
    let keygen = {
        let ns = r.ns()?;
        ["/usr/bin/ssh-keygen", "/bin/ssh-keygen"]
            .into_iter()
            .find(|p| exists_file(&ns, p))
    };
    let Some(keygen) = keygen else {
        r.note("ssh-keygen is not installed: nothing can create host keys".into());
        return Ok(SshDetails {
            regenerated_by: Regeneration::Nothing,
            evidence: why,
            unit: Some(daemon.to_string()),
        });
    };
    let etc = "/etc/systemd/system";
    let unit_path = format!("{etc}/{KEYGEN_UNIT}");
    let drop_dir = format!("{etc}/{daemon}.d");
    let drop_path = format!("{drop_dir}/{DROP_IN}");
    write_file(r, &unit_path, keygen_unit_text(daemon, keygen).as_bytes())?;
    write_file(r, &drop_path, drop_in_text().as_bytes())?;
    r.rr.added_files.push(unit_path.clone());
    r.rr.added_files.push(drop_path.clone());
    let mut evidence = vec![daemon_path];
    evidence.extend(why);
    Ok(SshDetails {
        regenerated_by: Regeneration::AddedUnit,
        evidence,
        unit: Some(daemon.to_string()),
    })
}

/// Writes `bytes` at `path` (root, 0644), creating missing directories (root,
/// 0755). An existing regular file is overwritten in place (a second run over
/// an already sanitized guest).
fn write_file(r: &mut Run<'_, '_>, path: &str, bytes: &[u8]) -> Result<()> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some((name, dirs)) = comps.split_last() else {
        return Ok(());
    };
    let mut cur = b"/".to_vec();
    for d in dirs {
        let next = join(&cur, d.as_bytes());
        let parent = {
            let ns = r.ns()?;
            match ns.resolve(&next, true) {
                Ok(p) if ns.node(p).is_dir() => None,
                Ok(_) => {
                    return Err(crate::Error::corrupt(
                        "guest",
                        crate::error::Location::Whole,
                        format!("{} is not a directory", show(&next)),
                    ))
                }
                Err(_) => Some(ns.resolve(&cur, true)?),
            }
        };
        if let Some(p) = parent {
            r.ed.create_dir(p.vol, p.node, d.as_bytes(), 0o755)?;
        }
        cur = next;
    }
    let existing = {
        let ns = r.ns()?;
        lookup(&ns, r.layout, path.as_bytes())
    };
    match existing {
        Some(t) if matches!(r.ed.tree(t.vol)?.node(t.node).kind, Kind::File(_)) => {
            r.ed.replace(t.vol, t.node, bytes, &mut r.tally)?;
        }
        Some(t) => {
            r.delete_target(&t)?;
            let p = r.ns()?.resolve(&cur, true)?;
            r.ed.create_file(p.vol, p.node, name.as_bytes(), bytes, 0o644, &mut r.tally)?;
        }
        None => {
            let p = r.ns()?.resolve(&cur, true)?;
            r.ed.create_file(p.vol, p.node, name.as_bytes(), bytes, 0o644, &mut r.tally)?;
        }
    }
    r.changed(path.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_values_split_lines_and_words() {
        let t = "[Unit]\nAfter=network.target sshd-keygen.target\nWants=sshd-keygen.target\n Wants = a b\n";
        assert_eq!(unit_values(t, "Wants"), ["sshd-keygen.target", "a", "b"]);
        assert_eq!(
            unit_values(t, "After"),
            ["network.target", "sshd-keygen.target"]
        );
        assert!(unit_values(t, "ExecStart").is_empty());
    }
}
