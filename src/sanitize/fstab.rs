//! The fstab transform: keeps the entries that name a filesystem in the image,
//! swap, pseudo filesystems and bind mounts; drops local block devices the
//! image does not hold (detached volumes) and network and FUSE mounts (the
//! guidelines: volumes and iRODS FUSE mounts are not copied). Comments, blank
//! and unparsable lines stay byte for byte; the file keeps its node.
//!
//! An entry imgsan cannot match to a volume either way (a /dev/disk/by-id link,
//! a device-mapper name) is kept and reported: it may work in the clone, and
//! dropping the root's own line would be worse than keeping an odd one.

use crate::error::Result;
use crate::guest::Resolution;
use crate::inspect::fstab::{self, FstabEntry, MountClass, FSTAB_PATH};

use super::report::{mask_secrets, FstabDetails, FstabLineFate};
use super::resolve::lookup;
use super::{Run, CONFIG_LIMIT};

enum Fate {
    Keep,
    KeepUnresolvable(String),
    Drop(String),
}

fn fate(e: &FstabEntry, res: Option<&Resolution>) -> Fate {
    if e.mount_point == "/" {
        return Fate::Keep;
    }
    match e.class {
        MountClass::Swap | MountClass::Pseudo | MountClass::Bind => Fate::Keep,
        MountClass::Network => Fate::Drop(format!(
            "a network filesystem ({}): not part of the image",
            e.fs_type
        )),
        MountClass::Fuse => Fate::Drop("a FUSE mount: not part of the image".into()),
        MountClass::Block => match res {
            Some(Resolution::Volume { .. }) | Some(Resolution::NotAVolume) => Fate::Keep,
            Some(Resolution::Missing { reason }) => {
                Fate::Drop(format!("a volume not in the image: {reason}"))
            }
            Some(Resolution::Unresolvable { reason }) => Fate::KeepUnresolvable(reason.clone()),
            None => Fate::KeepUnresolvable("not resolved against the image's volumes".into()),
        },
    }
}

fn line_fate(e: &FstabEntry, reason: String) -> FstabLineFate {
    FstabLineFate {
        line: e.line,
        text: mask_secrets(&e.raw.text()),
        mount_point: e.mount_point.clone(),
        reason,
    }
}

pub(super) fn run(r: &mut Run<'_, '_>) -> Result<()> {
    let found = {
        let ns = r.ns()?;
        match lookup(&ns, r.layout, FSTAB_PATH.as_bytes()) {
            Some(t) if matches!(ns.tree(t.vol).node(t.node).kind, crate::tree::Kind::File(_)) => {
                let bytes = ns.tree(t.vol).read_all(t.node, CONFIG_LIMIT)?;
                Some((t, bytes))
            }
            Some(t) => {
                let k = ns.tree(t.vol).node(t.node).kind.name();
                r.note(format!("{FSTAB_PATH}: a {k}, left alone"));
                None
            }
            None => None,
        }
    };
    let Some((t, bytes)) = found else {
        return Ok(());
    };
    let parsed = fstab::parse(&bytes, FSTAB_PATH);
    let mut details = FstabDetails::default();
    let resolutions = &r.layout.fstab;
    let (new, _) = parsed.without(|e| {
        // The assembly parsed the same file: match its entries by line and text.
        let res = resolutions
            .iter()
            .find(|m| m.entry.line == e.line && m.entry.raw == e.raw)
            .map(|m| &m.resolution);
        match fate(e, res) {
            Fate::Keep => {
                details.kept_entries += 1;
                false
            }
            Fate::KeepUnresolvable(why) => {
                details.kept_entries += 1;
                details.kept_unresolvable.push(line_fate(e, why));
                false
            }
            Fate::Drop(why) => {
                details.dropped.push(line_fate(e, why));
                true
            }
        }
    });
    if r.ed.replace(t.vol, t.node, &new, &mut r.tally)? {
        r.changed(&t.path);
    }
    r.rr.fstab = Some(details);
    Ok(())
}
