//! Guest facts: pure parsers over the bytes of files read from a guest (OS release,
//! users and groups, installed packages, fstab) and the text transforms the sanitize
//! step applies to account files.
//!
//! Nothing here knows about disks, filesystems, path resolution or policy. Callers
//! hand in file contents (`&[u8]`), or a [`FileSource`] that answers "what bytes does
//! this guest path hold", and get back serializable facts. Text files are parsed
//! leniently (a malformed line becomes a [`Warning`], the rest still counts); binary
//! databases return typed errors naming the structure and the byte offset.

pub mod dpkg;
pub mod fstab;
pub mod os;
pub mod rpm;
pub mod software;
pub mod users;

use std::collections::BTreeMap;

use crate::error::Result;

/// Gives the bytes of a file in the guest, by absolute guest path.
///
/// `Ok(None)` means the file does not exist (or is not a regular file); `Err` means
/// it exists but could not be read (a corrupt inode, an I/O error), which callers
/// report rather than treat as absence.
pub trait FileSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;
}

impl<F> FileSource for F
where
    F: Fn(&str) -> Result<Option<Vec<u8>>>,
{
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self(path)
    }
}

/// A [`FileSource`] backed by a map from guest path to contents, for tests and for
/// callers that already hold the few files they care about.
#[derive(Debug, Clone, Default)]
pub struct MapSource {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MapSource {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.to_string(), contents.into());
        self
    }
}

impl FileSource for MapSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.files.get(path).cloned())
    }
}

/// Something a lenient parser skipped or doubted, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// The guest file (or database) the warning is about.
    pub file: String,
    /// 1-based line number for text files; `None` for binary structures.
    pub line: Option<usize>,
    pub message: String,
}

impl Warning {
    pub fn at_line(file: &str, line: usize, message: impl Into<String>) -> Self {
        Warning {
            file: file.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }

    pub fn in_file(file: &str, message: impl Into<String>) -> Self {
        Warning {
            file: file.to_string(),
            line: None,
            message: message.into(),
        }
    }
}

/// Splits text into lines the way the account and fstab tools see them: on `\n`,
/// keeping every byte of each line except the terminator. The returned flag says
/// whether the last line had a terminator, so a rewrite can reproduce the file
/// byte for byte.
pub(crate) fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    if bytes.is_empty() {
        return (Vec::new(), true);
    }
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let body = if ends_with_newline {
        &bytes[..bytes.len() - 1]
    } else {
        bytes
    };
    (body.split(|&b| b == b'\n').collect(), ends_with_newline)
}

/// The exact bytes of one line of a guest text file (without its `\n`), kept so
/// that a rewrite reproduces untouched lines byte for byte. Serializes as lossy
/// UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RawLine(pub Vec<u8>);

impl RawLine {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn text(&self) -> String {
        lossy(&self.0)
    }
}

impl serde::Serialize for RawLine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Joins lines with `\n`, adding a final one when the original had it.
pub(crate) fn join_lines<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    final_newline: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut any = false;
    for (i, l) in lines.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(l);
        any = true;
    }
    if any && final_newline {
        out.push(b'\n');
    }
    out
}

/// Lossy UTF-8 for display and JSON; guest text is almost always ASCII.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_remembers_the_missing_final_newline() {
        assert_eq!(split_lines(b"a\nb\n"), (vec![&b"a"[..], b"b"], true));
        assert_eq!(split_lines(b"a\nb"), (vec![&b"a"[..], b"b"], false));
        assert_eq!(split_lines(b"\n"), (vec![&b""[..]], true));
        assert_eq!(split_lines(b""), (vec![], true));
    }

    #[test]
    fn closures_are_file_sources() {
        let src =
            |p: &str| -> Result<Option<Vec<u8>>> { Ok((p == "/etc/x").then(|| b"hi".to_vec())) };
        assert_eq!(src.read("/etc/x").unwrap(), Some(b"hi".to_vec()));
        assert_eq!(src.read("/etc/y").unwrap(), None);
    }
}
