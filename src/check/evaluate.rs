//! From facts to findings: fills each policy check's input struct from the
//! [`Facts`] and runs every check. The checks themselves live in `policy`.

use crate::guest::Resolution;
use crate::inspect::fstab::MountClass;
use crate::policy::guest::{
    self as pg, AccessFacts, FstabEntryFacts, StateFacts, VolumeFacts as PolicyVolume,
};
use crate::policy::os::OsFacts;
use crate::policy::software::SoftwareMatcher;
use crate::policy::{daemons, names, os, post_scripts, software, Finding};

use super::facts::Facts;
use super::Inputs;

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The policy's view of the guest OS.
pub fn os_facts(f: &Facts) -> Option<OsFacts> {
    let o = f.os.as_ref()?;
    Some(OsFacts {
        id: o.id.clone(),
        id_like: o.id_like.clone(),
        version_major: o.version.as_ref().map(|v| v.major),
        version_minor: o.version.as_ref().and_then(|v| v.minor),
        pretty_name: o.pretty_name.clone(),
        source: Some(o.source.clone()),
    })
}

/// The filesystems the policy judges: every volume holding a filesystem or a
/// volume manager, except swap and the EFI system partition (which must be
/// FAT).
pub fn filesystems(f: &Facts) -> Vec<PolicyVolume> {
    f.volumes
        .iter()
        .filter(|v| {
            let t = v.fs_type();
            // An LVM PV is a container: the filesystems on its LVs are volumes of
            // their own and are checked as such.
            !(matches!(t, "swap" | "swsuspend" | "unknown" | "LVM2_member")
                || (t == "vfat" && v.efi_system))
        })
        .map(|v| PolicyVolume {
            name: v.label(),
            fstype: v.fs_type().to_string(),
        })
        .collect()
}

/// Volumes with a read Linux filesystem that the guest's fstab does not mount
/// (none without an fstab: then nothing says what is mounted), except one that
/// holds a boot loader.
pub fn unmounted(f: &Facts) -> Vec<pg::UnmountedFacts> {
    if !f.fstab_present {
        return Vec::new();
    }
    f.volumes
        .iter()
        .filter(|v| v.read && v.mount_point.is_none() && !v.boot_files)
        .map(|v| pg::UnmountedFacts {
            name: v.name.clone(),
            fstype: v.fs_type().to_string(),
            size: v.size,
            entries: v.top_entries.clone(),
            entry_count: v.top_entry_count,
        })
        .collect()
}

/// fstab entries as the volume checks see them.
pub fn fstab_entries(f: &Facts) -> Vec<FstabEntryFacts> {
    f.mounts
        .iter()
        .map(|m| {
            let e = &m.mount.entry;
            FstabEntryFacts {
                line: u32::try_from(e.line).unwrap_or(u32::MAX),
                text: e.raw.text(),
                spec: e.spec.clone(),
                mountpoint: e.mount_point.clone(),
                fstype: e.fs_type.clone(),
                options: e.options.clone(),
                resolved: m.resolved(),
                network: matches!(e.class, MountClass::Network | MountClass::Fuse)
                    && !matches!(m.mount.resolution, Resolution::Volume { .. }),
            }
        })
        .collect()
}

/// What the access checks need.
pub fn access(f: &Facts) -> AccessFacts {
    let c = &f.cloud;
    AccessFacts {
        sshd: c.sshd_binary.is_some(),
        sshd_config: c.sshd_config_present && c.sshd_config_readable,
        python: !c.python_binaries.is_empty(),
    }
}

/// Hibernated swap areas and filesystems captured while mounted.
pub fn state(f: &Facts) -> StateFacts {
    let mut s = StateFacts::default();
    for v in &f.volumes {
        if v.hibernated {
            s.hibernated_swap.push(format!("{} (swap)", v.label()));
        }
        if let Some(st) = &v.state {
            if st.captured_live() {
                let how = if st.replayed {
                    format!(
                        "{}: the journal needed recovery; {} transactions ({} blocks) replayed in memory",
                        v.label(),
                        st.transactions_replayed,
                        st.blocks_replayed
                    )
                } else if st.needs_recovery {
                    format!("{}: the journal needs recovery", v.label())
                } else {
                    format!(
                        "{}: the filesystem is marked {}",
                        v.label(),
                        st.superblock_state
                    )
                };
                s.captured_live.push(how);
            }
        }
    }
    s
}

/// Runs every check that applies; returns the ids that ran and the findings.
/// Checks that need the guest (software, access, post-scripts, ...) run only
/// when a guest root was found.
pub fn evaluate(f: &Facts, inputs: &Inputs) -> (Vec<String>, Vec<Finding>) {
    let rules = &inputs.rules;
    let policy = &rules.policy;
    let mut run: Vec<String> = Vec::new();
    let mut out: Vec<Finding> = Vec::new();

    run.extend(ids(os::IDS));
    out.extend(os::check_os(
        policy,
        &rules.eol,
        os_facts(f).as_ref(),
        inputs.today,
    ));

    run.extend(ids(pg::FS_IDS));
    out.extend(pg::check_filesystems(policy, &filesystems(f)));

    run.extend(ids(names::NAME_IDS));
    out.extend(names::check_name(
        policy,
        &rules.featured,
        &inputs.extra_featured,
        &inputs.existing,
        inputs.name.as_deref(),
    ));
    run.extend(ids(names::DESCRIPTION_IDS));
    out.extend(names::check_description(
        policy,
        inputs.name.as_deref(),
        inputs.description.as_deref(),
    ));

    run.extend(ids(pg::STATE_IDS));
    out.extend(pg::check_state(policy, &state(f)));

    if f.root_volume.is_none() {
        return (run, out);
    }

    if f.fstab_present {
        run.extend(ids(pg::VOLUME_IDS));
        out.extend(pg::check_volumes(policy, &fstab_entries(f)));
    }

    run.extend(ids(pg::UNMOUNTED_IDS));
    out.extend(pg::check_unmounted(policy, &unmounted(f)));

    run.extend(ids(pg::ACCESS_IDS));
    out.extend(pg::check_access(policy, access(f)));

    run.extend(ids(pg::HOME_IDS));
    let home: Vec<pg::HomeItem> = f.home_software.iter().map(|h| h.item()).collect();
    out.extend(pg::check_home_software(policy, &home));

    run.extend(ids(post_scripts::IDS));
    out.extend(post_scripts::check_post_scripts(policy, &f.post_scripts));

    run.extend(ids(daemons::IDS));
    let configs: Vec<(String, Vec<u8>)> = f
        .daemon_configs
        .iter()
        .map(|d| (d.path.clone(), d.bytes.clone()))
        .collect();
    out.extend(daemons::check_open_daemons(policy, &configs));

    let matcher = SoftwareMatcher::new(&rules.denylist, rules.allowlist(inputs.request.as_ref()))
        .map(|m| match inputs.request.as_ref() {
            Some(r) => m.with_excluded(&r.exclude),
            None => m,
        });
    match matcher {
        Ok(m) => {
            run.extend(ids(software::IDS));
            let packages: Vec<String> = f
                .packages
                .iter()
                .flat_map(|p| p.list.iter().map(|p| p.name.clone()))
                .collect();
            let hashes = &f.denylist.hashes;
            let mut hash = |path: &str| hashes.get(path).copied();
            out.extend(software::check_software(
                policy,
                &m,
                &packages,
                &f.denylist.files,
                &mut hash,
                &f.denylist.licences,
            ));
        }
        Err(_) => {
            // The denylist was validated when it was loaded; a pattern that
            // still fails to compile is reported in the facts' warnings.
        }
    }
    (run, out)
}
