//! Post-boot scripts (`/etc/atmo/post-scripts.d` by default): each one starts
//! with the required interpreter line, and the scripts and the folder carry the
//! required permission bits (0755). The cloud runs them as root at first boot.

use serde::{Deserialize, Serialize};

use crate::rules::Policy;

use super::{finding, Finding};

pub const IDS: &[&str] = &[
    "post-scripts.first-line",
    "post-scripts.mode",
    "post-scripts.dir-mode",
    "post-scripts.not-regular",
];

/// What an entry of the scripts folder is. Symlinks are allowed (the
/// guidelines say "create or symlink"); the caller resolves them inside the
/// guest and reports the target's mode and first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Regular,
    SymlinkToRegular,
    /// Anything else, described for the message: "directory", "dangling
    /// symlink", "fifo", ...
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostScript {
    /// Guest path of the entry.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (of the target, for a symlink).
    pub mode: u32,
    /// The first line's bytes without the newline; `None` when the file is
    /// empty or could not be read. JSON shows it as text (invalid UTF-8
    /// replaced), so reports stay readable.
    #[serde(with = "line_as_text")]
    pub first_line: Option<Vec<u8>>,
}

/// Serde for a first line: a string in JSON, bytes in memory.
mod line_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&String::from_utf8_lossy(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(String::into_bytes))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostScriptsFacts {
    /// The folder's permission bits; `None` when the folder does not exist (then
    /// there is nothing to check).
    pub dir_mode: Option<u32>,
    pub scripts: Vec<PostScript>,
}

/// Whether `mode` has every bit of `required` and no group/other write bit: the
/// scripts run as root, so a script others can write is a way to root.
fn mode_ok(mode: u32, required: u32) -> bool {
    mode & required == required && mode & 0o022 == 0
}

fn first_line_ok(line: &[u8], want: &str) -> bool {
    let want = want.as_bytes();
    // "#!/bin/bash -e" is still bash; "#!/bin/bashful" is not.
    line == want || (line.starts_with(want) && line.get(want.len()) == Some(&b' '))
}

pub fn check_post_scripts(policy: &Policy, facts: &PostScriptsFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let rules = &policy.post_scripts;
    let Some(dir_mode) = facts.dir_mode else {
        return out;
    };
    let want = rules.mode.0;
    if !mode_ok(dir_mode, want) {
        out.extend(
            finding(
                policy,
                "post-scripts.dir-mode",
                format!(
                    "{} has mode {dir_mode:04o}; {want:04o} is required",
                    rules.dir
                ),
            )
            .map(|f| {
                f.with_evidence([rules.dir.clone()])
                    .hint(format!("chmod {want:04o} {}", rules.dir))
            }),
        );
    }
    for s in &facts.scripts {
        if let EntryKind::Other(what) = &s.kind {
            out.extend(
                finding(
                    policy,
                    "post-scripts.not-regular",
                    format!("{} is a {what}, not a script", s.path),
                )
                .map(|f| {
                    f.with_evidence([s.path.clone()])
                        .hint("put only script files (or symlinks to them) in the folder")
                }),
            );
            continue;
        }
        if !mode_ok(s.mode, want) {
            let why = if s.mode & 0o022 != 0 {
                " (writable by group or others)"
            } else {
                ""
            };
            out.extend(
                finding(
                    policy,
                    "post-scripts.mode",
                    format!(
                        "{} has mode {:04o}{why}; {want:04o} is required",
                        s.path, s.mode
                    ),
                )
                .map(|f| {
                    f.with_evidence([s.path.clone()])
                        .hint(format!("chmod {want:04o} {}", s.path))
                }),
            );
        }
        let line = s.first_line.as_deref();
        if !line.is_some_and(|l| first_line_ok(l, &rules.first_line)) {
            let (seen, extra) = match line {
                None => ("an empty or unreadable file".to_string(), ""),
                Some(l) if l.ends_with(b"\r") && first_line_ok(&l[..l.len() - 1], &rules.first_line) => {
                    (format!("{:?}", String::from_utf8_lossy(l)), " (Windows line endings: the kernel looks for an interpreter named \"bash\\r\")")
                }
                Some(l) => (format!("{:?}", String::from_utf8_lossy(&l[..l.len().min(120)])), ""),
            };
            out.extend(
                finding(
                    policy,
                    "post-scripts.first-line",
                    format!(
                        "{} must start with {:?}, found {seen}{extra}",
                        s.path, rules.first_line
                    ),
                )
                .map(|f| {
                    f.with_evidence([format!("{}:1", s.path)])
                        .hint(format!("make the first line exactly {}", rules.first_line))
                }),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn script(name: &str, mode: u32, line: Option<&[u8]>) -> PostScript {
        PostScript {
            path: format!("/etc/atmo/post-scripts.d/{name}"),
            kind: EntryKind::Regular,
            mode,
            first_line: line.map(<[u8]>::to_vec),
        }
    }
    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.check_id.as_str()).collect()
    }

    #[test]
    fn good_scripts_pass_and_missing_folder_is_nothing() {
        let rs = RuleSet::embedded().unwrap();
        assert!(check_post_scripts(&rs.policy, &PostScriptsFacts::default()).is_empty());
        let mut link = script("b.sh", 0o755, Some(b"#!/bin/bash -e"));
        link.kind = EntryKind::SymlinkToRegular;
        let facts = PostScriptsFacts {
            dir_mode: Some(0o755),
            scripts: vec![
                script("a.sh", 0o755, Some(b"#!/bin/bash")),
                link,
                script("c", 0o775 & !0o020, Some(b"#!/bin/bash")),
            ],
        };
        assert!(check_post_scripts(&rs.policy, &facts).is_empty());
    }

    #[test]
    fn each_problem_is_reported() {
        let rs = RuleSet::embedded().unwrap();
        let facts = PostScriptsFacts {
            dir_mode: Some(0o700),
            scripts: vec![
                script("mode", 0o644, Some(b"#!/bin/bash")),
                script("world", 0o777, Some(b"#!/bin/bash")),
                script("sh", 0o755, Some(b"#!/bin/sh")),
                script("crlf", 0o755, Some(b"#!/bin/bash\r")),
                script("bashful", 0o755, Some(b"#!/bin/bashful")),
                script("empty", 0o755, None),
                PostScript {
                    path: "/etc/atmo/post-scripts.d/dir".into(),
                    kind: EntryKind::Other("directory".into()),
                    mode: 0o755,
                    first_line: None,
                },
            ],
        };
        let f = check_post_scripts(&rs.policy, &facts);
        assert_eq!(
            ids(&f),
            [
                "post-scripts.dir-mode",
                "post-scripts.mode",
                "post-scripts.mode",
                "post-scripts.first-line",
                "post-scripts.first-line",
                "post-scripts.first-line",
                "post-scripts.first-line",
                "post-scripts.not-regular"
            ]
        );
        assert!(f[2].message.contains("writable by group or others"));
        assert!(
            f[4].message.contains("Windows line endings"),
            "{}",
            f[4].message
        );
    }
}
