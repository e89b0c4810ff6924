//! Accounts and groups: parses /etc/passwd, /etc/group, /etc/shadow, /etc/gshadow,
//! /etc/subuid, /etc/subgid and /etc/login.defs, says which accounts are human,
//! and provides the sanitize transform that removes human accounts and locks the
//! passwords of the accounts that stay.
//!
//! Records remember their exact line. A transform rewrites only the lines it must
//! change (a removed account, a group member list, a password field) and keeps
//! every other byte: comments, lines it cannot parse (NIS `+` entries, damage),
//! line order, CR characters and the presence of a final newline.
//!
//! Facts never carry password hashes: only the state of the password field
//! (locked, empty, which hash algorithm) reaches the serializable results.
//!
//! Nothing here reads files or knows about policy.

use std::collections::{BTreeMap, BTreeSet};

use crate::inspect::{join_lines, split_lines, FileSource, Warning};
use crate::Result;

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
pub const SHADOW: &str = "/etc/shadow";
pub const GSHADOW: &str = "/etc/gshadow";
pub const SUBUID: &str = "/etc/subuid";
pub const SUBGID: &str = "/etc/subgid";
pub const LOGIN_DEFS: &str = "/etc/login.defs";

/// Files that keep copies of account data the sanitize transform removes: the
/// shadow tools' backups (previous versions, with old hashes and removed users)
/// and pam_unix's password history. The rule set should delete them; this module
/// does not rewrite them.
pub const STALE_COPIES: [&str; 7] = [
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/subuid-",
    "/etc/subgid-",
    "/etc/security/opasswd",
];

/// The account files as read from the guest (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountFiles<'a> {
    pub passwd: Option<&'a [u8]>,
    pub group: Option<&'a [u8]>,
    pub shadow: Option<&'a [u8]>,
    pub gshadow: Option<&'a [u8]>,
    pub subuid: Option<&'a [u8]>,
    pub subgid: Option<&'a [u8]>,
    pub login_defs: Option<&'a [u8]>,
}

/// Owned copies of the account files, read through a [`FileSource`].
#[derive(Debug, Clone, Default)]
pub struct OwnedAccountFiles {
    pub passwd: Option<Vec<u8>>,
    pub group: Option<Vec<u8>>,
    pub shadow: Option<Vec<u8>>,
    pub gshadow: Option<Vec<u8>>,
    pub subuid: Option<Vec<u8>>,
    pub subgid: Option<Vec<u8>>,
    pub login_defs: Option<Vec<u8>>,
}

impl OwnedAccountFiles {
    pub fn read(src: &dyn FileSource) -> Result<Self> {
        Ok(OwnedAccountFiles {
            passwd: src.read(PASSWD)?,
            group: src.read(GROUP)?,
            shadow: src.read(SHADOW)?,
            gshadow: src.read(GSHADOW)?,
            subuid: src.read(SUBUID)?,
            subgid: src.read(SUBGID)?,
            login_defs: src.read(LOGIN_DEFS)?,
        })
    }

    pub fn borrow(&self) -> AccountFiles<'_> {
        AccountFiles {
            passwd: self.passwd.as_deref(),
            group: self.group.as_deref(),
            shadow: self.shadow.as_deref(),
            gshadow: self.gshadow.as_deref(),
            subuid: self.subuid.as_deref(),
            subgid: self.subgid.as_deref(),
            login_defs: self.login_defs.as_deref(),
        }
    }
}

// ---------------------------------------------------------------------------
// login.defs

/// The ID ranges login.defs gives to regular (human) users and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IdRanges {
    pub uid_min: u32,
    pub uid_max: u32,
    pub gid_min: u32,
    pub gid_max: u32,
}

impl Default for IdRanges {
    /// shadow's compiled-in defaults, which Debian and RHEL both ship.
    fn default() -> Self {
        IdRanges {
            uid_min: 1000,
            uid_max: 60000,
            gid_min: 1000,
            gid_max: 60000,
        }
    }
}

/// Reads UID_MIN, UID_MAX, GID_MIN and GID_MAX from login.defs (`KEY value`
/// lines, `#` comments). Missing or unparsable values keep their defaults, with a
/// warning for the unparsable ones; a min above its max resets both.
pub fn parse_login_defs(bytes: &[u8]) -> (IdRanges, Vec<Warning>) {
    let mut r = IdRanges::default();
    let mut warnings = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if key.starts_with('#') {
            continue;
        }
        let slot = match key {
            "UID_MIN" => &mut r.uid_min,
            "UID_MAX" => &mut r.uid_max,
            "GID_MIN" => &mut r.gid_min,
            "GID_MAX" => &mut r.gid_max,
            _ => continue,
        };
        // shadow reads these with strtol base 0: decimal, 0x hex or 0 octal.
        let parsed = if let Some(h) = value.strip_prefix("0x").or(value.strip_prefix("0X")) {
            u32::from_str_radix(h, 16).ok()
        } else if value.len() > 1 && value.starts_with('0') {
            u32::from_str_radix(&value[1..], 8).ok()
        } else {
            value.parse().ok()
        };
        match parsed {
            Some(v) => *slot = v,
            None => warnings.push(Warning::at_line(
                LOGIN_DEFS,
                i + 1,
                format!("{key} value {value:?} is not a number; default kept"),
            )),
        }
    }
    let d = IdRanges::default();
    if r.uid_min > r.uid_max {
        warnings.push(Warning::in_file(
            LOGIN_DEFS,
            "UID_MIN above UID_MAX; defaults used",
        ));
        (r.uid_min, r.uid_max) = (d.uid_min, d.uid_max);
    }
    if r.gid_min > r.gid_max {
        warnings.push(Warning::in_file(
            LOGIN_DEFS,
            "GID_MIN above GID_MAX; defaults used",
        ));
        (r.gid_min, r.gid_max) = (d.gid_min, d.gid_max);
    }
    (r, warnings)
}

// ---------------------------------------------------------------------------
// Colon-separated files

/// One line of a colon-separated file: its exact bytes and its fields. A line
/// that is a comment, blank, or does not have the record's shape has no fields
/// and is carried through every transform untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ColonLine {
    raw: Vec<u8>,
    /// `Some` for records.
    fields: Option<Vec<Vec<u8>>>,
    /// Set when a transform changed the fields: the line is then rebuilt.
    edited: bool,
    /// Set when a transform removed the line.
    removed: bool,
}

#[derive(Debug, Clone)]
struct ColonFile {
    path: &'static str,
    lines: Vec<ColonLine>,
    ends_with_newline: bool,
}

impl ColonFile {
    /// `min_fields` is the record's field count (passwd 7, group 4, shadow 9,
    /// gshadow 4, subuid 3). Shadow tolerates fewer trailing fields, as glibc does.
    fn parse(
        bytes: &[u8],
        path: &'static str,
        fields: usize,
        lenient_tail: bool,
        warnings: &mut Vec<Warning>,
    ) -> ColonFile {
        let (lines, ends_with_newline) = split_lines(bytes);
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.into_iter().enumerate() {
            let trimmed: &[u8] = line.strip_suffix(b"\r").unwrap_or(line);
            let is_record = !(trimmed.is_empty()
                || trimmed.starts_with(b"#")
                || trimmed.starts_with(b"+")
                || trimmed.starts_with(b"-"));
            let mut f: Option<Vec<Vec<u8>>> = None;
            if is_record {
                let parts: Vec<Vec<u8>> = line.split(|&b| b == b':').map(<[u8]>::to_vec).collect();
                let ok = parts.len() == fields
                    || (lenient_tail && parts.len() >= 2 && parts.len() < fields);
                if ok && !parts[0].is_empty() {
                    f = Some(parts);
                } else {
                    warnings.push(Warning::at_line(
                        path,
                        i + 1,
                        format!("{} fields, expected {fields}; line kept as is", parts.len()),
                    ));
                }
            }
            out.push(ColonLine {
                raw: line.to_vec(),
                fields: f,
                edited: false,
                removed: false,
            });
        }
        ColonFile {
            path,
            lines: out,
            ends_with_newline,
        }
    }

    fn records(&self) -> impl Iterator<Item = (usize, &Vec<Vec<u8>>)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.fields.as_ref().map(|f| (i, f)))
    }

    fn to_bytes(&self) -> Vec<u8> {
        let rebuilt: Vec<Vec<u8>> = self
            .lines
            .iter()
            .filter(|l| !l.removed)
            .map(|l| match (&l.fields, l.edited) {
                (Some(f), true) => f.join(&b':'),
                _ => l.raw.clone(),
            })
            .collect();
        // A file emptied of all its lines stays a file; keep its final newline
        // convention only when something is left.
        join_lines(rebuilt.iter().map(Vec::as_slice), self.ends_with_newline)
    }

    fn changed(&self) -> bool {
        self.lines.iter().any(|l| l.removed || l.edited)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Field bytes without a trailing CR (the last field of a CRLF line).
fn field_str(f: &[u8]) -> String {
    text(f.strip_suffix(b"\r").unwrap_or(f))
}

fn parse_id(f: &[u8]) -> Option<u32> {
    std::str::from_utf8(f)
        .ok()?
        .trim_end_matches('\r')
        .parse()
        .ok()
}

fn split_list(f: &[u8]) -> Vec<String> {
    let s = field_str(f);
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Facts

/// The state of a password field, without the hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "algorithm")]
pub enum PasswordState {
    /// Empty field: login without a password.
    Empty,
    /// `*`, `!`, `!!` or similar: no password login.
    Locked,
    /// A locked field that still holds a hash (`!$6$...`); `usermod -U` unlocks it.
    LockedWithHash(String),
    /// A usable hash; the algorithm name from its prefix.
    Hash(String),
    /// `x`: the real field is in shadow (or gshadow), which is absent.
    Shadowed,
}

/// Classifies a password field. `x` only means "see shadow" in passwd and group.
pub fn password_state(field: &[u8]) -> PasswordState {
    let f = field.strip_suffix(b"\r").unwrap_or(field);
    match f {
        b"" => PasswordState::Empty,
        b"x" => PasswordState::Shadowed,
        _ if f[0] == b'!' || f[0] == b'*' => {
            let rest = f
                .iter()
                .position(|&b| b != b'!' && b != b'*')
                .map(|p| &f[p..]);
            match rest {
                Some(h) if looks_like_hash(h) => PasswordState::LockedWithHash(algorithm(h)),
                _ => PasswordState::Locked,
            }
        }
        _ => PasswordState::Hash(algorithm(f)),
    }
}

fn looks_like_hash(h: &[u8]) -> bool {
    h.starts_with(b"$")
        || (h.len() == 13
            && h.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/'))
}

/// The crypt(5) algorithm of a hash, from its prefix.
fn algorithm(h: &[u8]) -> String {
    let id = if h.starts_with(b"$") {
        h[1..].split(|&b| b == b'$').next().unwrap_or(b"")
    } else {
        b""
    };
    match id {
        b"1" => "md5",
        b"2a" | b"2b" | b"2y" => "bcrypt",
        b"5" => "sha256",
        b"6" => "sha512",
        b"y" => "yescrypt",
        b"gy" => "gost-yescrypt",
        b"7" => "scrypt",
        b"" if h.len() == 13 => "des",
        _ => "unknown",
    }
    .to_string()
}

/// One account from passwd, with what shadow and group say about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// A regular user: UID in UID_MIN..=UID_MAX and not nobody.
    pub human: bool,
    /// The shell is not a nologin/false variant.
    pub login_shell: bool,
    /// From shadow when present, else from passwd's own field.
    pub password: PasswordState,
    /// The primary group's name, when group has it.
    pub primary_group: Option<String>,
    /// Supplementary groups listing this account as a member.
    pub groups: Vec<String>,
    /// 1-based line in passwd.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
    pub line: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UsersFacts {
    pub accounts: Vec<Account>,
    pub groups: Vec<Group>,
    pub passwd_present: bool,
    pub group_present: bool,
    pub shadow_present: bool,
    pub gshadow_present: bool,
    pub ranges: IdRanges,
    pub warnings: Vec<Warning>,
}

impl UsersFacts {
    pub fn humans(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().filter(|a| a.human)
    }
}

/// Names and IDs that are never human accounts, whatever login.defs says: the
/// overflow user and the (uid_t)-1 and (uid_t)-2 sentinels.
fn is_nobody(name: &str, uid: u32) -> bool {
    matches!(name, "nobody" | "nfsnobody") || uid == 65534 || uid == 65535 || uid >= u32::MAX - 1
}

/// Whether an account is a regular (human) user.
pub fn is_human(name: &str, uid: u32, ranges: &IdRanges) -> bool {
    (ranges.uid_min..=ranges.uid_max).contains(&uid) && !is_nobody(name, uid)
}

fn is_login_shell(shell: &str) -> bool {
    let base = shell.rsplit('/').next().unwrap_or("");
    !(shell.is_empty()
        || base == "nologin"
        || base == "false"
        || base == "sync"
        || base == "shutdown"
        || base == "halt")
}

struct Parsed {
    passwd: Option<ColonFile>,
    group: Option<ColonFile>,
    shadow: Option<ColonFile>,
    gshadow: Option<ColonFile>,
    subuid: Option<ColonFile>,
    subgid: Option<ColonFile>,
    ranges: IdRanges,
    warnings: Vec<Warning>,
}

fn parse_all(files: &AccountFiles) -> Parsed {
    let mut warnings = Vec::new();
    let (ranges, w) = files.login_defs.map(parse_login_defs).unwrap_or_default();
    warnings.extend(w);
    let mut p = |b: Option<&[u8]>, path, n, lenient| {
        b.map(|b| ColonFile::parse(b, path, n, lenient, &mut warnings))
    };
    let passwd = p(files.passwd, PASSWD, 7, false);
    let group = p(files.group, GROUP, 4, false);
    let shadow = p(files.shadow, SHADOW, 9, true);
    let gshadow = p(files.gshadow, GSHADOW, 4, false);
    let subuid = p(files.subuid, SUBUID, 3, false);
    let subgid = p(files.subgid, SUBGID, 3, false);
    // passwd and group records need numeric IDs; a record without one is kept as
    // an unparsed line.
    let mut demote = |f: &mut Option<ColonFile>, idx: &[usize]| {
        if let Some(f) = f {
            for l in f.lines.iter_mut().enumerate() {
                let (i, line) = l;
                if let Some(fields) = &line.fields {
                    if idx.iter().any(|&k| parse_id(&fields[k]).is_none()) {
                        warnings.push(Warning::at_line(
                            f.path,
                            i + 1,
                            "non-numeric ID; line kept as is",
                        ));
                        line.fields = None;
                    }
                }
            }
        }
    };
    let mut passwd = passwd;
    let mut group = group;
    demote(&mut passwd, &[2, 3]);
    demote(&mut group, &[2]);
    Parsed {
        passwd,
        group,
        shadow,
        gshadow,
        subuid,
        subgid,
        ranges,
        warnings,
    }
}

/// Reads the account facts.
pub fn inspect(files: &AccountFiles) -> UsersFacts {
    let p = parse_all(files);
    let shadow_fields: BTreeMap<String, Vec<u8>> = p
        .shadow
        .iter()
        .flat_map(|f| f.records())
        .map(|(_, r)| (text(&r[0]), r[1].clone()))
        .collect();
    let groups: Vec<Group> = p
        .group
        .iter()
        .flat_map(|f| f.records())
        .map(|(i, r)| Group {
            name: text(&r[0]),
            gid: parse_id(&r[2]).unwrap_or(0),
            members: split_list(&r[3]),
            line: i + 1,
        })
        .collect();
    let accounts = p
        .passwd
        .iter()
        .flat_map(|f| f.records())
        .map(|(i, r)| {
            let name = text(&r[0]);
            let uid = parse_id(&r[2]).unwrap_or(0);
            let gid = parse_id(&r[3]).unwrap_or(0);
            let shell = field_str(&r[6]);
            let password = match (password_state(&r[1]), shadow_fields.get(&name)) {
                (PasswordState::Shadowed, Some(s)) => password_state(s),
                (own, _) => own,
            };
            Account {
                human: is_human(&name, uid, &p.ranges),
                login_shell: is_login_shell(&shell),
                password,
                primary_group: groups.iter().find(|g| g.gid == gid).map(|g| g.name.clone()),
                groups: groups
                    .iter()
                    .filter(|g| g.members.contains(&name))
                    .map(|g| g.name.clone())
                    .collect(),
                gecos: text(&r[4]),
                home: text(&r[5]),
                shell,
                name,
                uid,
                gid,
                line: i + 1,
            }
        })
        .collect();
    UsersFacts {
        accounts,
        groups,
        passwd_present: files.passwd.is_some(),
        group_present: files.group.is_some(),
        shadow_present: files.shadow.is_some(),
        gshadow_present: files.gshadow.is_some(),
        ranges: p.ranges,
        warnings: p.warnings,
    }
}

// ---------------------------------------------------------------------------
// Sanitize transform

/// What the sanitize transform keeps.
#[derive(Debug, Clone, Default)]
pub struct SanitizeOptions {
    /// Human accounts to keep anyway (for example a cloud's default user baked
    /// into the image on purpose).
    pub keep_users: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemovedAccount {
    pub name: String,
    pub uid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockedPassword {
    pub file: String,
    pub name: String,
    /// The field's state before.
    pub was: PasswordState,
    /// What the field now holds ("*" or "!").
    pub now: String,
}

/// What the transform changed, file by file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SanitizeReport {
    pub removed_accounts: Vec<RemovedAccount>,
    /// Private groups of removed accounts.
    pub removed_groups: Vec<String>,
    /// (group, member) pairs dropped from group and gshadow member or admin lists.
    pub removed_memberships: Vec<(String, String)>,
    pub locked_passwords: Vec<LockedPassword>,
    /// (file, first field) of dropped subuid/subgid lines.
    pub removed_subid_lines: Vec<(String, String)>,
    /// Guest paths whose content changed.
    pub changed_files: Vec<String>,
}

/// The rewritten files: `Some` exactly where the input had the file.
#[derive(Debug, Clone, Default)]
pub struct SanitizedFiles {
    pub passwd: Option<Vec<u8>>,
    pub group: Option<Vec<u8>>,
    pub shadow: Option<Vec<u8>>,
    pub gshadow: Option<Vec<u8>>,
    pub subuid: Option<Vec<u8>>,
    pub subgid: Option<Vec<u8>>,
    pub report: SanitizeReport,
    pub warnings: Vec<Warning>,
}

/// What a password field becomes when locked: nothing of an old hash survives.
///
/// - root gets `*` (no password matches it; root stays usable through keys and
///   the console tools that do not need a password, as on cloud images);
/// - any other account with a usable hash, or a locked field still holding a
///   hash, gets `!` (the conventional "locked" mark: `passwd -S` shows L and sshd
///   without PAM refuses the account);
/// - an empty field (password-less login) gets `*` (`!` for non-root);
/// - fields already without a hash (`*`, `!`, `!!`, `x`) are left alone.
fn locked_value(name: &str, field: &[u8]) -> Option<&'static [u8]> {
    match password_state(field) {
        PasswordState::Locked | PasswordState::Shadowed => None,
        PasswordState::Empty | PasswordState::Hash(_) | PasswordState::LockedWithHash(_) => {
            Some(if name == "root" { b"*" } else { b"!" })
        }
    }
}

/// Sets field `k` to `v`, keeping a CR that ended the line when `k` is last.
fn set_field(fields: &mut [Vec<u8>], k: usize, v: &[u8]) {
    let last = k + 1 == fields.len();
    let cr = last && fields[k].ends_with(b"\r");
    fields[k] = v.to_vec();
    if cr {
        fields[k].push(b'\r');
    }
}

/// Removes human accounts (UID in the login.defs range, not nobody, not in
/// `keep_users`), their private groups, their memberships, and their
/// subuid/subgid ranges; locks every remaining password hash (see
/// [`locked_value`]). System accounts keep their lines byte for byte unless their
/// password field held a hash.
pub fn sanitize(files: &AccountFiles, opts: &SanitizeOptions) -> SanitizedFiles {
    let mut p = parse_all(files);
    let mut report = SanitizeReport::default();

    // 1. passwd: decide who goes.
    let mut removed: BTreeMap<String, (u32, u32)> = BTreeMap::new(); // name -> (uid, gid)
    let mut kept_primary_gids: BTreeSet<u32> = BTreeSet::new();
    if let Some(f) = &mut p.passwd {
        for line in &mut f.lines {
            let Some(r) = &mut line.fields else { continue };
            let name = text(&r[0]);
            let uid = parse_id(&r[2]).unwrap_or(0);
            let gid = parse_id(&r[3]).unwrap_or(0);
            if is_human(&name, uid, &p.ranges) && !opts.keep_users.contains(&name) {
                line.removed = true;
                report.removed_accounts.push(RemovedAccount {
                    name: name.clone(),
                    uid,
                    home: text(&r[5]),
                });
                removed.insert(name, (uid, gid));
            } else {
                kept_primary_gids.insert(gid);
                if let Some(v) = locked_value(&name, &r[1]) {
                    report.locked_passwords.push(LockedPassword {
                        file: PASSWD.into(),
                        name: name.clone(),
                        was: password_state(&r[1]),
                        now: text(v),
                    });
                    set_field(r, 1, v);
                    line.edited = true;
                }
            }
        }
    }
    let removed_names: BTreeSet<&str> = removed.keys().map(String::as_str).collect();

    // 2. shadow: drop removed accounts, lock the rest.
    if let Some(f) = &mut p.shadow {
        for line in &mut f.lines {
            let Some(r) = &mut line.fields else { continue };
            let name = text(&r[0]);
            if removed_names.contains(name.as_str()) {
                line.removed = true;
            } else if let Some(v) = locked_value(&name, &r[1]) {
                report.locked_passwords.push(LockedPassword {
                    file: SHADOW.into(),
                    name: name.clone(),
                    was: password_state(&r[1]),
                    now: text(v),
                });
                set_field(r, 1, v);
                line.edited = true;
            }
        }
    }

    // 3. group: private groups go (same name and GID as a removed account, and no
    // kept account uses the GID as its primary group); members are filtered.
    let mut removed_groups: BTreeSet<String> = BTreeSet::new();
    if let Some(f) = &mut p.group {
        for line in &mut f.lines {
            let Some(r) = &mut line.fields else { continue };
            let name = text(&r[0]);
            let gid = parse_id(&r[2]).unwrap_or(0);
            let private = removed.get(&name).is_some_and(|&(_, ugid)| ugid == gid)
                && !kept_primary_gids.contains(&gid);
            if private {
                line.removed = true;
                removed_groups.insert(name.clone());
                report.removed_groups.push(name);
                continue;
            }
            if filter_list(r, 3, &removed_names, &name, &mut report.removed_memberships) {
                line.edited = true;
            }
            if !matches!(
                password_state(&r[1]),
                PasswordState::Shadowed | PasswordState::Locked | PasswordState::Empty
            ) {
                report.locked_passwords.push(LockedPassword {
                    file: GROUP.into(),
                    name: name.clone(),
                    was: password_state(&r[1]),
                    now: "!".into(),
                });
                set_field(r, 1, b"!");
                line.edited = true;
            }
        }
    }

    // 4. gshadow: the same groups go; admins and members are filtered; group
    // passwords are locked.
    if let Some(f) = &mut p.gshadow {
        let mut dropped_pairs = Vec::new();
        for line in &mut f.lines {
            let Some(r) = &mut line.fields else { continue };
            let name = text(&r[0]);
            if removed_groups.contains(&name) {
                line.removed = true;
                continue;
            }
            let a = filter_list(r, 2, &removed_names, &name, &mut dropped_pairs);
            let m = filter_list(r, 3, &removed_names, &name, &mut dropped_pairs);
            if a || m {
                line.edited = true;
            }
            if matches!(
                password_state(&r[1]),
                PasswordState::Hash(_) | PasswordState::LockedWithHash(_)
            ) {
                report.locked_passwords.push(LockedPassword {
                    file: GSHADOW.into(),
                    name: name.clone(),
                    was: password_state(&r[1]),
                    now: "!".into(),
                });
                set_field(r, 1, b"!");
                line.edited = true;
            }
        }
        for pair in dropped_pairs {
            if !report.removed_memberships.contains(&pair) {
                report.removed_memberships.push(pair);
            }
        }
    }

    // 5. subuid / subgid: ranges owned by a removed account, by name or by UID.
    let removed_uids: BTreeSet<String> = removed.values().map(|(u, _)| u.to_string()).collect();
    for (f, path) in [(&mut p.subuid, SUBUID), (&mut p.subgid, SUBGID)] {
        let Some(f) = f else { continue };
        for line in &mut f.lines {
            let Some(r) = &line.fields else { continue };
            let owner = text(&r[0]);
            if removed_names.contains(owner.as_str()) || removed_uids.contains(&owner) {
                line.removed = true;
                report.removed_subid_lines.push((path.to_string(), owner));
            }
        }
    }

    let mut out = SanitizedFiles {
        warnings: p.warnings,
        ..Default::default()
    };
    for (f, slot) in [
        (&p.passwd, &mut out.passwd),
        (&p.group, &mut out.group),
        (&p.shadow, &mut out.shadow),
        (&p.gshadow, &mut out.gshadow),
        (&p.subuid, &mut out.subuid),
        (&p.subgid, &mut out.subgid),
    ] {
        if let Some(f) = f {
            *slot = Some(f.to_bytes());
            if f.changed() {
                report.changed_files.push(f.path.to_string());
            }
        }
    }
    out.report = report;
    out
}

/// Drops removed names from the comma-separated list in field `k`. Returns
/// whether the field changed.
fn filter_list(
    r: &mut [Vec<u8>],
    k: usize,
    removed: &BTreeSet<&str>,
    group: &str,
    dropped: &mut Vec<(String, String)>,
) -> bool {
    let Some(field) = r.get(k) else { return false };
    let body = field.strip_suffix(b"\r").unwrap_or(field);
    if body.is_empty() {
        return false;
    }
    let members: Vec<&[u8]> = body.split(|&b| b == b',').collect();
    let kept: Vec<&[u8]> = members
        .iter()
        .copied()
        .filter(|m| {
            let name = String::from_utf8_lossy(m);
            let gone = removed.contains(name.trim());
            if gone {
                dropped.push((group.to_string(), name.trim().to_string()));
            }
            !gone
        })
        .collect();
    if kept.len() == members.len() {
        return false;
    }
    let joined = kept.join(&b',');
    set_field(r, k, &joined);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_T: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
# a comment\n\
+@netgroup::::::\n\
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
bob:x:1001:1001::/home/bob:/bin/sh\n\
svc:x:998:998::/var/lib/svc:/usr/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
broken line\n\
carol:x:1002:100::/home/carol:/bin/bash\n";
    const SHADOW_T: &[u8] = b"root:$6$salt$hash:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n\
alice:$y$j9T$abc$def:19000:0:99999:7:::\n\
bob:!$6$s$h:19000:0:99999:7:::\n\
svc:$6$x$y:19000::::::\n\
nobody:*:19000:0:99999:7:::\n\
carol::19000:0:99999:7:::\n";
    const GROUP_T: &[u8] = b"root:x:0:\n\
daemon:x:1:\n\
users:x:100:carol\n\
sudo:x:27:alice,svc,bob\n\
alice:x:1000:\n\
bob:x:1001:\n\
svc:x:998:\n\
nogroup:x:65534:\n";
    const GSHADOW_T: &[u8] = b"root:*::\n\
sudo:*:alice:alice,svc,bob\n\
alice:!::\n\
bob:!::\n\
svc:$6$grp$hash::\n";
    const SUBUID_T: &[u8] = b"alice:100000:65536\n1001:165536:65536\nsvc:231072:65536\n";

    fn files() -> AccountFiles<'static> {
        AccountFiles {
            passwd: Some(PASSWD_T),
            group: Some(GROUP_T),
            shadow: Some(SHADOW_T),
            gshadow: Some(GSHADOW_T),
            subuid: Some(SUBUID_T),
            subgid: None,
            login_defs: None,
        }
    }

    #[test]
    fn facts_classify_humans_and_never_show_hashes() {
        let f = inspect(&files());
        let humans: Vec<&str> = f.humans().map(|a| a.name.as_str()).collect();
        assert_eq!(humans, ["alice", "bob", "carol"]);
        let alice = &f.accounts[2];
        assert_eq!(alice.password, PasswordState::Hash("yescrypt".into()));
        assert_eq!(alice.groups, ["sudo"]);
        assert_eq!(alice.primary_group.as_deref(), Some("alice"));
        assert_eq!(
            f.accounts[3].password,
            PasswordState::LockedWithHash("sha512".into())
        );
        assert_eq!(
            f.accounts
                .iter()
                .find(|a| a.name == "carol")
                .unwrap()
                .password,
            PasswordState::Empty
        );
        assert!(!f.accounts[1].login_shell);
        assert!(f.shadow_present && f.gshadow_present);
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        assert_eq!(f.warnings[0].line, Some(9));
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("$6$") && !json.contains("$y$"), "{json}");
    }

    #[test]
    fn login_defs_ranges() {
        let (r, w) = parse_login_defs(
            b"# comment\nUID_MIN\t\t 500\nUID_MAX 0x7530\nGID_MIN 0764\nGID_MAX lots\n",
        );
        assert_eq!(
            (r.uid_min, r.uid_max, r.gid_min, r.gid_max),
            (500, 30000, 500, 60000)
        );
        assert_eq!(w.len(), 1);
        let (r, w) = parse_login_defs(b"UID_MIN 70000\n");
        assert_eq!(r.uid_min, 1000);
        assert_eq!(w.len(), 1);
        assert!(is_human(
            "x",
            500,
            &IdRanges {
                uid_min: 500,
                ..Default::default()
            }
        ));
        assert!(!is_human("nobody", 1500, &IdRanges::default()));
        assert!(!is_human(
            "x",
            65534,
            &IdRanges {
                uid_max: 70000,
                ..Default::default()
            }
        ));
    }

    #[test]
    fn sanitize_removes_humans_and_locks_the_rest() {
        let out = sanitize(&files(), &SanitizeOptions::default());
        let passwd = String::from_utf8(out.passwd.unwrap()).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
# a comment\n\
+@netgroup::::::\n\
svc:x:998:998::/var/lib/svc:/usr/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
broken line\n"
        );
        let shadow = String::from_utf8(out.shadow.unwrap()).unwrap();
        assert_eq!(
            shadow,
            "root:*:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n\
svc:!:19000::::::\n\
nobody:*:19000:0:99999:7:::\n"
        );
        let group = String::from_utf8(out.group.unwrap()).unwrap();
        // carol's primary group is `users` (shared): it stays, without her.
        assert_eq!(
            group,
            "root:x:0:\ndaemon:x:1:\nusers:x:100:\nsudo:x:27:svc\nsvc:x:998:\nnogroup:x:65534:\n"
        );
        let gshadow = String::from_utf8(out.gshadow.unwrap()).unwrap();
        assert_eq!(gshadow, "root:*::\nsudo:*::svc\nsvc:!::\n");
        assert_eq!(
            String::from_utf8(out.subuid.unwrap()).unwrap(),
            "svc:231072:65536\n"
        );
        assert!(out.subgid.is_none());

        let r = out.report;
        let names: Vec<&str> = r.removed_accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert_eq!(r.removed_groups, ["alice", "bob"]);
        assert!(r
            .removed_memberships
            .contains(&("sudo".into(), "alice".into())));
        assert!(r
            .removed_memberships
            .contains(&("users".into(), "carol".into())));
        let locked: Vec<(&str, &str, &str)> = r
            .locked_passwords
            .iter()
            .map(|l| (l.file.as_str(), l.name.as_str(), l.now.as_str()))
            .collect();
        assert_eq!(
            locked,
            [
                (SHADOW, "root", "*"),
                (SHADOW, "svc", "!"),
                (GSHADOW, "svc", "!")
            ]
        );
        assert_eq!(r.removed_subid_lines.len(), 2);
        assert_eq!(r.changed_files, [PASSWD, GROUP, SHADOW, GSHADOW, SUBUID]);
        assert!(!serde_json::to_string(&r).unwrap().contains("$6$"));
    }

    #[test]
    fn keep_users_and_crlf_and_missing_final_newline() {
        let passwd = b"root:x:0:0:root:/root:/bin/bash\r\nalice:x:1000:1000::/home/alice:/bin/bash\r\nbob:x:1001:1001::/home/bob:/bin/bash";
        let shadow = b"root:$6$a$b:1:0:99999:7:::\r\nalice:$6$a$b:1:0:99999:7:::\r\nbob:$6$c$d:1:0:99999:7:::";
        let group = b"alice:x:1000:bob\r\nbob:x:1001:";
        let opts = SanitizeOptions {
            keep_users: ["alice".to_string()].into(),
        };
        let out = sanitize(
            &AccountFiles {
                passwd: Some(passwd),
                shadow: Some(shadow),
                group: Some(group),
                ..Default::default()
            },
            &opts,
        );
        assert_eq!(
            out.passwd.unwrap(),
            b"root:x:0:0:root:/root:/bin/bash\r\nalice:x:1000:1000::/home/alice:/bin/bash\r"
        );
        assert_eq!(
            out.shadow.unwrap(),
            b"root:*:1:0:99999:7:::\r\nalice:!:1:0:99999:7:::\r"
        );
        assert_eq!(out.group.unwrap(), b"alice:x:1000:\r");
    }

    #[test]
    fn nothing_to_do_leaves_files_identical() {
        let passwd = b"root:x:0:0:root:/root:/bin/bash\n#c\n\ndaemon:x:1:1::/:/usr/sbin/nologin\n";
        let shadow = b"root:*:1:0:99999:7:::\ndaemon:!!:1::::::\n";
        let out = sanitize(
            &AccountFiles {
                passwd: Some(passwd),
                shadow: Some(shadow),
                ..Default::default()
            },
            &SanitizeOptions::default(),
        );
        assert_eq!(out.passwd.unwrap(), passwd);
        assert_eq!(out.shadow.unwrap(), shadow);
        assert!(out.report.changed_files.is_empty());
    }

    #[test]
    fn password_states() {
        assert_eq!(password_state(b""), PasswordState::Empty);
        assert_eq!(password_state(b"*"), PasswordState::Locked);
        assert_eq!(password_state(b"!!"), PasswordState::Locked);
        assert_eq!(password_state(b"!*"), PasswordState::Locked);
        assert_eq!(password_state(b"x"), PasswordState::Shadowed);
        assert_eq!(password_state(b"$1$a$b"), PasswordState::Hash("md5".into()));
        assert_eq!(
            password_state(b"abcdefghijklm"),
            PasswordState::Hash("des".into())
        );
        assert_eq!(
            password_state(b"!abcdefghijklm"),
            PasswordState::LockedWithHash("des".into())
        );
        assert_eq!(
            password_state(b"$2b$10$x"),
            PasswordState::Hash("bcrypt".into())
        );
    }

    #[test]
    fn garbage_never_panics() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(4000).collect();
        let colons: Vec<u8> = junk
            .iter()
            .map(|&b| if b % 5 == 0 { b':' } else { b })
            .collect();
        for b in [&junk, &colons] {
            let f = AccountFiles {
                passwd: Some(b),
                group: Some(b),
                shadow: Some(b),
                gshadow: Some(b),
                subuid: Some(b),
                subgid: Some(b),
                login_defs: Some(b),
            };
            let _ = inspect(&f);
            let _ = sanitize(&f, &SanitizeOptions::default());
        }
    }
}
