//! Identifies the guest's operating system from its release files:
//! /etc/os-release (or /usr/lib/os-release), completed or replaced by
//! /etc/centos-release, /etc/redhat-release, /etc/lsb-release and
//! /etc/debian_version.
//!
//! os-release is a list of shell-style assignments (os-release(5)): values may be
//! bare, double-quoted (with `\` escaping `$ " \ \``) or single-quoted. CentOS 7's
//! os-release carries only the major version ("7"); the point release lives in
//! centos-release ("CentOS Linux release 7.9.2009 (Core)"), so rhel-family versions
//! are completed from there.
//!
//! It reads bytes, not files, and knows nothing of which versions a policy allows.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::inspect::{FileSource, Warning};

/// The release files, as read from the guest (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseFiles<'a> {
    pub etc_os_release: Option<&'a [u8]>,
    pub usr_lib_os_release: Option<&'a [u8]>,
    pub centos_release: Option<&'a [u8]>,
    pub redhat_release: Option<&'a [u8]>,
    pub lsb_release: Option<&'a [u8]>,
    pub debian_version: Option<&'a [u8]>,
}

/// Guest paths of the release files, in the order they are consulted.
pub const RELEASE_PATHS: [&str; 6] = [
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/centos-release",
    "/etc/redhat-release",
    "/etc/lsb-release",
    "/etc/debian_version",
];

/// Distribution family, for policies that treat rebuilds alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Rhel,
    Other,
}

/// A version cut to major.minor. `text` keeps the distribution's spelling
/// ("16.04", not "16.4"); comparisons use the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: Option<u32>,
    pub text: String,
}

impl Version {
    /// Parses the leading `major[.minor]` of a version string ("7.9.2009" gives
    /// 7.9, "16.04" gives 16.04, "12" gives 12). `None` when it does not start with
    /// a number.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let major_s = parts.next()?;
        let major: u32 = major_s.parse().ok()?;
        let minor_s = parts
            .next()
            .map(|m| m.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
            .filter(|m| !m.is_empty());
        let minor = match minor_s {
            Some(m) => Some(m.parse().ok()?),
            None => None,
        };
        let text = match minor_s {
            Some(m) => format!("{major_s}.{m}"),
            None => major_s.to_string(),
        };
        Some(Version { major, minor, text })
    }

    /// (major, minor) for ordering, a missing minor counting as 0.
    pub fn key(&self) -> (u32, u32) {
        (self.major, self.minor.unwrap_or(0))
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// What the release files say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OsInfo {
    /// Lower-case distribution id: ubuntu, debian, centos, rocky, almalinux, rhel,
    /// fedora, ...
    pub id: String,
    pub id_like: Vec<String>,
    pub family: Family,
    pub name: Option<String>,
    pub pretty_name: Option<String>,
    /// major.minor, completed from centos-release/redhat-release/debian_version
    /// when os-release has only the major.
    pub version: Option<Version>,
    /// The most precise version string found ("7.9.2009", "16.04.7", "12.11").
    pub full_version: Option<String>,
    pub codename: Option<String>,
    /// The guest file the id came from.
    pub source: String,
    pub warnings: Vec<Warning>,
}

/// Parses os-release-style assignments (also used for lsb-release). Malformed
/// lines are skipped with a warning; later assignments override earlier ones.
pub fn parse_assignments(bytes: &[u8], file: &str) -> (BTreeMap<String, String>, Vec<Warning>) {
    let mut vars = BTreeMap::new();
    let mut warnings = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            warnings.push(Warning::at_line(file, i + 1, "not a KEY=value line"));
            continue;
        };
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            warnings.push(Warning::at_line(
                file,
                i + 1,
                format!("invalid variable name {key:?}"),
            ));
            continue;
        }
        match unquote(value) {
            Ok(v) => {
                vars.insert(key.to_string(), v);
            }
            Err(why) => warnings.push(Warning::at_line(file, i + 1, why)),
        }
    }
    (vars, warnings)
}

/// Undoes shell quoting of one assignment's right-hand side.
fn unquote(value: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated double quote".into()),
                    Some('"') => break,
                    Some('\\') => match chars.peek() {
                        Some(&n @ ('$' | '"' | '\\' | '`')) => {
                            out.push(n);
                            chars.next();
                        }
                        _ => out.push('\\'),
                    },
                    Some(x) => out.push(x),
                }
            },
            '\'' => loop {
                match chars.next() {
                    None => return Err("unterminated single quote".into()),
                    Some('\'') => break,
                    Some(x) => out.push(x),
                }
            },
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if c.is_whitespace() => {
                // An unquoted blank ends the word; only a comment may follow.
                let rest: String = chars.collect();
                let rest = rest.trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    return Err(format!("unquoted text after the value: {rest:?}"));
                }
                break;
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Parses a `<name> release <version> (<codename>)` line, as in centos-release
/// and redhat-release. Returns (id, name, full version, codename).
fn parse_release_line(bytes: &[u8]) -> Option<(String, String, String, Option<String>)> {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_string();
    let (name, rest) = line.split_once(" release ")?;
    let mut words = rest.split_whitespace();
    let version = words.next()?.to_string();
    let codename = rest
        .split_once('(')
        .and_then(|(_, c)| c.split_once(')'))
        .map(|(c, _)| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let name = name.trim().to_string();
    Some((id_from_name(&name), name, version, codename))
}

/// Maps a release-file product name to the os-release id the distribution uses.
fn id_from_name(name: &str) -> String {
    const KNOWN: [(&str, &str); 9] = [
        ("CentOS", "centos"),
        ("Red Hat Enterprise Linux", "rhel"),
        ("Rocky Linux", "rocky"),
        ("AlmaLinux", "almalinux"),
        ("Fedora", "fedora"),
        ("Scientific Linux", "scientific"),
        ("Oracle Linux", "ol"),
        ("CloudLinux", "cloudlinux"),
        ("Amazon Linux", "amzn"),
    ];
    KNOWN
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| {
            name.split_whitespace()
                .next()
                .unwrap_or("unknown")
                .to_ascii_lowercase()
        })
}

/// The family of an id and its ID_LIKE list. Fedora is not a RHEL rebuild and
/// stays "other"; anything that names rhel or centos as an ancestor is rhel.
pub fn family_of(id: &str, id_like: &[String]) -> Family {
    let debian = ["debian", "ubuntu"];
    let rhel = [
        "rhel",
        "centos",
        "rocky",
        "almalinux",
        "ol",
        "scientific",
        "cloudlinux",
        "eurolinux",
    ];
    if debian.contains(&id) || id_like.iter().any(|l| debian.contains(&l.as_str())) {
        Family::Debian
    } else if rhel.contains(&id) || id_like.iter().any(|l| l == "rhel" || l == "centos") {
        Family::Rhel
    } else {
        Family::Other
    }
}

/// Text between the first parentheses of VERSION ("18.04.6 LTS (Bionic Beaver)").
fn parenthesized(s: &str) -> Option<String> {
    let (_, rest) = s.split_once('(')?;
    let (inner, _) = rest.split_once(')')?;
    Some(inner.trim().to_string()).filter(|c| !c.is_empty())
}

fn nonempty(s: Option<&String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Identifies the OS. `None` when no release file says anything usable.
pub fn identify(files: &ReleaseFiles) -> Option<OsInfo> {
    let (os_release, os_path) = match (files.etc_os_release, files.usr_lib_os_release) {
        (Some(b), _) => (Some(b), "/etc/os-release"),
        (None, Some(b)) => (Some(b), "/usr/lib/os-release"),
        (None, None) => (None, ""),
    };
    let rh = files
        .centos_release
        .and_then(parse_release_line)
        .map(|r| (r, "/etc/centos-release"))
        .or_else(|| {
            files
                .redhat_release
                .and_then(parse_release_line)
                .map(|r| (r, "/etc/redhat-release"))
        });
    let debian_version = files
        .debian_version
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty());

    let mut info = if let Some(bytes) = os_release {
        let (vars, warnings) = parse_assignments(bytes, os_path);
        let id = nonempty(vars.get("ID"))
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_else(|| "linux".to_string());
        let id_like: Vec<String> = vars
            .get("ID_LIKE")
            .map(|s| {
                s.split_whitespace()
                    .map(|w| w.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let version_text = nonempty(vars.get("VERSION"));
        let full_version = version_text
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string)
            .or_else(|| nonempty(vars.get("VERSION_ID")));
        OsInfo {
            family: family_of(&id, &id_like),
            id,
            id_like,
            name: nonempty(vars.get("NAME")),
            pretty_name: nonempty(vars.get("PRETTY_NAME")),
            version: nonempty(vars.get("VERSION_ID")).and_then(|v| Version::parse(&v)),
            full_version,
            codename: nonempty(vars.get("VERSION_CODENAME"))
                .or_else(|| nonempty(vars.get("UBUNTU_CODENAME")))
                .or_else(|| version_text.as_deref().and_then(parenthesized)),
            source: os_path.to_string(),
            warnings,
        }
    } else if let Some(((id, name, version, codename), path)) = rh.clone() {
        OsInfo {
            family: family_of(&id, &[]),
            id,
            id_like: Vec::new(),
            pretty_name: Some(
                String::from_utf8_lossy(
                    files
                        .centos_release
                        .or(files.redhat_release)
                        .unwrap_or_default(),
                )
                .trim()
                .to_string(),
            ),
            name: Some(name),
            version: Version::parse(&version),
            full_version: Some(version),
            codename,
            source: path.to_string(),
            warnings: Vec::new(),
        }
    } else if let Some(bytes) = files.lsb_release {
        let (vars, warnings) = parse_assignments(bytes, "/etc/lsb-release");
        let id = nonempty(vars.get("DISTRIB_ID"))?.to_ascii_lowercase();
        let release = nonempty(vars.get("DISTRIB_RELEASE"));
        OsInfo {
            family: family_of(&id, &[]),
            name: nonempty(vars.get("DISTRIB_ID")),
            pretty_name: nonempty(vars.get("DISTRIB_DESCRIPTION")),
            version: release.as_deref().and_then(Version::parse),
            full_version: release,
            codename: nonempty(vars.get("DISTRIB_CODENAME")),
            id,
            id_like: Vec::new(),
            source: "/etc/lsb-release".to_string(),
            warnings,
        }
    } else if let Some(dv) = &debian_version {
        let numeric = Version::parse(dv);
        OsInfo {
            id: "debian".to_string(),
            id_like: Vec::new(),
            family: Family::Debian,
            name: Some("Debian GNU/Linux".to_string()),
            pretty_name: None,
            full_version: numeric.as_ref().map(|_| dv.clone()),
            // "bookworm/sid" on testing and unstable.
            codename: dv.split_once('/').map(|(c, _)| c.to_string()),
            version: numeric,
            source: "/etc/debian_version".to_string(),
            warnings: Vec::new(),
        }
    } else {
        return None;
    };

    // Complete a major-only version from the more precise files, when they agree
    // on the major.
    let needs_minor = info.version.as_ref().is_none_or(|v| v.minor.is_none());
    if needs_minor {
        let precise = match info.family {
            Family::Rhel => rh.as_ref().map(|((_, _, v, _), _)| v.clone()),
            Family::Debian if info.id == "debian" => debian_version.clone(),
            _ => None,
        };
        if let Some(full) = precise {
            if let Some(v) = Version::parse(&full) {
                let agrees = info.version.as_ref().is_none_or(|old| old.major == v.major);
                if agrees && v.minor.is_some() {
                    info.version = Some(v);
                    info.full_version = Some(full);
                }
            }
        }
    }
    Some(info)
}

/// Reads the release files through a [`FileSource`] and identifies the OS.
pub fn identify_guest(src: &dyn FileSource) -> Result<Option<OsInfo>> {
    let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(RELEASE_PATHS.len());
    for path in RELEASE_PATHS {
        contents.push(src.read(path)?);
    }
    let get = |i: usize| contents[i].as_deref();
    Ok(identify(&ReleaseFiles {
        etc_os_release: get(0),
        usr_lib_os_release: get(1),
        centos_release: get(2),
        redhat_release: get(3),
        lsb_release: get(4),
        debian_version: get(5),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_is_undone() {
        let (v, w) = parse_assignments(
            b"A=plain\nB=\"double \\\"q\\\" \\$x \\n\"\nC='single \\ kept'\nD=back\\ slash\n# c\n\nE=\"x\" # trailing comment\n",
            "f",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(v["A"], "plain");
        assert_eq!(v["B"], "double \"q\" $x \\n");
        assert_eq!(v["C"], "single \\ kept");
        assert_eq!(v["D"], "back slash");
        assert_eq!(v["E"], "x");
    }

    #[test]
    fn malformed_lines_are_warnings_with_line_numbers() {
        let (v, w) = parse_assignments(b"ID=ok\nno equals\n1X=bad\nQ=\"open\nR=a b\n", "os");
        assert_eq!(v.len(), 1);
        let lines: Vec<Option<usize>> = w.iter().map(|w| w.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5)]);
    }

    #[test]
    fn versions_keep_their_spelling_and_compare_numerically() {
        let v = Version::parse("16.04").unwrap();
        assert_eq!((v.major, v.minor, v.text.as_str()), (16, Some(4), "16.04"));
        assert_eq!(Version::parse("7.9.2009").unwrap().text, "7.9");
        assert_eq!(Version::parse("12").unwrap().minor, None);
        assert!(Version::parse("16.10").unwrap().key() > Version::parse("16.04").unwrap().key());
        assert!(Version::parse("bookworm/sid").is_none());
        assert!(Version::parse("").is_none());
    }

    #[test]
    fn centos_release_alone_identifies_centos() {
        let files = ReleaseFiles {
            centos_release: Some(b"CentOS release 6.10 (Final)\n"),
            ..Default::default()
        };
        let os = identify(&files).unwrap();
        assert_eq!(os.id, "centos");
        assert_eq!(os.family, Family::Rhel);
        assert_eq!(os.version.unwrap().text, "6.10");
        assert_eq!(os.codename.as_deref(), Some("Final"));
        assert_eq!(os.source, "/etc/centos-release");
    }

    #[test]
    fn redhat_release_names_map_to_ids() {
        for (line, id) in [
            (
                "Red Hat Enterprise Linux Server release 7.9 (Maipo)",
                "rhel",
            ),
            ("AlmaLinux release 8.10 (Cerulean Leopard)", "almalinux"),
            ("Rocky Linux release 9.5 (Blue Onyx)", "rocky"),
        ] {
            let files = ReleaseFiles {
                redhat_release: Some(line.as_bytes()),
                ..Default::default()
            };
            assert_eq!(identify(&files).unwrap().id, id, "{line}");
        }
    }

    #[test]
    fn debian_version_alone_and_testing_codenames() {
        let os = identify(&ReleaseFiles {
            debian_version: Some(b"bookworm/sid\n"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(os.codename.as_deref(), Some("bookworm"));
        assert_eq!(os.version, None);
        let os = identify(&ReleaseFiles {
            debian_version: Some(b"9.13\n"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(os.version.unwrap().text, "9.13");
    }

    #[test]
    fn a_disagreeing_centos_release_does_not_override() {
        let os = identify(&ReleaseFiles {
            etc_os_release: Some(b"ID=centos\nVERSION_ID=8\n"),
            centos_release: Some(b"CentOS Linux release 7.9.2009 (Core)\n"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(os.version.unwrap().text, "8");
    }

    #[test]
    fn nothing_is_none_and_garbage_does_not_panic() {
        assert!(identify(&ReleaseFiles::default()).is_none());
        let junk: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = identify(&ReleaseFiles {
            etc_os_release: Some(&junk),
            centos_release: Some(&junk),
            lsb_release: Some(&junk),
            debian_version: Some(&junk),
            ..Default::default()
        });
    }
}
