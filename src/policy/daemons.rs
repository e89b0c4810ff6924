//! Network daemons configured to listen beyond the loopback interface without
//! authentication (the policy's "commonly neglected examples include MongoDB").
//! Reads the daemons' own configuration files; knows mongod, redis, Jupyter and
//! memcached.

use globset::{GlobSet, GlobSetBuilder};

use crate::rules::Policy;

use super::{finding, Finding};

pub const IDS: &[&str] = &["network.open-daemon"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonKind {
    Mongod,
    Redis,
    Jupyter,
    Memcached,
}

impl DaemonKind {
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::Mongod => "MongoDB (mongod)",
            DaemonKind::Redis => "Redis",
            DaemonKind::Jupyter => "Jupyter",
            DaemonKind::Memcached => "memcached",
        }
    }
}

/// Where each daemon's configuration lives (distribution packages, upstream
/// packages, per-user Jupyter configs).
pub const CONFIG_PATHS: &[(&str, DaemonKind)] = &[
    ("/etc/mongod.conf", DaemonKind::Mongod),
    ("/etc/mongodb.conf", DaemonKind::Mongod),
    ("/etc/redis/redis.conf", DaemonKind::Redis),
    ("/etc/redis.conf", DaemonKind::Redis),
    (
        "/etc/jupyter/jupyter_notebook_config.py",
        DaemonKind::Jupyter,
    ),
    ("/etc/jupyter/jupyter_server_config.py", DaemonKind::Jupyter),
    (
        "/usr/local/etc/jupyter/jupyter_notebook_config.py",
        DaemonKind::Jupyter,
    ),
    (
        "/usr/local/etc/jupyter/jupyter_server_config.py",
        DaemonKind::Jupyter,
    ),
    (
        "/**/.jupyter/jupyter_notebook_config.py",
        DaemonKind::Jupyter,
    ),
    ("/**/.jupyter/jupyter_server_config.py", DaemonKind::Jupyter),
    ("/etc/memcached.conf", DaemonKind::Memcached),
    ("/etc/sysconfig/memcached", DaemonKind::Memcached),
];

/// Largest configuration file read; real ones are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Matches guest paths against [`CONFIG_PATHS`].
pub struct ConfigMatcher {
    set: GlobSet,
    kinds: Vec<DaemonKind>,
}

impl ConfigMatcher {
    pub fn new() -> ConfigMatcher {
        let mut b = GlobSetBuilder::new();
        let mut kinds = Vec::new();
        for (p, k) in CONFIG_PATHS {
            // Constant patterns, all compiled by a test; one that failed would
            // only be skipped.
            if let Ok(g) = globset::GlobBuilder::new(p).literal_separator(true).build() {
                b.add(g);
                kinds.push(*k);
            }
        }
        ConfigMatcher {
            set: b.build().unwrap_or_else(|_| GlobSet::empty()),
            kinds,
        }
    }

    /// Which daemon's config `path` is, if any.
    pub fn kind(&self, path: &str) -> Option<DaemonKind> {
        self.set
            .matches(path)
            .first()
            .and_then(|&i| self.kinds.get(i))
            .copied()
    }
}

impl Default for ConfigMatcher {
    fn default() -> Self {
        ConfigMatcher::new()
    }
}

/// Why a configuration is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDaemon {
    pub kind: DaemonKind,
    /// Addresses it listens on, as configured ("0.0.0.0", "*", "all interfaces").
    pub listens: Vec<String>,
    /// The configuration lines that show it (line number, text).
    pub lines: Vec<(usize, String)>,
    pub hint: &'static str,
}

fn is_loopback(addr: &str) -> bool {
    let a = addr
        .trim()
        .trim_start_matches('-')
        .trim_matches(|c| c == '[' || c == ']' || c == '"' || c == '\'');
    a.starts_with("127.") || a == "localhost" || a == "::1" || a.starts_with('/') || a.is_empty()
}

fn exposed(addrs: &[String]) -> Vec<String> {
    addrs.iter().filter(|a| !is_loopback(a)).cloned().collect()
}

/// Lines without comments, numbered from 1.
fn config_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let t = l.trim();
        (!t.is_empty() && !t.starts_with('#')).then_some((i + 1, t))
    })
}

/// Analyses one configuration file; `None` when it is not open.
pub fn analyze(kind: DaemonKind, bytes: &[u8]) -> Option<OpenDaemon> {
    let text = String::from_utf8_lossy(bytes);
    match kind {
        DaemonKind::Mongod => mongod(&text),
        DaemonKind::Redis => redis(&text),
        DaemonKind::Jupyter => jupyter(&text),
        DaemonKind::Memcached => memcached(&text),
    }
}

const MONGO_HINT: &str =
    "enable access control (security.authorization: enabled) or bind to 127.0.0.1";

fn find_line(text: &str, needle: &str) -> Vec<(usize, String)> {
    config_lines(text)
        .filter(|(_, l)| l.contains(needle))
        .take(3)
        .map(|(n, l)| (n, l.to_string()))
        .collect()
}

/// mongod: YAML (2.6+) with net.bindIp / net.bindIpAll and
/// security.authorization / security.keyFile (which implies authorization); or
/// the old `key = value` format (bind_ip, bind_ip_all, auth, keyFile). Without a
/// bind setting, YAML configs mean 3.6+ (localhost only); old-format configs
/// mean a release that listened on every interface.
fn mongod(text: &str) -> Option<OpenDaemon> {
    let yaml: Option<serde_json::Value> = serde_saphyr::from_str(text)
        .ok()
        .filter(|v: &serde_json::Value| v.is_object());
    let (listens, auth) = match &yaml {
        Some(v) => {
            let net = &v["net"];
            let mut listens: Vec<String> = match &net["bindIp"] {
                serde_json::Value::String(s) => {
                    s.split(',').map(|a| a.trim().to_string()).collect()
                }
                _ => vec![],
            };
            if net["bindIpAll"] == serde_json::Value::Bool(true) {
                listens.push("all interfaces (bindIpAll)".into());
            }
            let sec = &v["security"];
            let auth =
                sec["authorization"].as_str() == Some("enabled") || sec["keyFile"].is_string();
            (listens, auth)
        }
        None => {
            let mut listens = Vec::new();
            let mut bind_set = false;
            let mut auth = false;
            for (_, l) in config_lines(text) {
                let Some((k, v)) = l.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim());
                match k {
                    "bind_ip" => {
                        bind_set = true;
                        listens.extend(v.split(',').map(|a| a.trim().to_string()));
                    }
                    "bind_ip_all" if v == "true" => {
                        bind_set = true;
                        listens.push("all interfaces (bind_ip_all)".into());
                    }
                    "auth" if v == "true" => auth = true,
                    "keyFile" if !v.is_empty() => auth = true,
                    _ => {}
                }
            }
            if !bind_set {
                listens.push("all interfaces (no bind_ip)".into());
            }
            (listens, auth)
        }
    };
    let open = exposed(&listens);
    if auth || open.is_empty() {
        return None;
    }
    let mut lines = find_line(text, "bindIp");
    lines.extend(find_line(text, "bind_ip"));
    Some(OpenDaemon {
        kind: DaemonKind::Mongod,
        listens: open,
        lines,
        hint: MONGO_HINT,
    })
}

/// redis.conf: `bind` lines, `protected-mode`, `requirepass`, ACL `user` lines
/// and `aclfile`. Redis listens everywhere without a bind line, but then its
/// protected mode (on by default) refuses remote clients unless a password is
/// set; an explicit non-loopback bind turns that protection off.
fn redis(text: &str) -> Option<OpenDaemon> {
    let mut binds: Vec<String> = Vec::new();
    let mut bind_seen = false;
    let mut protected = true;
    let mut auth = false;
    let mut lines = Vec::new();
    for (n, l) in config_lines(text) {
        let mut it = l.split_whitespace();
        let key = it.next().unwrap_or("").to_ascii_lowercase();
        let args: Vec<&str> = it.collect();
        match key.as_str() {
            "bind" => {
                // A later bind line replaces an earlier one, as in redis.
                bind_seen = true;
                binds = args.iter().map(|a| a.to_string()).collect();
                lines.push((n, l.to_string()));
            }
            "protected-mode" => {
                protected = args.first().is_none_or(|a| !a.eq_ignore_ascii_case("no"));
                lines.push((n, l.to_string()));
            }
            "requirepass" => auth = args.first().is_some_and(|p| !p.is_empty() && *p != "\"\""),
            "aclfile" => auth = true,
            "user" if args.first() == Some(&"default") => {
                let has_pw = args
                    .iter()
                    .any(|a| a.starts_with('>') || a.starts_with('#'));
                let nopass = args.contains(&"nopass");
                let off = args.contains(&"off");
                auth = off || (has_pw && !nopass);
            }
            _ => {}
        }
    }
    if auth {
        return None;
    }
    let listens = if bind_seen {
        binds
            .iter()
            .map(|b| {
                if b == "*" || b == "-*" {
                    "all interfaces (*)".to_string()
                } else {
                    b.clone()
                }
            })
            .collect()
    } else {
        vec!["all interfaces (no bind)".to_string()]
    };
    let open = exposed(&listens);
    if open.is_empty() || (!bind_seen && protected) {
        return None;
    }
    Some(OpenDaemon {
        kind: DaemonKind::Redis,
        listens: open,
        lines,
        hint: "set requirepass (or ACL users) and bind to 127.0.0.1",
    })
}

/// A Python string literal's value, or `None` when the value is not a plain
/// string literal.
fn py_string(v: &str) -> Option<String> {
    let v = v.trim();
    let v = v.strip_prefix(['u', 'r', 'b']).unwrap_or(v);
    let q = v.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let rest = v.get(1..)?;
    let end = rest.find(q)?;
    rest.get(..end).map(String::from)
}

/// Jupyter (notebook and server): `c.<App>.token = ''` and no password, while
/// `ip` is set to every interface. Without an `ip` setting Jupyter listens on
/// localhost only.
fn jupyter(text: &str) -> Option<OpenDaemon> {
    let mut token_empty = None;
    let mut password = false;
    let mut ip: Option<String> = None;
    let mut lines = Vec::new();
    for (n, l) in config_lines(text) {
        let Some(rest) = l.strip_prefix("c.") else {
            continue;
        };
        let Some((lhs, rhs)) = rest.split_once('=') else {
            continue;
        };
        let attr = lhs.trim().rsplit('.').next().unwrap_or("");
        let val = py_string(rhs);
        match attr {
            "token" => {
                token_empty = Some(val.as_deref() == Some(""));
                lines.push((n, l.to_string()));
            }
            "password" | "hashed_password" => password = val.is_some_and(|v| !v.is_empty()),
            "ip" => {
                ip = val;
                lines.push((n, l.to_string()));
            }
            _ => {}
        }
    }
    let ip = ip?;
    let shown = match ip.as_str() {
        "*" | "" => format!("all interfaces ({ip:?})"),
        other => other.to_string(),
    };
    let open = exposed(&[shown]);
    if token_empty != Some(true) || password || open.is_empty() {
        return None;
    }
    Some(OpenDaemon {
        kind: DaemonKind::Jupyter,
        listens: open,
        lines,
        hint: "keep the token, or set a password (jupyter server password)",
    })
}

/// memcached has no authentication unless SASL (-S) is on; it listens on every
/// interface unless -l says otherwise. Reads Debian's /etc/memcached.conf (one
/// option per line) and RHEL's /etc/sysconfig/memcached (OPTIONS="...").
fn memcached(text: &str) -> Option<OpenDaemon> {
    let mut listens = Vec::new();
    let mut l_seen = false;
    let mut sasl = false;
    let mut lines = Vec::new();
    for (n, line) in config_lines(text) {
        let body = match line.strip_prefix("OPTIONS=") {
            Some(v) => v.trim_matches(|c| c == '"' || c == '\''),
            None if line.contains('=') && !line.starts_with('-') => continue,
            None => line,
        };
        let toks: Vec<&str> = body.split_whitespace().collect();
        let mut i = 0;
        while let Some(t) = toks.get(i) {
            let addr = if *t == "-l" || *t == "--listen" {
                i += 1;
                toks.get(i).map(|s| s.to_string())
            } else if let Some(v) = t.strip_prefix("--listen=") {
                Some(v.to_string())
            } else if t.starts_with("-l") && t.len() > 2 {
                t.get(2..).map(String::from)
            } else {
                if *t == "-S" || *t == "--enable-sasl" {
                    sasl = true;
                }
                None
            };
            if let Some(a) = addr {
                l_seen = true;
                listens.extend(a.split(',').map(|x| x.trim().to_string()));
                lines.push((n, line.to_string()));
            }
            i += 1;
        }
    }
    if !l_seen {
        listens.push("all interfaces (no -l)".into());
    }
    let open = exposed(&listens);
    if sasl || open.is_empty() {
        return None;
    }
    Some(OpenDaemon {
        kind: DaemonKind::Memcached,
        listens: open,
        lines,
        hint: "listen on 127.0.0.1 only (-l 127.0.0.1) or enable SASL (-S)",
    })
}

/// Checks configuration files the caller read: `(guest path, bytes)` for each
/// file [`ConfigMatcher::kind`] recognised.
pub fn check_open_daemons(policy: &Policy, configs: &[(String, Vec<u8>)]) -> Vec<Finding> {
    let m = ConfigMatcher::new();
    let mut out = Vec::new();
    for (path, bytes) in configs {
        let Some(kind) = m.kind(path) else { continue };
        let Some(o) = analyze(kind, bytes) else {
            continue;
        };
        let ev = std::iter::once(path.clone())
            .chain(o.lines.iter().map(|(n, l)| format!("{path}:{n}: {l}")));
        out.extend(
            finding(
                policy,
                "network.open-daemon",
                format!(
                    "{} is configured to listen on {} without authentication",
                    o.kind.name(),
                    o.listens.join(", ")
                ),
            )
            .map(|f| f.with_evidence(ev).hint(o.hint)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn open(kind: DaemonKind, text: &str) -> bool {
        analyze(kind, text.as_bytes()).is_some()
    }

    #[test]
    fn config_paths_are_recognised() {
        let m = ConfigMatcher::new();
        assert_eq!(m.kind("/etc/mongod.conf"), Some(DaemonKind::Mongod));
        assert_eq!(
            m.kind("/home/u/.jupyter/jupyter_server_config.py"),
            Some(DaemonKind::Jupyter)
        );
        assert_eq!(
            m.kind("/etc/sysconfig/memcached"),
            Some(DaemonKind::Memcached)
        );
        assert_eq!(m.kind("/etc/passwd"), None);
        assert_eq!(CONFIG_PATHS.len(), m.set.len());
    }

    #[test]
    fn mongod() {
        use DaemonKind::Mongod as M;
        assert!(open(M, "net:\n  port: 27017\n  bindIp: 0.0.0.0\n"));
        assert!(open(M, "net:\n  bindIp: 127.0.0.1,10.0.0.5\n"));
        assert!(open(
            M,
            "net:\n  bindIpAll: true\nsecurity:\n  authorization: disabled\n"
        ));
        assert!(open(M, "bind_ip = 0.0.0.0\nport = 27017\n"));
        assert!(
            open(M, "dbpath=/var/lib/mongodb\n"),
            "old format without bind_ip listens everywhere"
        );
        assert!(!open(
            M,
            "net:\n  bindIp: 0.0.0.0\nsecurity:\n  authorization: enabled\n"
        ));
        assert!(!open(
            M,
            "net:\n  bindIp: 0.0.0.0\nsecurity:\n  keyFile: /etc/mongo.key\n"
        ));
        assert!(!open(M, "net:\n  bindIp: 127.0.0.1\n"));
        assert!(
            !open(M, "storage:\n  dbPath: /var/lib/mongodb\n"),
            "3.6+ default is localhost"
        );
        assert!(!open(M, "bind_ip = 127.0.0.1\n"));
        assert!(!open(M, "bind_ip = 0.0.0.0\nauth = true\n"));
    }

    #[test]
    fn redis() {
        use DaemonKind::Redis as R;
        assert!(open(R, "bind 0.0.0.0\nport 6379\n"));
        assert!(open(R, "bind * -::*\n"));
        assert!(open(R, "protected-mode no\n"));
        assert!(!open(R, "port 6379\n"), "protected mode without bind");
        assert!(!open(R, "bind 127.0.0.1 -::1\n"));
        assert!(!open(R, "bind 0.0.0.0\nrequirepass s3cret\n"));
        assert!(!open(R, "bind 0.0.0.0\nuser default on >pw ~* +@all\n"));
        assert!(open(R, "bind 0.0.0.0\nuser default on nopass ~* +@all\n"));
        assert!(
            !open(R, "bind 0.0.0.0\nbind 127.0.0.1\n"),
            "the last bind wins"
        );
    }

    #[test]
    fn jupyter() {
        use DaemonKind::Jupyter as J;
        assert!(open(
            J,
            "c.NotebookApp.ip = '0.0.0.0'\nc.NotebookApp.token = ''\n"
        ));
        assert!(open(
            J,
            "c.ServerApp.ip = \"*\"\nc.IdentityProvider.token = \"\"  # no token\n"
        ));
        assert!(
            !open(J, "c.NotebookApp.token = ''\n"),
            "localhost by default"
        );
        assert!(!open(J, "c.NotebookApp.ip = '0.0.0.0'\n"), "token kept");
        assert!(!open(J, "c.NotebookApp.ip = '0.0.0.0'\nc.NotebookApp.token = ''\nc.NotebookApp.password = 'argon2:$argon2id$v=19$...'\n"));
        assert!(!open(
            J,
            "# c.NotebookApp.ip = '0.0.0.0'\n# c.NotebookApp.token = ''\n"
        ));
    }

    #[test]
    fn memcached() {
        use DaemonKind::Memcached as Mc;
        assert!(open(Mc, "-m 64\n-p 11211\n-l 0.0.0.0\n"));
        assert!(open(Mc, "PORT=\"11211\"\nOPTIONS=\"\"\n"));
        assert!(open(Mc, "-m 64\n"));
        assert!(!open(Mc, "-m 64\n-l 127.0.0.1\n"));
        assert!(!open(Mc, "PORT=\"11211\"\nOPTIONS=\"-l 127.0.0.1,::1\"\n"));
        assert!(!open(Mc, "-l 0.0.0.0\n-S\n"));
    }

    #[test]
    fn findings_name_the_file_and_lines() {
        let rs = RuleSet::embedded().unwrap();
        let cfgs = vec![
            (
                "/etc/mongod.conf".to_string(),
                b"net:\n  bindIp: 0.0.0.0\n".to_vec(),
            ),
            (
                "/etc/redis/redis.conf".to_string(),
                b"bind 127.0.0.1\n".to_vec(),
            ),
            ("/etc/other.conf".to_string(), b"bind 0.0.0.0\n".to_vec()),
        ];
        let f = check_open_daemons(&rs.policy, &cfgs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].check_id, "network.open-daemon");
        assert_eq!(f[0].severity, crate::policy::Severity::Warning);
        assert_eq!(
            f[0].evidence,
            ["/etc/mongod.conf", "/etc/mongod.conf:2: bindIp: 0.0.0.0"]
        );
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        for kind in [
            DaemonKind::Mongod,
            DaemonKind::Redis,
            DaemonKind::Jupyter,
            DaemonKind::Memcached,
        ] {
            for t in [
                &b"\xff\xfe\x00"[..],
                b"c.=",
                b"-l",
                b"OPTIONS=\"",
                b"&a [*a, *a]\n",
                b"user default",
                b"c.x.ip = '",
            ] {
                let _ = analyze(kind, t);
            }
        }
    }
}
