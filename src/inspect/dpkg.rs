//! Parses dpkg's package database, /var/lib/dpkg/status: RFC 822-style stanzas
//! separated by blank lines, `Field: value` lines, continuation lines starting with
//! a space or a tab (deb-control(5), dpkg's lib/dpkg/parse.c). Also reads the
//! timestamps of /var/log/dpkg.log, to tell when packages last changed.
//!
//! Lenient: a malformed line or stanza becomes a warning with its line number and
//! the rest still counts. Knows nothing about which packages matter to a policy.

use crate::inspect::{FileSource, Warning};
use crate::Result;

/// Where dpkg keeps its database.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";
/// dpkg's log and its first (uncompressed) rotation.
pub const LOG_PATHS: [&str; 2] = ["/var/log/dpkg.log", "/var/log/dpkg.log.1"];

/// Reads and parses the guest's status file; `Ok(None)` when dpkg is not there.
pub fn read_guest(src: &dyn FileSource) -> Result<Option<DpkgStatus>> {
    Ok(src
        .read(STATUS_PATH)?
        .map(|b| parse_status(&b, STATUS_PATH)))
}

/// The three words of a `Status:` field: what the admin wants, an error flag, and
/// the package's current state (dpkg-query(1), "Package states").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// unknown, install, hold, deinstall or purge.
    pub want: String,
    /// ok or reinstreq.
    pub flag: String,
    /// not-installed, config-files, half-installed, unpacked, half-configured,
    /// triggers-awaited, triggers-pending or installed.
    pub state: String,
}

const WANTS: [&str; 5] = ["unknown", "install", "hold", "deinstall", "purge"];
const FLAGS: [&str; 2] = ["ok", "reinstreq"];
const STATES: [&str; 8] = [
    "not-installed",
    "config-files",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
    "installed",
];

impl Status {
    /// dpkg-query's two-letter abbreviation (`${db:Status-Abbrev}` without the
    /// error column): "ii", "rc", "hi", ...
    pub fn abbrev(&self) -> String {
        let want = match self.want.as_str() {
            "install" => 'i',
            "hold" => 'h',
            "deinstall" => 'r',
            "purge" => 'p',
            _ => 'u',
        };
        let state = match self.state.as_str() {
            "not-installed" => 'n',
            "config-files" => 'c',
            "half-installed" => 'H',
            "unpacked" => 'U',
            "half-configured" => 'F',
            "triggers-awaited" => 'W',
            "triggers-pending" => 't',
            "installed" => 'i',
            _ => '?',
        };
        format!("{want}{state}")
    }
}

/// One stanza of the status file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DpkgPackage {
    pub name: String,
    pub status: Option<Status>,
    pub version: Option<String>,
    pub architecture: Option<String>,
    /// The raw `Source:` field: "name" or "name (version)"; absent when the source
    /// package has the binary package's name.
    pub source: Option<String>,
    /// `Installed-Size:`, in KiB.
    pub installed_size_kib: Option<u64>,
    /// 1-based line of the stanza's first line.
    pub line: usize,
}

impl DpkgPackage {
    /// Whether dpkg considers the package installed (its files are on disk and
    /// configured): state installed, or waiting only on triggers.
    pub fn is_installed(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            matches!(
                s.state.as_str(),
                "installed" | "triggers-pending" | "triggers-awaited"
            )
        })
    }

    /// The source package name (dpkg-query's `${source:Package}`).
    pub fn source_name(&self) -> &str {
        self.source
            .as_deref()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or(&self.name)
    }

    /// The source package version (dpkg-query's `${source:Version}`).
    pub fn source_version(&self) -> Option<&str> {
        self.source
            .as_deref()
            .and_then(|s| s.split_once('('))
            .and_then(|(_, v)| v.split_once(')'))
            .map(|(v, _)| v.trim())
            .or(self.version.as_deref())
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DpkgStatus {
    /// Every stanza, in file order, whatever its state.
    pub packages: Vec<DpkgPackage>,
    pub warnings: Vec<Warning>,
}

impl DpkgStatus {
    pub fn installed(&self) -> impl Iterator<Item = &DpkgPackage> {
        self.packages.iter().filter(|p| p.is_installed())
    }
}

/// Parses a status file's bytes. `file` names it in warnings.
pub fn parse_status(bytes: &[u8], file: &str) -> DpkgStatus {
    let text = String::from_utf8_lossy(bytes);
    let mut out = DpkgStatus::default();
    // (field name, value) pairs of the current stanza, and its first line.
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut start = 0usize;
    for (i, line) in text.split('\n').enumerate() {
        let lineno = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            finish(&mut fields, start, file, &mut out);
            continue;
        }
        if fields.is_empty() {
            start = lineno;
        }
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line.trim_start());
                }
                None => out.warnings.push(Warning::at_line(
                    file,
                    lineno,
                    "continuation line without a field",
                )),
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                fields.push((name.to_string(), value.trim().to_string()));
            }
            _ => out
                .warnings
                .push(Warning::at_line(file, lineno, "not a `Field: value` line")),
        }
    }
    finish(&mut fields, start, file, &mut out);
    out
}

fn finish(fields: &mut Vec<(String, String)>, line: usize, file: &str, out: &mut DpkgStatus) {
    if fields.is_empty() {
        return;
    }
    let take = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let Some(name) = take("Package") else {
        out.warnings.push(Warning::at_line(
            file,
            line,
            "stanza without a Package field",
        ));
        fields.clear();
        return;
    };
    let status = take("Status").and_then(|s| {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            [w, f, st] => {
                if !WANTS.contains(w) || !FLAGS.contains(f) || !STATES.contains(st) {
                    out.warnings.push(Warning::at_line(
                        file,
                        line,
                        format!("{name}: unknown status words {s:?}"),
                    ));
                }
                Some(Status {
                    want: w.to_string(),
                    flag: f.to_string(),
                    state: st.to_string(),
                })
            }
            _ => {
                out.warnings.push(Warning::at_line(
                    file,
                    line,
                    format!("{name}: Status {s:?} is not three words"),
                ));
                None
            }
        }
    });
    let installed_size_kib = take("Installed-Size").and_then(|s| match s.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            out.warnings.push(Warning::at_line(
                file,
                line,
                format!("{name}: Installed-Size {s:?} is not a number"),
            ));
            None
        }
    });
    out.packages.push(DpkgPackage {
        version: take("Version"),
        architecture: take("Architecture"),
        source: take("Source"),
        installed_size_kib,
        status,
        name,
        line,
    });
    fields.clear();
}

/// The newest timestamp in /var/log/dpkg.log, whose lines start with
/// `YYYY-MM-DD HH:MM:SS`. Returns the text and the seconds since the epoch,
/// reading the guest's local time as UTC (the log has no zone; hours matter less
/// than days for "last updated").
pub fn last_log_time(bytes: &[u8]) -> Option<(String, i64)> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|l| {
            let stamp = l.get(..19)?;
            Some((stamp.to_string(), parse_timestamp(stamp)?))
        })
        .max_by_key(|(_, t)| *t)
}

/// `YYYY-MM-DD HH:MM:SS` to seconds since 1970-01-01 UTC.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../fixtures/dpkg/status");

    #[test]
    fn real_stanzas_parse() {
        let s = parse_status(FIXTURE, "/var/lib/dpkg/status");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let names: Vec<&str> = s.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["adduser", "libgcc-s1", "openssh-client"]);
        let ssh = &s.packages[2];
        assert_eq!(ssh.version.as_deref(), Some("1:9.2p1-2+deb12u6"));
        assert_eq!(ssh.architecture.as_deref(), Some("amd64"));
        assert_eq!(ssh.source_name(), "openssh");
        assert_eq!(ssh.installed_size_kib, Some(5792));
        assert!(ssh.is_installed());
        assert_eq!(ssh.status.as_ref().unwrap().abbrev(), "ii");
        let adduser = &s.packages[0];
        assert_eq!(adduser.line, 1);
        assert_eq!(adduser.source_name(), "adduser");
        assert_eq!(adduser.source_version(), Some("3.134"));
        assert_eq!(s.packages[1].source_name(), "gcc-12");
    }

    #[test]
    fn states_other_than_installed_are_kept_but_not_installed() {
        let s = parse_status(
            b"Package: old\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: held\nStatus: hold ok installed\nSource: src (2.0)\nVersion: 2.0+b1\n",
            "s",
        );
        assert_eq!(s.packages.len(), 2);
        assert!(!s.packages[0].is_installed());
        assert_eq!(s.packages[0].status.as_ref().unwrap().abbrev(), "rc");
        assert!(s.packages[1].is_installed());
        assert_eq!(s.packages[1].source_version(), Some("2.0"));
        assert_eq!(s.installed().count(), 1);
        assert_eq!(s.packages[1].line, 5);
    }

    #[test]
    fn malformed_input_gives_warnings_not_failures() {
        let s = parse_status(
            b" orphan continuation\nPackage: a\nStatus: install ok\nInstalled-Size: lots\nno colon here\n\nVersion: 1\n\n\n\nPackage: b\r\nStatus: install ok installed\r\n",
            "s",
        );
        assert_eq!(s.packages.len(), 2);
        assert_eq!(s.packages[0].status, None);
        assert_eq!(s.packages[1].name, "b");
        assert!(s.packages[1].is_installed());
        let lines: Vec<Option<usize>> = s.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [Some(1), Some(5), Some(2), Some(2), Some(7)]);
    }

    #[test]
    fn garbage_never_panics() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let _ = parse_status(&junk, "x");
        let _ = last_log_time(&junk);
    }

    #[test]
    fn dpkg_log_newest_time() {
        let log = b"2024-01-02 03:04:05 startup archives unpack\n2024-03-01 00:00:00 status installed bash:amd64 5.2\ngarbage\n2023-12-31 23:59:59 status installed x 1\n";
        let (text, t) = last_log_time(log).unwrap();
        assert_eq!(text, "2024-03-01 00:00:00");
        assert_eq!(t, 1_709_251_200);
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2024-13-01 00:00:00"), None);
        assert_eq!(last_log_time(b""), None);
    }
}
