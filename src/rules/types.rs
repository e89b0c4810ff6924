//! Small validated value types shared by the rules files. Each one checks its
//! value while it is deserialized, so a bad value is reported by the YAML reader
//! with its line and column.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `version:` key every rules file starts with. Only 1 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatVersion;

pub const FORMAT_VERSION: u32 = 1;

impl<'de> Deserialize<'de> for FormatVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == FORMAT_VERSION {
            Ok(FormatVersion)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported rules format version {v}: this imgsan reads version {FORMAT_VERSION}"
            )))
        }
    }
}

impl Serialize for FormatVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(FORMAT_VERSION)
    }
}

/// Free text that must be written as text: a plain `1.10` would be read as the
/// number 1.1, and `yes` as a boolean, so numbers and booleans are refused with
/// a hint to quote them. Control characters other than tab and newline (a NUL,
/// a terminal escape) are refused too: no field of a request means them, and
/// they would reach reports and terminals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                if let Some(c) = v
                    .chars()
                    .find(|&c| c.is_control() && c != '\n' && c != '\t')
                {
                    return Err(E::custom(format!(
                        "the text holds the control character {c:?}; remove it"
                    )));
                }
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
                Err(E::custom(format!(
                    "this is read as the number {v}, not as text: put it in quotes (\"1.10\" stays 1.10; a bare 1.10 is the number 1.1)"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Err(E::custom(format!(
                    "this is read as the number {v}, not as text: put it in quotes"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Err(E::custom(format!(
                    "this is read as the number {v}, not as text: put it in quotes"
                )))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
                Err(E::custom(format!(
                    "this is read as the boolean {v}, not as text: put it in quotes"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Which kind of rules file a document is (its `kind:` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Policy,
    Eol,
    Denylist,
    Sanitize,
    FeaturedNames,
    Request,
    /// An `imgsan batch` manifest (src/batch/manifest.rs).
    Batch,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Policy,
        Kind::Eol,
        Kind::Denylist,
        Kind::Sanitize,
        Kind::FeaturedNames,
        Kind::Request,
        Kind::Batch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::Eol => "eol",
            Kind::Denylist => "denylist",
            Kind::Sanitize => "sanitize",
            Kind::FeaturedNames => "featured-names",
            Kind::Request => "request",
            Kind::Batch => "batch",
        }
    }

    /// The default file name of this kind in a rules directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Policy => "policy.yaml",
            Kind::Eol => "eol.yaml",
            Kind::Denylist => "denylist.yaml",
            Kind::Sanitize => "sanitize.yaml",
            Kind::FeaturedNames => "featured-names.yaml",
            Kind::Request => "request.yaml",
            Kind::Batch => "batch.yaml",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The distribution base an OS family belongs to: it picks file templates and
/// conventions (rules' `bases:` filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    Debian,
    Rhel,
}

impl Base {
    pub const ALL: [Base; 2] = [Base::Debian, Base::Rhel];
    pub fn as_str(self) -> &'static str {
        match self {
            Base::Debian => "debian",
            Base::Rhel => "rhel",
        }
    }
}

fn glob_builder(pattern: &str) -> globset::GlobBuilder<'_> {
    let mut b = globset::GlobBuilder::new(pattern);
    // "*" stays inside one path component; "**" crosses components. Without
    // this, /home/*/x would also match /home/a/b/x.
    b.literal_separator(true).backslash_escape(true);
    b
}

/// A glob on absolute guest paths, compiled once when read.
#[derive(Debug, Clone)]
pub struct PathGlob {
    text: String,
    glob: globset::Glob,
}

impl PathGlob {
    pub fn new(pattern: &str) -> Result<PathGlob, String> {
        if !pattern.starts_with('/') {
            return Err(format!(
                "`{pattern}` is not an absolute path: guest paths start with /"
            ));
        }
        if pattern.len() > 1 && pattern.ends_with('/') {
            return Err(format!("`{pattern}`: remove the trailing /"));
        }
        if pattern.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!(
                "`{pattern}`: . and .. are not allowed in rule paths"
            ));
        }
        let glob = glob_builder(pattern)
            .build()
            .map_err(|e| format!("`{pattern}` is not a valid glob: {}", e.kind()))?;
        Ok(PathGlob {
            text: pattern.to_string(),
            glob,
        })
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn glob(&self) -> &globset::Glob {
        &self.glob
    }
    /// True when the pattern has no glob metacharacter: it names one path.
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', '{', '\\'])
    }
}

impl PartialEq for PathGlob {
    fn eq(&self, o: &Self) -> bool {
        self.text == o.text
    }
}

impl<'de> Deserialize<'de> for PathGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathGlob::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PathGlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A case-insensitive glob on package names.
#[derive(Debug, Clone)]
pub struct NameGlob {
    text: String,
    glob: globset::Glob,
}

impl NameGlob {
    pub fn new(pattern: &str) -> Result<NameGlob, String> {
        if pattern.is_empty() || pattern.contains(char::is_whitespace) || pattern.contains('/') {
            return Err(format!(
                "`{pattern}` is not a package name pattern (no spaces or /)"
            ));
        }
        let glob = glob_builder(pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| format!("`{pattern}` is not a valid glob: {}", e.kind()))?;
        Ok(NameGlob {
            text: pattern.to_string(),
            glob,
        })
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn glob(&self) -> &globset::Glob {
        &self.glob
    }
}

impl PartialEq for NameGlob {
    fn eq(&self, o: &Self) -> bool {
        self.text == o.text
    }
}

impl<'de> Deserialize<'de> for NameGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NameGlob::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for NameGlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// An OS release number as the policy writes it: "7" (a major version, which
/// covers every minor release) or "16.04" (major.minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OsVersion {
    pub major: u32,
    pub minor: Option<u32>,
}

impl OsVersion {
    pub fn parse(s: &str) -> Result<OsVersion, String> {
        let bad = || {
            format!("`{s}` is not a release number: expected \"MAJOR\" or \"MAJOR.MINOR\", quoted")
        };
        let (maj, min) = match s.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 9 && t.bytes().all(|c| c.is_ascii_digit());
        if !digits(maj) || !min.is_none_or(digits) {
            return Err(bad());
        }
        let major = maj.parse().map_err(|_| bad())?;
        let minor = match min {
            Some(m) => Some(m.parse().map_err(|_| bad())?),
            None => None,
        };
        Ok(OsVersion { major, minor })
    }

    /// The (major, minor) pair used for ordering; a missing minor counts as 0.
    pub fn key(self) -> (u32, u32) {
        (self.major, self.minor.unwrap_or(0))
    }

    /// Whether a guest release `(major, minor)` is this release: a major-only
    /// entry covers all its minors.
    pub fn covers(self, major: u32, minor: Option<u32>) -> bool {
        match self.minor {
            None => self.major == major,
            Some(m) => self.major == major && minor == Some(m),
        }
    }
}

impl fmt::Display for OsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            // Ubuntu writes its minors with two digits (16.04).
            Some(m) => write!(f, "{}.{:02}", self.major, m),
            None => write!(f, "{}", self.major),
        }
    }
}

impl<'de> Deserialize<'de> for OsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OsVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for OsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Permission bits written as an octal string ("0755").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.strip_prefix("0o").unwrap_or(&s);
        if t.is_empty() || t.len() > 5 || !t.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is not a file mode: expected octal digits such as \"0755\""
            )));
        }
        let v = u32::from_str_radix(t, 8).map_err(serde::de::Error::custom)?;
        if v > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "`{s}`: a file mode is at most 07777"
            )));
        }
        Ok(FileMode(v))
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:04o}", self.0))
    }
}

/// A blake3 digest written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blake3Hex(pub [u8; 32]);

impl Blake3Hex {
    pub fn parse(s: &str) -> Result<Blake3Hex, String> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(format!(
                "`{s}` is not a blake3 hash: expected 64 hex digits"
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (hex(pair[0]), hex(pair[1]), out.get_mut(i)) {
                (Some(h), Some(l), Some(slot)) => *slot = u8::try_from(h * 16 + l).unwrap_or(0),
                _ => {
                    return Err(format!(
                        "`{s}` is not a blake3 hash: expected 64 hex digits"
                    ))
                }
            }
        }
        Ok(Blake3Hex(out))
    }
}

impl fmt::Display for Blake3Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Blake3Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Blake3Hex::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Blake3Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `s` is a valid identifier for rules, denylist entries and families:
/// lower-case ASCII letters, digits and hyphens, starting with a letter.
pub fn is_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= 64
        && bytes.all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_versions() {
        assert_eq!(
            OsVersion::parse("16.04").unwrap(),
            OsVersion {
                major: 16,
                minor: Some(4)
            }
        );
        assert_eq!(OsVersion::parse("7").unwrap().to_string(), "7");
        assert_eq!(OsVersion::parse("18.10").unwrap().to_string(), "18.10");
        for bad in ["", "7.", ".4", "a", "7.x", "1.2.3", "-1", "9999999999"] {
            assert!(OsVersion::parse(bad).is_err(), "{bad}");
        }
        let v = OsVersion::parse("7").unwrap();
        assert!(v.covers(7, Some(9)) && v.covers(7, None) && !v.covers(8, None));
        let u = OsVersion::parse("20.04").unwrap();
        assert!(u.covers(20, Some(4)) && !u.covers(20, Some(10)) && !u.covers(20, None));
    }

    #[test]
    fn globs() {
        assert!(PathGlob::new("relative/x").is_err());
        assert!(PathGlob::new("/a/[b").is_err());
        assert!(PathGlob::new("/a/../b").is_err());
        assert!(PathGlob::new("/a/").is_err());
        let g = PathGlob::new("/home/*/x").unwrap().glob().compile_matcher();
        assert!(g.is_match("/home/a/x"));
        assert!(!g.is_match("/home/a/b/x"));
        let g = PathGlob::new("/**/vasp_std")
            .unwrap()
            .glob()
            .compile_matcher();
        assert!(g.is_match("/vasp_std"));
        assert!(g.is_match("/opt/vasp/bin/vasp_std"));
        assert!(!g.is_match("/opt/vasp/bin/vasp_std2"));
        let n = NameGlob::new("MATLAB*").unwrap().glob().compile_matcher();
        assert!(n.is_match("matlab-r2023a"));
        assert!(NameGlob::new("a b").is_err());
    }

    #[test]
    fn idents_and_hashes() {
        assert!(is_ident("ssh-host-keys") && is_ident("a1"));
        assert!(!is_ident("") && !is_ident("1a") && !is_ident("A") && !is_ident("a_b"));
        let h = blake3::hash(b"x");
        let text = h.to_hex().to_string();
        assert_eq!(Blake3Hex::parse(&text).unwrap().0, *h.as_bytes());
        assert!(Blake3Hex::parse(&text[1..]).is_err());
        assert!(Blake3Hex::parse(&format!("{}g", &text[1..])).is_err());
    }
}
