//! The sanitize report: per rule, what it did (paths, counts, bytes) or why it
//! did not run. It is the `sanitize` section of the JSON report
//! (rules/report.schema.json, `$defs/sanitize`).
//!
//! Reports never carry file contents: no password hashes, no log lines. fstab
//! lines are shown with password options masked.

use serde::{Deserialize, Serialize};

use super::edit::Tally;

/// Why a rule ran or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The rule ran (it may have found nothing to do).
    Applied,
    /// `enabled: false` in the rules file.
    Disabled,
    /// Turned off for this run (`--disable RULE`).
    DisabledByOption,
    /// A hygiene rule, and the hygiene group is off (`--no-hygiene`).
    HygieneOff,
    /// Skipped by an exception in the imaging request.
    Excepted,
    /// The rule is for another distribution base (`bases:`), or the guest's base
    /// is unknown.
    NotForBase,
}

impl Status {
    pub fn ran(self) -> bool {
        self == Status::Applied
    }
}

/// A rule the request's exceptions skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub rule: String,
    pub reason: String,
}

/// An account the accounts transform removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedAccount {
    pub name: String,
    pub uid: u32,
    pub home: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsDetails {
    pub removed_accounts: Vec<RemovedAccount>,
    /// Private groups of the removed accounts.
    pub removed_groups: Vec<String>,
    /// Memberships of removed accounts dropped from other groups.
    pub removed_memberships: u64,
    /// Password fields locked (hashes replaced by `*` or `!`).
    pub locked_passwords: u64,
    pub removed_subid_lines: u64,
    /// The account files rewritten.
    pub files_changed: Vec<String>,
    /// Backup copies deleted (/etc/shadow- and friends, /etc/security/opasswd).
    pub stale_copies_deleted: Vec<String>,
}

/// An fstab line and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FstabLineFate {
    /// 1-based line number in the original file.
    pub line: usize,
    /// The line, with password options masked.
    pub text: String,
    pub mount_point: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FstabDetails {
    pub dropped: Vec<FstabLineFate>,
    /// Entries kept.
    pub kept_entries: u64,
    /// Entries kept although they name nothing imgsan can match to a volume
    /// (by-id links, device-mapper names): they may still work in the clone.
    pub kept_unresolvable: Vec<FstabLineFate>,
}

/// What makes an instance regenerate its ssh host keys at first boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regeneration {
    /// cloud-init is installed, enabled, and runs its ssh module.
    CloudInit,
    /// The distribution's sshd-keygen unit(s), pulled in by the sshd unit.
    SshdKeygen,
    /// imgsan added a unit that runs `ssh-keygen -A` before the ssh daemon.
    AddedUnit,
    /// Nothing: no ssh daemon unit was found to attach key generation to.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshDetails {
    pub regenerated_by: Regeneration,
    /// What the decision was based on (guest paths).
    pub evidence: Vec<String>,
    /// The ssh daemon's systemd unit, when one was found.
    pub unit: Option<String>,
}

/// One rule's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    /// The rule id; `request-exclude` for the request's exclusions.
    pub id: String,
    /// `required`, `hygiene` or `request`.
    pub group: String,
    /// `empty-dir`, `delete`, `truncate`, `replace` or `transform`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    pub status: Status,
    /// Why it did not run (the exception's reason, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Guest paths the rule changed, deleted or created, sorted; at most
    /// [`super::Options::max_listed_paths`] of them.
    pub paths: Vec<String>,
    /// How many paths there were in all.
    pub paths_count: u64,
    pub files_deleted: u64,
    pub dirs_deleted: u64,
    pub bytes_freed: u64,
    pub files_truncated: u64,
    pub files_overwritten: u64,
    pub files_created: u64,
    pub bytes_written: u64,
    /// Files the rule added to the guest (the ssh key generation unit).
    pub added_files: Vec<String>,
    /// What the rule left alone and why (symlinks, mount points, ...), bounded
    /// like `paths`.
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<AccountsDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstab: Option<FstabDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshDetails>,
}

impl RuleReport {
    pub fn new(
        id: &str,
        group: &str,
        action: &str,
        transform: Option<&str>,
        status: Status,
    ) -> Self {
        RuleReport {
            id: id.to_string(),
            group: group.to_string(),
            action: action.to_string(),
            transform: transform.map(str::to_string),
            status,
            reason: None,
            paths: Vec::new(),
            paths_count: 0,
            files_deleted: 0,
            dirs_deleted: 0,
            bytes_freed: 0,
            files_truncated: 0,
            files_overwritten: 0,
            files_created: 0,
            bytes_written: 0,
            added_files: Vec::new(),
            notes: Vec::new(),
            accounts: None,
            fstab: None,
            ssh: None,
        }
    }

    pub fn tally(&self) -> Tally {
        Tally {
            files_deleted: self.files_deleted,
            dirs_deleted: self.dirs_deleted,
            bytes_freed: self.bytes_freed,
            files_truncated: self.files_truncated,
            files_overwritten: self.files_overwritten,
            files_created: self.files_created,
            bytes_written: self.bytes_written,
        }
    }

    pub fn set_tally(&mut self, t: &Tally) {
        self.files_deleted = t.files_deleted;
        self.dirs_deleted = t.dirs_deleted;
        self.bytes_freed = t.bytes_freed;
        self.files_truncated = t.files_truncated;
        self.files_overwritten = t.files_overwritten;
        self.files_created = t.files_created;
        self.bytes_written = t.bytes_written;
    }
}

/// Sums over the rules that ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub rules_applied: u64,
    pub rules_skipped: u64,
    pub files_deleted: u64,
    pub dirs_deleted: u64,
    pub bytes_freed: u64,
    pub files_truncated: u64,
    pub files_overwritten: u64,
    pub files_created: u64,
    pub bytes_written: u64,
}

/// What `sanitize` did to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanitizeReport {
    /// The distribution base templates were chosen for (`debian`, `rhel`), or
    /// null when the guest's base is unknown.
    pub base: Option<String>,
    /// Every rule of the rule set in file order, then the request's exclusions.
    pub rules: Vec<RuleReport>,
    pub totals: Totals,
    /// Rules the request's exceptions skipped.
    pub skipped_by_exception: Vec<Skipped>,
    /// Files added to the guest, by any rule.
    pub added_files: Vec<String>,
    /// What the operator should know about what the rules left in place: a
    /// symlinked target kept (rules never follow links), a hard link that keeps
    /// a removed file's data, a volume the guest does not mount re-created empty.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl SanitizeReport {
    /// The report of rule `id`.
    pub fn rule(&self, id: &str) -> Option<&RuleReport> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// Whether rule `id` ran (for [`crate::policy::Report::resolve_fixers`]).
    pub fn ran(&self, id: &str) -> bool {
        self.rule(id).is_some_and(|r| r.status.ran())
    }

    pub(crate) fn compute_totals(&mut self) {
        let mut t = Totals::default();
        let mut sum = Tally::default();
        for r in &self.rules {
            if r.status.ran() {
                t.rules_applied += 1;
                sum.add(&r.tally());
            } else {
                t.rules_skipped += 1;
            }
        }
        t.files_deleted = sum.files_deleted;
        t.dirs_deleted = sum.dirs_deleted;
        t.bytes_freed = sum.bytes_freed;
        t.files_truncated = sum.files_truncated;
        t.files_overwritten = sum.files_overwritten;
        t.files_created = sum.files_created;
        t.bytes_written = sum.bytes_written;
        self.totals = t;
        self.added_files = self
            .rules
            .iter()
            .flat_map(|r| r.added_files.iter().cloned())
            .collect();
    }

    /// Puts this report into a policy report's `sanitize` section.
    pub fn attach(&self, report: &mut crate::policy::Report) {
        report.sanitize = serde_json::to_value(self).ok();
    }
}

/// A list bounded at `max` items that still counts everything pushed.
#[derive(Debug, Clone, Default)]
pub struct Bounded {
    pub items: Vec<String>,
    pub count: u64,
    max: usize,
}

impl Bounded {
    pub fn new(max: usize) -> Self {
        Bounded {
            items: Vec::new(),
            count: 0,
            max,
        }
    }

    pub fn push(&mut self, s: String) {
        self.count += 1;
        if self.items.len() < self.max {
            self.items.push(s);
        }
    }
}

/// Masks the values of password-like mount options (`password=`, `pass=`,
/// `passwd=`) so a CIFS line does not put its password in a report.
pub fn mask_secrets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    const KEYS: [&str; 3] = ["password=", "passwd=", "pass="];
    while !rest.is_empty() {
        let hit = KEYS
            .iter()
            .filter_map(|k| {
                rest.find(k).and_then(|i| {
                    // Only at an option boundary: start, ',' or whitespace before.
                    let ok = i == 0
                        || rest[..i]
                            .chars()
                            .next_back()
                            .is_some_and(|c| c == ',' || c.is_whitespace());
                    ok.then_some((i, k.len()))
                })
            })
            .min();
        match hit {
            Some((i, klen)) => {
                out.push_str(&rest[..i + klen]);
                let after = &rest[i + klen..];
                let end = after
                    .find(|c: char| c == ',' || c.is_whitespace())
                    .unwrap_or(after.len());
                out.push_str("***");
                rest = &after[end..];
            }
            None => {
                out.push_str(rest);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_options_are_masked() {
        assert_eq!(
            mask_secrets("//srv/share /mnt cifs username=u,password=s3cr3t,uid=1 0 0"),
            "//srv/share /mnt cifs username=u,password=***,uid=1 0 0"
        );
        assert_eq!(mask_secrets("x y nfs pass=a 0 0"), "x y nfs pass=*** 0 0");
        assert_eq!(mask_secrets("bypass=1 compass=2"), "bypass=1 compass=2");
        assert_eq!(
            mask_secrets("UUID=1 / ext4 defaults 0 1"),
            "UUID=1 / ext4 defaults 0 1"
        );
    }

    #[test]
    fn bounded_lists_count_everything() {
        let mut b = Bounded::new(2);
        for i in 0..5 {
            b.push(i.to_string());
        }
        assert_eq!((b.items.len(), b.count), (2, 5));
    }
}
