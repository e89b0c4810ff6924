//! The library's error type. It keeps the kinds of failure apart so that the CLI can
//! say *what* went wrong and *where*, and map each kind to its own exit code:
//! I/O, not-this-format, corrupt (with a location), checksum mismatch (with a
//! location), unsupported (with the feature's name). Nothing here knows about exit
//! codes; that mapping lives in the binary.

use std::fmt;
use std::path::PathBuf;

/// Where in the input a problem was found. Offsets are in bytes from the start of
/// the structure's container (the image file, or the volume for filesystem
/// structures; the error's context says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A byte offset.
    Byte(u64),
    /// A filesystem block number.
    Block(u64),
    /// An inode number.
    Inode(u64),
    /// A byte offset inside an inode's data or metadata.
    InodeByte(u64, u64),
    /// An index in a table (L1/L2 entry, partition entry, group descriptor, ...).
    Entry(u64),
    /// No more precise location than the structure itself.
    Whole,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Byte(o) => write!(f, "offset {o:#x}"),
            Location::Block(b) => write!(f, "block {b}"),
            Location::Inode(i) => write!(f, "inode {i}"),
            Location::InodeByte(i, o) => write!(f, "inode {i} offset {o:#x}"),
            Location::Entry(e) => write!(f, "entry {e}"),
            Location::Whole => f.write_str("(whole structure)"),
        }
    }
}

/// The broad class of an error, for callers that branch on it (the CLI's exit
/// codes, tests of rejection paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Io,
    NotThisFormat,
    Corrupt,
    Checksum,
    Unsupported,
    Output,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O failure. `what` names the file or the operation.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not this format at all (wrong magic). Probing code uses this to
    /// try the next format; it is not a sign of damage.
    #[error("not {format}")]
    NotThisFormat { format: &'static str },

    /// A structure that claims to be this format but is inconsistent.
    #[error("corrupt {structure} at {location}: {detail}")]
    Corrupt {
        structure: &'static str,
        location: Location,
        detail: String,
    },

    /// A checksum stored in a structure does not match its contents.
    #[error("checksum mismatch in {structure} at {location}: stored {stored:#x}, computed {computed:#x}")]
    Checksum {
        structure: &'static str,
        location: Location,
        stored: u64,
        computed: u64,
    },

    /// A valid structure using a feature imgsan does not handle (or refuses to
    /// handle, such as encryption). `feature` names it the way its spec does.
    #[error("unsupported: {feature}")]
    Unsupported { feature: String },

    /// Writing the output failed (disk full, permission, a vanished directory).
    /// Kept apart from `Io` so the CLI can tell "could not read the image" from
    /// "could not write the result".
    #[error("writing {what}: {source}")]
    Output {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// An error inside a part of the input (a partition, a volume), named by
    /// `what` ("partition 3"), keeping the inner error's kind.
    #[error("{what}: {source}")]
    Within {
        what: String,
        #[source]
        source: Box<Error>,
    },

    /// An error that happened while reading a file other than the one the caller
    /// opened (a QCOW2 backing file, an external data file).
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::NotThisFormat { .. } => ErrorKind::NotThisFormat,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Checksum { .. } => ErrorKind::Checksum,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Output { .. } => ErrorKind::Output,
            Error::InFile { source, .. } | Error::Within { source, .. } => source.kind(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn output(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Output {
            what: what.into(),
            source,
        }
    }

    pub fn corrupt(structure: &'static str, location: Location, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            structure,
            location,
            detail: detail.into(),
        }
    }

    pub fn checksum(
        structure: &'static str,
        location: Location,
        stored: u64,
        computed: u64,
    ) -> Self {
        Error::Checksum {
            structure,
            location,
            stored,
            computed,
        }
    }

    pub fn unsupported(feature: impl Into<String>) -> Self {
        Error::Unsupported {
            feature: feature.into(),
        }
    }

    pub fn within(what: impl Into<String>, source: Error) -> Self {
        Error::Within {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub fn in_file(path: impl Into<PathBuf>, source: Error) -> Self {
        Error::InFile {
            path: path.into(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_file_errors_keep_their_kind_and_name_both_files() {
        let inner = Error::corrupt(
            "qcow2 L2 table",
            Location::Byte(0x30000),
            "entry points past end of file",
        );
        let e = Error::in_file("/images/base.qcow2", inner);
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let text = e.to_string();
        assert!(text.contains("/images/base.qcow2"), "{text}");
        assert!(text.contains("offset 0x30000"), "{text}");
    }
}
