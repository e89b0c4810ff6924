//! Looking inside an image without judging it: `imgsan ls`, `imgsan cat`, and the
//! per-filesystem details `imgsan inspect` prints (features, sizes, journal).
//!
//! Paths are guest paths. They resolve in the assembled guest (the root volume
//! with the others mounted where its fstab says) through [`Namespace`], so
//! symlinks, absolute ones included, and ".." never leave the guest; nothing
//! here touches the host's filesystem. Without a guest root (a bare data
//! filesystem), the one readable filesystem is `/`, or the caller picks one.
//!
//! Owns: choosing the namespace, listing, streaming file bytes, rendering.
//! Must not: parse on-disk formats (the readers do), load a whole file (content
//! is streamed in bounded chunks), or print anywhere but the writer it is given.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;

use crate::check::LoadedVolume;
use crate::error::Error;
use crate::guest::{Namespace, Pos};
use crate::rules::Date;
use crate::tree::{Kind, Node, Tree};

/// File bytes are copied to the output in pieces of this size at most.
const CHUNK: u64 = 1 << 20;

/// Why `ls` or `cat` failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The request cannot be satisfied as asked: no such path in the guest, a
    /// directory given to `cat`, a volume that does not exist, several
    /// filesystems and no way to choose. The CLI's usage exit code.
    #[error("{0}")]
    Request(String),
    /// The image or a filesystem could not be read, or the output not written.
    #[error(transparent)]
    Failed(#[from] Error),
}

/// The guest as `ls` and `cat` see it.
pub struct View<'a> {
    pub ns: Namespace<'a>,
    /// What `/` is: "the guest (root on partition 2)", "partition 1".
    pub description: String,
    /// Volumes that could not be read, when the rest still make a guest.
    pub warnings: Vec<String>,
}

fn request(msg: impl Into<String>) -> BrowseError {
    BrowseError::Request(msg.into())
}

/// The namespace to browse. `volume` (a partition number as `imgsan inspect`
/// lists them) picks one filesystem as `/`, without mounts. Otherwise the guest is
/// assembled; failing that, the single readable filesystem is `/`. `errors` are
/// the read failures of [`crate::check::read_volumes`].
pub fn view<'a>(
    volumes: &'a [LoadedVolume],
    errors: Vec<(String, Error)>,
    volume: Option<u32>,
) -> Result<View<'a>, BrowseError> {
    let trees: Vec<Option<&Tree>> = volumes.iter().map(|v| v.tree.as_ref()).collect();
    let fs_type = |v: &LoadedVolume| v.id.fs_type.clone().unwrap_or_else(|| "unknown".into());
    if let Some(n) = volume {
        let Some(i) = volumes.iter().position(|v| v.id.partition == Some(n)) else {
            let have: Vec<String> = volumes
                .iter()
                .filter_map(|v| v.id.partition.map(|p| format!("{p} ({})", fs_type(v))))
                .collect();
            return Err(request(if have.is_empty() {
                format!("--volume {n}: the image has no partition table")
            } else {
                format!(
                    "--volume {n}: no such partition (the image has {})",
                    have.join(", ")
                )
            }));
        };
        let v = &volumes[i];
        if v.tree.is_none() {
            if let Some((name, e)) = errors.into_iter().find(|(name, _)| *name == v.name) {
                return Err(Error::within(name, e).into());
            }
            return Err(request(format!(
                "{} holds {}, which is not a filesystem imgsan reads",
                v.name,
                fs_type(v)
            )));
        }
        return Ok(View {
            ns: Namespace::new(trees, i)?,
            description: v.name.clone(),
            warnings: Vec::new(),
        });
    }
    let ids: Vec<_> = volumes.iter().map(|v| v.id.clone()).collect();
    let warnings: Vec<String> = errors
        .iter()
        .map(|(name, e)| format!("{name}: cannot read the filesystem: {e}"))
        .collect();
    if let Some(g) = crate::guest::assemble(&ids, trees.clone())? {
        let description = format!("the guest (root on {})", volumes[g.root].name);
        return Ok(View {
            ns: g.ns,
            description,
            warnings,
        });
    }
    // No guest root. If a volume failed to read it may have been the root:
    // browsing another one as `/` would mislead.
    if let Some((name, e)) = errors.into_iter().next() {
        return Err(Error::within(name, e).into());
    }
    let readable: Vec<usize> = (0..volumes.len())
        .filter(|&i| volumes[i].tree.is_some())
        .collect();
    match readable.as_slice() {
        [] => Err(Error::unsupported("no ext2/3/4 filesystem in this image").into()),
        [i] => Ok(View {
            ns: Namespace::new(trees, *i)?,
            description: volumes[*i].name.clone(),
            warnings,
        }),
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|&i| {
                    let v = &volumes[i];
                    match v.id.partition {
                        Some(p) => format!("{p} ({})", fs_type(v)),
                        None => v.name.clone(),
                    }
                })
                .collect();
            Err(request(format!(
                "no guest root filesystem (no /etc/os-release) and {} readable filesystems: \
                 choose one with --volume N (partitions {})",
                several.len(),
                names.join(", ")
            )))
        }
    }
}

/// Options of `ls`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LsOptions {
    /// One line per entry with mode, links, owner, size and mtime.
    pub long: bool,
    /// Descend into subdirectories (not through symlinks; across mount points).
    pub recursive: bool,
}

fn no_path(path: &[u8], e: &Error) -> BrowseError {
    // Resolution only fails on the path (missing, not a directory, a symlink
    // loop): nothing in it reads the image.
    let why = match e {
        Error::Io { what, source } if source.kind() == std::io::ErrorKind::NotFound => what
            .rsplit_once(": ")
            .map_or("not found", |(_, why)| why)
            .to_string(),
        _ => e.to_string(),
    };
    request(format!("{}: {why} (in the guest)", escape_name(path)))
}

fn out_err(e: std::io::Error) -> BrowseError {
    BrowseError::Failed(Error::output("standard output", e))
}

/// Lists `path` the way `ls -A` would (every entry but "." and ".."), names in
/// byte order. A symlink given as `path` is followed unless `long` (then the link
/// itself is shown) or the path ends in "/". With `recursive`, each directory is a
/// block headed by its canonical guest path and a colon, blocks separated by an
/// empty line, depth first.
pub fn ls(
    view: &View<'_>,
    path: &[u8],
    opts: LsOptions,
    out: &mut dyn Write,
) -> Result<(), BrowseError> {
    let ns = &view.ns;
    let follow = !opts.long || path.ends_with(b"/");
    let (pos, canon) = ns
        .resolve_with_path(path, follow)
        .map_err(|e| no_path(path, &e))?;
    let mut links = LinkCounts::default();
    if !ns.node(pos).is_dir() {
        let mut lines = Lines::default();
        lines.push(ns, &mut links, path, pos, opts.long);
        return lines.print(out, opts.long).map_err(out_err);
    }
    let mut seen = HashSet::new();
    let mut stack = vec![(canon, pos)];
    let mut first = true;
    while let Some((dir, dpos)) = stack.pop() {
        if !seen.insert(dpos) {
            continue;
        }
        let entries = ns.list(&dir).map_err(|e| no_path(&dir, &e))?;
        if opts.recursive {
            let sep = if first { "" } else { "\n" };
            writeln!(out, "{sep}{}:", escape_name(&dir)).map_err(out_err)?;
        }
        first = false;
        let mut lines = Lines::default();
        let mut subdirs = Vec::new();
        for (name, p) in &entries {
            lines.push(ns, &mut links, name, *p, opts.long);
            if opts.recursive && ns.node(*p).is_dir() {
                let mut child = dir.clone();
                if child.len() > 1 {
                    child.push(b'/');
                }
                child.extend_from_slice(name);
                subdirs.push((child, *p));
            }
        }
        lines.print(out, opts.long).map_err(out_err)?;
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Writes the bytes of the regular file at `path` (symlinks followed inside the
/// guest) to `out`, a chunk at a time. Returns the number of bytes written.
pub fn cat(view: &View<'_>, path: &[u8], out: &mut dyn Write) -> Result<u64, BrowseError> {
    let ns = &view.ns;
    let pos = ns.resolve(path, true).map_err(|e| no_path(path, &e))?;
    let node = ns.node(pos);
    if !matches!(node.kind, Kind::File(_)) {
        return Err(request(format!(
            "{}: is a {}, not a regular file",
            escape_name(path),
            node.kind.name()
        )));
    }
    let tree = ns.tree(pos.vol);
    let size = node.size;
    // Bounded by CHUNK, so the cast cannot truncate.
    let mut buf = vec![0u8; size.min(CHUNK) as usize];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(CHUNK) as usize;
        let piece = &mut buf[..n];
        tree.read_file(pos.node, at, piece)?;
        out.write_all(piece).map_err(out_err)?;
        at += n as u64;
    }
    out.flush().map_err(out_err)?;
    Ok(size)
}

/// Link counts per volume, computed on first use.
#[derive(Default)]
struct LinkCounts {
    per_volume: HashMap<usize, Vec<u32>>,
}

impl LinkCounts {
    fn get(&mut self, ns: &Namespace<'_>, pos: Pos) -> u32 {
        let counts = self
            .per_volume
            .entry(pos.vol)
            .or_insert_with(|| ns.tree(pos.vol).link_counts());
        counts.get(pos.node as usize).copied().unwrap_or(0)
    }
}

/// The lines of one listing block, aligned when printed.
#[derive(Default)]
struct Lines {
    rows: Vec<[String; 6]>,
}

impl Lines {
    fn push(
        &mut self,
        ns: &Namespace<'_>,
        links: &mut LinkCounts,
        name: &[u8],
        pos: Pos,
        long: bool,
    ) {
        let node = ns.node(pos);
        let mut shown = escape_name(name);
        if !long {
            self.rows.push([
                shown,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            return;
        }
        if let Kind::Symlink(target) = &node.kind {
            shown.push_str(" -> ");
            shown.push_str(&escape_name(target));
        }
        let size = match &node.kind {
            Kind::CharDev(d) | Kind::BlockDev(d) => format!("{}, {}", d.major, d.minor),
            Kind::Symlink(target) => target.len().to_string(),
            _ => node.size.to_string(),
        };
        self.rows.push([
            mode_string(node),
            links.get(ns, pos).to_string(),
            node.uid.to_string(),
            node.gid.to_string(),
            size,
            format!("{} {shown}", time_string(node.mtime.sec)),
        ]);
    }

    fn print(&self, out: &mut dyn Write, long: bool) -> std::io::Result<()> {
        if !long {
            for r in &self.rows {
                writeln!(out, "{}", r[0])?;
            }
            return Ok(());
        }
        let width = |i: usize| self.rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
        let (wl, wu, wg, ws) = (width(1), width(2), width(3), width(4));
        for r in &self.rows {
            writeln!(
                out,
                "{} {:>wl$} {:<wu$} {:<wg$} {:>ws$} {}",
                r[0], r[1], r[2], r[3], r[4], r[5]
            )?;
        }
        Ok(())
    }
}

/// `drwxr-xr-x`, with s/S and t/T for setuid, setgid and sticky as ls shows them.
pub fn mode_string(node: &Node) -> String {
    let t = match node.kind {
        Kind::File(_) => '-',
        Kind::Dir(_) => 'd',
        Kind::Symlink(_) => 'l',
        Kind::CharDev(_) => 'c',
        Kind::BlockDev(_) => 'b',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
    };
    let p = node.perm;
    let bit = |mask: u16, c: char| if p & mask != 0 { c } else { '-' };
    let exec = |x: u16, special: u16, set: char, unset: char| match (p & x != 0, p & special != 0) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS` in UTC (the guest's time zone is not
/// the host's business); `@SECONDS` outside years 1 to 9999.
pub fn time_string(sec: i64) -> String {
    let days = sec.div_euclid(86_400);
    let rem = sec.rem_euclid(86_400);
    match Date::from_days_since_epoch(days) {
        Some(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year(),
            d.month(),
            d.day(),
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        ),
        None => format!("@{sec}"),
    }
}

/// Whether a character would hide or disturb what the terminal shows: control
/// characters, line and paragraph separators, zero-width and bidirectional
/// formatting characters.
fn unprintable(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A name as bytes, printable: valid UTF-8 that shows as itself is kept, a
/// backslash is doubled, every other byte (invalid UTF-8, control and
/// formatting characters) is `\xHH`. The result has no newline, and the original
/// bytes can be recovered from it.
pub fn escape_name(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                s.push_str("\\\\");
            } else if unprintable(c) {
                let mut b = [0u8; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    let _ = write!(s, "\\x{byte:02x}");
                }
            } else {
                s.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(s, "\\x{byte:02x}");
        }
    }
    s
}

/// The details `imgsan inspect` shows for one filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FsDetails {
    /// "partition 2" or "the whole disk".
    pub volume: String,
    /// "ext4", "ext3", "ext2", "xfs".
    pub fs_type: Option<String>,
    /// The filesystem's own facts (label, uuid, features, sizes, counts, state,
    /// journal or log, what replay did).
    #[serde(flatten)]
    pub facts: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    label: String,
    #[serde(skip)]
    uuid: String,
    #[serde(skip)]
    text: Vec<String>,
}

/// Details of every filesystem that was read.
pub fn fs_details(volumes: &[LoadedVolume]) -> Vec<FsDetails> {
    volumes
        .iter()
        .filter_map(|v| {
            let f = &v.fs.as_ref()?.facts;
            Some(FsDetails {
                volume: v.name.clone(),
                fs_type: v.id.fs_type.clone(),
                facts: f.json.clone(),
                label: f.label.clone(),
                uuid: f.uuid.clone(),
                text: f.text.clone(),
            })
        })
        .collect()
}

/// The text form of [`fs_details`], a block per filesystem.
pub fn render_fs_details(details: &[FsDetails]) -> String {
    let mut o = String::new();
    for d in details {
        let esc = |s: &str| escape_name(s.as_bytes());
        let _ = writeln!(
            o,
            "\n{} filesystem on {}: UUID {}{}",
            d.fs_type.as_deref().unwrap_or("unknown"),
            d.volume,
            esc(&d.uuid),
            if d.label.is_empty() {
                String::new()
            } else {
                format!(", label \"{}\"", esc(&d.label))
            }
        );
        for line in &d.text {
            let _ = writeln!(o, "  {}", esc(line));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Dev, Flavor, Time};

    #[test]
    fn escaping_is_reversible_and_single_line() {
        assert_eq!(escape_name(b"plain name.txt"), "plain name.txt");
        assert_eq!(escape_name("café".as_bytes()), "café");
        assert_eq!(escape_name(b"a\nb\\c"), "a\\x0ab\\\\c");
        assert_eq!(escape_name(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(escape_name(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape_name("x\u{202e}y".as_bytes()), "x\\xe2\\x80\\xaey");
    }

    #[test]
    fn modes_and_times() {
        let mut n = Node::new(Kind::File(vec![]));
        n.perm = 0o4755;
        assert_eq!(mode_string(&n), "-rwsr-xr-x");
        n.perm = 0o2640;
        assert_eq!(mode_string(&n), "-rw-r-S---");
        let mut d = Node::new(Kind::Dir(vec![]));
        d.perm = 0o1777;
        assert_eq!(mode_string(&d), "drwxrwxrwt");
        d.perm = 0o1776;
        assert_eq!(mode_string(&d), "drwxrwxrwT");
        let c = Node::new(Kind::CharDev(Dev { major: 1, minor: 3 }));
        assert_eq!(mode_string(&c), "c---------");
        assert_eq!(time_string(0), "1970-01-01 00:00:00");
        assert_eq!(time_string(1_704_614_400), "2024-01-07 08:00:00");
        assert_eq!(time_string(-1), "1969-12-31 23:59:59");
        assert_eq!(time_string(i64::MAX), format!("@{}", i64::MAX));
    }

    fn guest() -> Tree {
        let mut t = Tree::new(Flavor::Synthetic, None);
        let r = t.root;
        let add = |t: &mut Tree, parent, name: &[u8], mut n: Node| {
            n.mtime = Time { sec: 0, nsec: 0 };
            let id = t.add_node(n);
            t.link(parent, name, id).unwrap();
            id
        };
        let mut dir = Node::new(Kind::Dir(vec![]));
        dir.perm = 0o755;
        let etc = add(&mut t, r, b"etc", dir.clone());
        let f = add(&mut t, etc, b"os-release", Node::new(Kind::File(vec![])));
        t.set_content(f, b"ID=test\n".to_vec());
        add(
            &mut t,
            etc,
            b"x",
            Node::new(Kind::Symlink(b"/../../etc/os-release".as_slice().into())),
        );
        let sub = add(&mut t, etc, b"sub", dir);
        let big = add(&mut t, sub, b"big", Node::new(Kind::File(vec![])));
        t.set_content(big, (0..3 * CHUNK + 17).map(|i| i as u8).collect());
        t.finish().unwrap();
        t
    }

    #[test]
    fn ls_and_cat_stay_in_the_guest() {
        let t = guest();
        let view = View {
            ns: Namespace::new(vec![Some(&t)], 0).unwrap(),
            description: "test".into(),
            warnings: vec![],
        };
        let mut out = Vec::new();
        cat(&view, b"/etc/x", &mut out).unwrap();
        assert_eq!(out, b"ID=test\n");
        let mut out = Vec::new();
        assert_eq!(
            cat(&view, b"/etc/../../etc/sub/big", &mut out).unwrap(),
            3 * CHUNK + 17
        );
        assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
        let e = cat(&view, b"/etc", &mut Vec::new()).unwrap_err();
        assert!(matches!(e, BrowseError::Request(_)), "{e}");
        let e = cat(&view, b"/nope", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");

        let mut out = Vec::new();
        ls(
            &view,
            b"/",
            LsOptions {
                long: false,
                recursive: true,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/:\netc\n\n/etc:\nos-release\nsub\nx\n\n/etc/sub:\nbig\n"
        );
        let mut out = Vec::new();
        ls(
            &view,
            b"/etc/x",
            LsOptions {
                long: true,
                recursive: false,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "l--------- 1 0 0 21 1970-01-01 00:00:00 /etc/x -> /../../etc/os-release\n"
        );
    }
}
