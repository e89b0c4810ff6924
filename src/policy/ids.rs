//! The check ids: stable names that reports, JSON consumers, JUnit test names and
//! the `checks:` table of policy.yaml use. Never rename one; add new ones.
//! rules/README.md documents each.

use super::Severity;

/// A check's identity and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInfo {
    pub id: &'static str,
    /// Severity when policy.yaml does not name the check.
    pub default: Severity,
    /// One line saying what the check looks for.
    pub title: &'static str,
}

const fn c(id: &'static str, default: Severity, title: &'static str) -> CheckInfo {
    CheckInfo { id, default, title }
}

use Severity::{Error as E, Info as I, Warning as W};

/// Every check imgsan knows, in report order.
pub const CHECKS: &[CheckInfo] = &[
    c(
        "os.unknown",
        E,
        "the guest's OS and version can be identified",
    ),
    c(
        "os.unsupported",
        E,
        "the OS family is allowed and at least the minimum version",
    ),
    c(
        "os.not-recommended",
        I,
        "the OS release is one of the recommended ones",
    ),
    c(
        "os.eol",
        E,
        "the OS release is still supported (end-of-life table)",
    ),
    c(
        "os.eol-soon",
        W,
        "the OS release is not close to its end of life",
    ),
    c(
        "os.eol-unknown",
        W,
        "the end-of-life table knows the OS release",
    ),
    c(
        "fs.unsupported",
        E,
        "guest filesystems are of an allowed type",
    ),
    c(
        "fs.legacy",
        W,
        "guest filesystems are not of a flagged legacy type",
    ),
    c(
        "volumes.detached",
        E,
        "every fstab entry boot waits for resolves to a filesystem in the image",
    ),
    c(
        "volumes.network-mount",
        E,
        "network and FUSE mounts in fstab carry nofail or noauto",
    ),
    c(
        "volumes.unmounted",
        W,
        "every Linux volume of the image is mounted by the guest's fstab",
    ),
    c("name.missing", E, "an image name is given"),
    c(
        "name.forbidden-char",
        E,
        "the image name has no forbidden character (a period)",
    ),
    c(
        "name.too-long",
        E,
        "the image name is within the length limit",
    ),
    c(
        "name.featured",
        E,
        "the image name is not a featured image's name",
    ),
    c(
        "name.existing",
        W,
        "the image name is not one of the user's existing images",
    ),
    c("description.missing", E, "an image description is given"),
    c(
        "description.too-short",
        E,
        "the description is long enough to be informative",
    ),
    c(
        "description.same-as-name",
        E,
        "the description says more than the name",
    ),
    c(
        "description.too-long",
        E,
        "the description fits the image service's 255-character property",
    ),
    c(
        "description.near-limit",
        W,
        "the description is not close to the 255-character limit",
    ),
    c(
        "software.licensed",
        E,
        "no licensed software from the denylist",
    ),
    c(
        "software.cloud-unsuitable",
        E,
        "no cloud-unsuitable software (miners)",
    ),
    c(
        "software.license-file",
        E,
        "no FlexNet or RLM license files",
    ),
    c(
        "software.allowlisted",
        I,
        "denylisted software the cloud has licensed",
    ),
    c(
        "software.in-home",
        W,
        "no software installed under /home (it is deleted)",
    ),
    c(
        "post-scripts.first-line",
        E,
        "post-boot scripts start with the required interpreter line",
    ),
    c(
        "post-scripts.mode",
        E,
        "post-boot scripts are executable (0755)",
    ),
    c(
        "post-scripts.dir-mode",
        E,
        "the post-boot scripts folder is 0755",
    ),
    c(
        "post-scripts.not-regular",
        E,
        "post-boot scripts are files or symlinks to files",
    ),
    c("access.sshd-missing", E, "the ssh daemon is installed"),
    c(
        "access.sshd-config-missing",
        E,
        "sshd_config is present and readable",
    ),
    c("access.python-missing", E, "python (3 or 2) is installed"),
    c(
        "network.open-daemon",
        W,
        "network daemons are not configured open without authentication",
    ),
    c(
        "state.hibernated",
        E,
        "the guest is not suspended to swap (hibernated)",
    ),
    c(
        "state.captured-live",
        I,
        "the filesystems were unmounted cleanly",
    ),
];

/// The check with this id, if it exists.
pub fn lookup(id: &str) -> Option<&'static CheckInfo> {
    CHECKS.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CHECKS {
            assert!(seen.insert(c.id), "duplicate {}", c.id);
            let (group, name) = c.id.split_once('.').expect("group.name");
            for part in [group, name] {
                assert!(crate::rules::types::is_ident(part), "{}", c.id);
            }
        }
        assert!(lookup("os.eol").is_some());
        assert!(lookup("os.nope").is_none());
    }
}
