//! The replacement file contents of `replace` rules: rules/templates/<base>/NAME
//! (debian, rhel) with rules/templates/common/NAME as the fallback.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::RulesError;
use super::types::Base;

/// Template contents by (directory, name); directory is "common", "debian" or
/// "rhel".
#[derive(Debug, Clone, Default)]
pub struct Templates {
    files: BTreeMap<(String, String), Vec<u8>>,
}

const DIRS: [&str; 3] = ["common", "debian", "rhel"];

macro_rules! embedded {
    ($($dir:literal / $name:literal),* $(,)?) => {
        &[$(($dir, $name, include_bytes!(concat!("../../rules/templates/", $dir, "/", $name)) as &[u8])),*]
    };
}

/// The default templates, compiled in.
const EMBEDDED: &[(&str, &str, &[u8])] = embedded![
    "common" / "host.conf",
    "common" / "hosts.allow",
    "common" / "hosts.deny",
    "common" / "resolv.conf",
    "debian" / "hosts",
    "debian" / "ldap.conf",
    "debian" / "rules.v4",
    "debian" / "rules.v6",
    "rhel" / "hosts",
    "rhel" / "ip6tables",
    "rhel" / "iptables",
    "rhel" / "ldap.conf",
];

impl Templates {
    pub fn embedded() -> Templates {
        let mut t = Templates::default();
        for (dir, name, bytes) in EMBEDDED {
            t.files
                .insert((dir.to_string(), name.to_string()), bytes.to_vec());
        }
        t
    }

    /// Reads `dir/{common,debian,rhel}/*` (regular files only; names may not
    /// contain `/`). Files found replace or add to `self`'s.
    pub fn overlay_dir(&mut self, dir: &Path) -> Result<(), RulesError> {
        for sub in DIRS {
            let d = dir.join(sub);
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RulesError::Io { path: d, source }),
            };
            for ent in rd {
                let ent = ent.map_err(|source| RulesError::Io {
                    path: d.clone(),
                    source,
                })?;
                let path = ent.path();
                let ft = ent.file_type().map_err(|source| RulesError::Io {
                    path: path.clone(),
                    source,
                })?;
                let Some(name) = ent.file_name().to_str().map(String::from) else {
                    continue;
                };
                if !ft.is_file() || name.starts_with('.') {
                    continue;
                }
                let bytes =
                    std::fs::read(&path).map_err(|source| RulesError::Io { path, source })?;
                self.files.insert((sub.to_string(), name), bytes);
            }
        }
        Ok(())
    }

    /// The template `name` for a guest of `base`: the base's own, else common.
    pub fn get(&self, base: Base, name: &str) -> Option<&[u8]> {
        self.files
            .get(&(base.as_str().to_string(), name.to_string()))
            .or_else(|| self.files.get(&("common".to_string(), name.to_string())))
            .map(Vec::as_slice)
    }

    /// Every template: (directory, name, bytes), in order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str, &[u8])> {
        self.files
            .iter()
            .map(|((d, n), b)| (d.as_str(), n.as_str(), b.as_slice()))
    }

    /// Every template name, once.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.files.keys().map(|(_, n)| n.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_specific_first_then_common() {
        let t = Templates::embedded();
        let deb = t.get(Base::Debian, "hosts").unwrap();
        let rhel = t.get(Base::Rhel, "hosts").unwrap();
        assert_ne!(deb, rhel);
        assert!(String::from_utf8_lossy(rhel).contains("localhost4"));
        assert_eq!(
            t.get(Base::Debian, "resolv.conf"),
            t.get(Base::Rhel, "resolv.conf")
        );
        assert!(t.get(Base::Debian, "iptables").is_none());
        assert!(t.get(Base::Rhel, "nope").is_none());
    }
}
