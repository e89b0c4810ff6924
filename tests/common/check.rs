//! Field-by-field comparison of a [`Tree`] with the generator's [`Model`].
//! Shared by the reader's tests and, later, the builders' round trips.

use std::collections::{BTreeMap, HashMap};

use imgsan::tree::{Kind, NodeId, Tree};

use super::gen::{split, MKind, Model, Ts};

/// What the filesystem under test can represent.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Timestamps keep nanoseconds and more than 32 bits of seconds. Without
    /// (128-byte ext4 inodes) a time reads back as its low 32 bits, signed.
    pub ns: bool,
    /// The source keeps creation times (and they were written from the model).
    pub crtime: bool,
    /// Project ids are kept.
    pub projid: bool,
    /// The model's extras (ctime, crtime, flags, generation, projid) were
    /// written into the image.
    pub extra: bool,
    /// Entries the tree's root has that the model lacks (mke2fs's lost+found).
    pub root_extra: &'static [&'static [u8]],
    /// Mask of flags that are layout, not behaviour.
    pub structural_flags: u32,
}

impl Expect {
    /// How a model time reads back.
    pub fn time(&self, t: Ts) -> Ts {
        if self.ns {
            t
        } else {
            (i64::from(t.0 as u32 as i32), 0)
        }
    }
}

fn ts(t: imgsan::tree::Time) -> Ts {
    (t.sec, t.nsec)
}

/// Compare everything; return a list of differences (empty when equal).
pub fn compare(tree: &Tree, model: &Model, ex: &Expect) -> Vec<String> {
    let mut errs = Vec::new();
    let counts = tree.link_counts();
    let mut by_host: HashMap<u64, NodeId> = HashMap::new();
    let mut by_node: HashMap<NodeId, u64> = HashMap::new();
    let mut children: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
    for p in model.nodes.keys().filter(|p| !p.is_empty()) {
        let (parent, name) = split(p);
        children.entry(parent).or_default().push(name);
    }
    for (rel, m) in &model.nodes {
        let show = String::from_utf8_lossy(rel).into_owned();
        let mut path = b"/".to_vec();
        path.extend_from_slice(rel);
        let id = match tree.resolve(&path, false) {
            Ok(id) => id,
            Err(e) => {
                errs.push(format!("/{show}: not in the tree: {e}"));
                continue;
            }
        };
        let n = tree.node(id);
        macro_rules! diff {
            ($what:expr, $want:expr, $got:expr $(,)?) => {{
                let (want, got): (String, String) = ($want, $got);
                if want != got {
                    errs.push(format!("/{show}: {}: want {want}, got {got}", $what));
                }
            }};
        }
        // Directory listings (also for the root).
        if m.kind == MKind::Dir {
            let mut want: Vec<&[u8]> = children.get(&rel[..]).cloned().unwrap_or_default();
            if rel.is_empty() {
                want.extend(ex.root_extra.iter().copied());
            }
            want.sort();
            let got: Vec<&[u8]> = tree.entries(id).iter().map(|e| tree.name(e.name)).collect();
            if want != got {
                errs.push(format!(
                    "/{show}: entries differ: {} in the model, {} in the tree",
                    want.len(),
                    got.len()
                ));
            }
        }
        if rel.is_empty() {
            // The root's metadata is mke2fs's, not the generator's.
            continue;
        }
        // Hard-link structure: one node per host inode, and back.
        if *by_host.entry(m.host_ino).or_insert(id) != id
            || *by_node.entry(id).or_insert(m.host_ino) != m.host_ino
        {
            errs.push(format!("/{show}: hard-link structure differs"));
        }
        match (&m.kind, &n.kind) {
            (MKind::File { blake3 }, Kind::File(_)) => {
                diff!("size", m.size.to_string(), n.size.to_string());
                match hash(tree, id) {
                    Ok(h) => diff!("content blake3", hex(blake3), hex(&h)),
                    Err(e) => errs.push(format!("/{show}: reading: {e}")),
                }
            }
            (MKind::Dir, Kind::Dir(_))
            | (MKind::Fifo, Kind::Fifo)
            | (MKind::Socket, Kind::Socket) => {}
            (MKind::Symlink(t), Kind::Symlink(g)) => {
                diff!(
                    "symlink target",
                    String::from_utf8_lossy(t).into(),
                    String::from_utf8_lossy(g).into(),
                );
                diff!("size", m.size.to_string(), n.size.to_string());
            }
            (MKind::CharDev(a, b), Kind::CharDev(d))
            | (MKind::BlockDev(a, b), Kind::BlockDev(d)) => {
                diff!(
                    "rdev",
                    format!("{a}:{b}"),
                    format!("{}:{}", d.major, d.minor)
                );
            }
            (w, g) => {
                errs.push(format!("/{show}: kind: want {w:?}, got {}", g.name()));
                continue;
            }
        }
        diff!("perm", format!("{:o}", m.perm), format!("{:o}", n.perm));
        diff!("uid", m.uid.to_string(), n.uid.to_string());
        diff!("gid", m.gid.to_string(), n.gid.to_string());
        diff!(
            "atime",
            format!("{:?}", ex.time(m.atime)),
            format!("{:?}", ts(n.atime))
        );
        diff!(
            "mtime",
            format!("{:?}", ex.time(m.mtime)),
            format!("{:?}", ts(n.mtime))
        );
        diff!(
            "link count",
            m.nlink.to_string(),
            counts[id as usize].to_string(),
        );
        let got_x: BTreeMap<&[u8], &[u8]> = n
            .xattrs
            .iter()
            .map(|x| (tree.xattr_name(x), tree.xattr_value(x)))
            .collect();
        let want_x: BTreeMap<&[u8], &[u8]> =
            m.xattrs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        if got_x != want_x {
            errs.push(format!(
                "/{show}: xattrs: want {:?}, got {:?}",
                names(&want_x),
                names(&got_x)
            ));
        }
        let behaviour = n.flags & !ex.structural_flags;
        match model.extra.get(&m.host_ino).filter(|_| ex.extra) {
            Some((_, e)) => {
                diff!(
                    "ctime",
                    format!("{:?}", ex.time(e.ctime)),
                    format!("{:?}", ts(n.ctime))
                );
                let want_cr = ex.crtime.then(|| ex.time(e.crtime));
                diff!(
                    "crtime",
                    format!("{want_cr:?}"),
                    format!("{:?}", n.crtime.map(ts))
                );
                diff!(
                    "flags",
                    format!("{:#x}", e.flags),
                    format!("{behaviour:#x}")
                );
                diff!(
                    "generation",
                    e.generation.to_string(),
                    n.generation.to_string()
                );
                let want_p = if ex.projid { e.projid } else { 0 };
                diff!("projid", want_p.to_string(), n.projid.to_string());
            }
            None => diff!("flags", "0x0".into(), format!("{behaviour:#x}")),
        }
    }
    errs
}

fn names<'a>(m: &BTreeMap<&'a [u8], &'a [u8]>) -> Vec<String> {
    m.iter()
        .map(|(k, v)| {
            format!(
                "{}={}b:{}",
                String::from_utf8_lossy(k),
                v.len(),
                hex(&v[..v.len().min(8)])
            )
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// blake3 of a file's bytes, read through the tree.
pub fn hash(tree: &Tree, id: NodeId) -> imgsan::Result<[u8; 32]> {
    let size = tree.node(id).size;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        tree.read_file(id, at, &mut buf[..n])?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(*h.finalize().as_bytes())
}

/// Panic with the first differences, if any.
pub fn assert_same(tree: &Tree, model: &Model, ex: &Expect, what: &str) {
    let errs = compare(tree, model, ex);
    if !errs.is_empty() {
        let shown: Vec<&String> = errs.iter().take(40).collect();
        panic!(
            "{what}: {} differences between the tree and the model, first ones:\n{}",
            errs.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
