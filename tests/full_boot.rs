//! The full-boot test: a real Debian bookworm disk (debootstrap, GPT, GRUB for BIOS,
//! ext4 root by UUID, swap, a human user with secrets) goes through imgsan, and the
//! output boots under qemu (TCG, serial console) to a login prompt, and its sshd answers
//! on the network with host keys that are not the image's own (regenerated at boot).
//!
//! The disk is built by tests/boot/make-debian-disk.sh and cached under
//! target/tmp/boot-cache (debootstrap runs once: several minutes; later runs reuse the
//! tarball and the disk). tests/boot/boot-and-wait.sh runs qemu and always kills it.
//! Needs root (debootstrap), network access to the Debian mirror on the first run, and
//! qemu-system-x86_64 (all set up by .ci/setup.sh).

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The boot must reach a login prompt, and sshd answer, within this bound (seconds).
/// Under TCG on a busy two-core machine that takes 30-40 s here.
const BOOT_LIMIT_S: u32 = 300;

/// Whether the command under test removes user data (`imgsan sanitize` does; the
/// reference run with qemu-img does not). The planted secrets are then checked to be
/// gone from the output before it boots.
const SANITIZES: bool = true;

// Cold (first debootstrap) it takes about 10 minutes here, warm about 2-3.
#[test]
fn processed_debian_disk_boots_to_a_login_prompt() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("IMGSAN_BOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("boot-cache"));
    std::fs::create_dir_all(&cache).unwrap();
    // A used instance's fstab names a volume that was attached to it: the image boots
    // only if the sanitizer drops that line, so the plain disk is used until then.
    let (src, detached) = if SANITIZES {
        (cache.join("debian-boot-detached.raw"), "1")
    } else {
        (cache.join("debian-boot.raw"), "0")
    };

    let t0 = Instant::now();
    let st = Command::new("bash")
        .arg(manifest.join("tests/boot/make-debian-disk.sh"))
        .arg(&src)
        .env("IMGSAN_BOOT_CACHE", &cache)
        .env("IMGSAN_BOOT_DETACHED_VOLUME", detached)
        .status()
        .expect("bash runs");
    assert!(st.success(), "make-debian-disk.sh failed");
    eprintln!("full boot: disk ready in {:?}", t0.elapsed());
    let markers: Vec<String> = std::fs::read_to_string(src.with_extension("raw.markers"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(markers.len() >= 5);
    let before = disk::blake3_file(&src);

    let dir = tempfile::tempdir_in(&cache).unwrap();
    let out = dir.path().join("out.raw");
    let t1 = Instant::now();
    // IMGSAN_FULL_BOOT_REFERENCE=1 runs the harness with `qemu-img convert` in
    // imgsan's place, to check the disk and the boot harness on their own.
    let res = if std::env::var_os("IMGSAN_FULL_BOOT_REFERENCE").is_some() {
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(&src)
            .arg(&out)
            .output()
            .expect("qemu-img runs")
    } else {
        // Debian is not an accepted OS in the built-in policy, so the check blocks
        // (exit 1) and --force writes the image anyway: this test is about the
        // output booting, not about the policy.
        Command::new(env!("CARGO_BIN_EXE_imgsan"))
            .arg("--quiet")
            .arg("sanitize")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(["--force", "--name", "Debian-boot-test"])
            .args([
                "--description",
                "Debian bookworm with openssh, for the boot test",
            ])
            .output()
            .expect("imgsan runs")
    };
    assert!(
        matches!(res.status.code(), Some(0 | 1)) && out.exists(),
        "the image processor failed ({:?}): {}",
        res.status.code(),
        String::from_utf8_lossy(&res.stderr)
    );
    eprintln!("full boot: imgsan in {:?}", t1.elapsed());
    assert_eq!(disk::blake3_file(&src), before, "the input image changed");

    if SANITIZES {
        let needles: Vec<&str> = markers.iter().map(String::as_str).collect();
        let hits = disk::scan(&out, &needles);
        for (m, h) in markers.iter().zip(hits) {
            assert!(h.is_empty(), "secret {m} survived at offsets {h:?}");
        }
    }

    let t2 = Instant::now();
    let log = dir.path().join("console.log");
    let keys = dir.path().join("keyscan.txt");
    let st = Command::new("bash")
        .arg(manifest.join("tests/boot/boot-and-wait.sh"))
        .arg(&out)
        .arg(BOOT_LIMIT_S.to_string())
        .env("IMGSAN_BOOT_LOG", &log)
        // The guest's sshd must answer with host keys: after sanitizing, that means
        // the keys were regenerated at first boot.
        .env("IMGSAN_BOOT_SSH_KEYS", &keys)
        .status()
        .expect("bash runs");
    eprintln!("full boot: boot took {:?}", t2.elapsed());
    assert!(
        st.success(),
        "the output did not boot to a login prompt with sshd answering within {BOOT_LIMIT_S} s"
    );

    // `ssh-keyscan` lines are "host type base64"; the image's .pub lines "type base64 comment".
    let served = key_blobs(&std::fs::read_to_string(&keys).unwrap(), 2);
    assert!(!served.is_empty(), "sshd served no host key");
    let original = key_blobs(
        &std::fs::read_to_string(src.with_extension("raw.hostkeys")).unwrap(),
        1,
    );
    assert!(original.len() >= 2, "the fixture recorded its host keys");
    for k in &served {
        assert_eq!(
            original.contains(k),
            !SANITIZES,
            "host key {}... {} the image's own",
            &k[..16.min(k.len())],
            if SANITIZES { "is still" } else { "is not" }
        );
    }
}

/// The base64 key blobs of a key listing, taken from whitespace-separated column `col`
/// of each non-comment line.
fn key_blobs(text: &str, col: usize) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(col))
        .map(str::to_string)
        .collect()
}
