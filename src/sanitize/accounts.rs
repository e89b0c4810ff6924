//! The accounts transform: rewrites /etc/passwd, shadow, group, gshadow,
//! subuid and subgid with [`users::sanitize`] (human accounts, their private
//! groups, memberships and id ranges removed; remaining password hashes
//! locked), keeping each file's node (owner, mode, SELinux label), and deletes
//! the stale copies that still hold what was removed (/etc/shadow- and friends,
//! pam's /etc/security/opasswd).
//!
//! The files are read whole, bounded by [`ACCOUNT_LIMIT`].

use crate::error::Result;
use crate::inspect::users::{self, AccountFiles, SanitizeOptions, STALE_COPIES};

use super::report::{AccountsDetails, RemovedAccount};
use super::resolve::{lookup, show};
use super::{Run, Target, CONFIG_LIMIT};

/// The largest account file read (a directory of a million users is ~100 MiB;
/// a cloud image's are a few KiB).
pub const ACCOUNT_LIMIT: u64 = 64 << 20;

const FILES: [&str; 6] = [
    users::PASSWD,
    users::GROUP,
    users::SHADOW,
    users::GSHADOW,
    users::SUBUID,
    users::SUBGID,
];

pub(super) fn run(r: &mut Run<'_, '_>) -> Result<()> {
    let mut found: Vec<Option<(Target, Vec<u8>)>> = Vec::new();
    let mut notes = Vec::new();
    let login_defs;
    {
        let ns = r.ns()?;
        for p in FILES {
            let t = lookup(&ns, r.layout, p.as_bytes());
            found.push(match t {
                Some(t) => {
                    let tree = ns.tree(t.vol);
                    if matches!(tree.node(t.node).kind, crate::tree::Kind::File(_)) {
                        let bytes = tree.read_all(t.node, ACCOUNT_LIMIT)?;
                        Some((t, bytes))
                    } else {
                        notes.push(format!(
                            "{p}: a {}, left alone",
                            tree.node(t.node).kind.name()
                        ));
                        None
                    }
                }
                None => None,
            });
        }
        login_defs = match ns.read(users::LOGIN_DEFS.as_bytes(), CONFIG_LIMIT) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == crate::ErrorKind::Io => None,
            Err(e) => return Err(e),
        };
    }
    for n in notes {
        r.note(n);
    }
    let get = |i: usize| found[i].as_ref().map(|(_, b)| b.as_slice());
    let files = AccountFiles {
        passwd: get(0),
        group: get(1),
        shadow: get(2),
        gshadow: get(3),
        subuid: get(4),
        subgid: get(5),
        login_defs: login_defs.as_deref(),
    };
    let out = users::sanitize(
        &files,
        &SanitizeOptions {
            keep_users: r.cx.options.keep_users.clone(),
        },
    );
    let new = [
        &out.passwd,
        &out.group,
        &out.shadow,
        &out.gshadow,
        &out.subuid,
        &out.subgid,
    ];
    for (slot, bytes) in found.iter().zip(new) {
        if let (Some((t, _)), Some(b)) = (slot, bytes) {
            if r.ed.replace(t.vol, t.node, b, &mut r.tally)? {
                r.changed(&t.path);
            }
        }
    }
    for w in &out.warnings {
        match w.line {
            Some(l) => r.note(format!("{}:{l}: {}", w.file, w.message)),
            None => r.note(format!("{}: {}", w.file, w.message)),
        }
    }

    let rep = &out.report;
    let mut details = AccountsDetails {
        removed_accounts: rep
            .removed_accounts
            .iter()
            .map(|a| RemovedAccount {
                name: a.name.clone(),
                uid: a.uid,
                home: a.home.clone(),
            })
            .collect(),
        removed_groups: rep.removed_groups.clone(),
        removed_memberships: rep.removed_memberships.len() as u64,
        locked_passwords: rep.locked_passwords.len() as u64,
        removed_subid_lines: rep.removed_subid_lines.len() as u64,
        files_changed: rep.changed_files.clone(),
        stale_copies_deleted: Vec::new(),
    };

    // The shadow tools' backups and pam's password history hold the removed
    // accounts and the old hashes.
    let stale: Vec<Target> = {
        let ns = r.ns()?;
        STALE_COPIES
            .iter()
            .filter_map(|p| lookup(&ns, r.layout, p.as_bytes()))
            .collect()
    };
    for t in stale {
        if r.live(&t) {
            r.delete_target(&t)?;
            details.stale_copies_deleted.push(show(&t.path));
        }
    }

    // A removed account's home outside the emptied directories survives.
    let kept_homes: Vec<String> = {
        let ns = r.ns()?;
        details
            .removed_accounts
            .iter()
            .filter(|a| a.home.starts_with('/') && a.home != "/")
            .filter(|a| {
                ns.resolve(a.home.as_bytes(), true)
                    .is_ok_and(|p| ns.tree(p.vol).entries(p.node).iter().next().is_some())
            })
            .map(|a| {
                format!(
                    "{}: home of removed account {} is kept (no rule empties it)",
                    a.home, a.name
                )
            })
            .collect()
    };
    for n in kept_homes {
        r.note(n);
    }
    r.rr.accounts = Some(details);
    Ok(())
}
