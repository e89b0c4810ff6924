//! jbd2 replay against independent implementations.
//!
//! Dirty journals are written by e2fsprogs (debugfs's `jo`/`jw`/`jc`, as its own
//! j_* tests do) and by the Linux kernel (through libguestfs, with the appliance
//! killed before it unmounts). The oracle for every image is e2fsprogs' own
//! recovery (`debugfs -w -R jr`) on a copy: each block of imgsan's overlay must
//! equal that block of the recovered copy, and every other filesystem block must be
//! unchanged by recovery. Transaction counts are checked against `logdump`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgsan::fs::ext4::journal::ondisk::JournalSuperblock;
use imgsan::fs::ext4::journal::{self, JournalLocation, Overlay, ReplayReport};
use imgsan::fs::ext4::superblock::Superblock;
use imgsan::ErrorKind;

// ---- images and tools ---------------------------------------------------------

/// Run a tool that must succeed; returns its stdout followed by its stderr.
fn run(cmd: &mut Command) -> String {
    let (out, err) = run_split(cmd);
    out + &err
}

fn run_split(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mkfs(dir: &Path, name: &str, args: &[&str], size: &str) -> PathBuf {
    let p = dir.join(name);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .args(args)
        .arg(&p)
        .arg(size));
    p
}

/// Run a debugfs script on an image (read-write). Commands that fail inside
/// debugfs do not change its exit status, so their messages are checked too.
fn debugfs_w(img: &Path, script: &str) -> String {
    let cmd = img.with_extension("cmd");
    std::fs::write(&cmd, script).unwrap();
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmd)
        .arg(img));
    for bad in [
        "while writing journal",
        "while opening journal",
        "while recovering journal",
        "Journal not open",
        "Need a file",
        "not found",
        "File not found",
        "Could not allocate",
    ] {
        assert!(!out.contains(bad), "debugfs on {img:?}: {out}");
    }
    out
}

/// A read-only debugfs request; returns its stdout (the banner goes to stderr).
fn debugfs_r(img: &Path, request: &str) -> String {
    run_split(Command::new("debugfs").arg("-R").arg(request).arg(img)).0
}

struct Image {
    bytes: Vec<u8>,
    sb: Superblock,
    bs: usize,
}

impl Image {
    fn load(p: &Path) -> Image {
        let bytes = std::fs::read(p).unwrap();
        let raw: &[u8; 1024] = bytes[1024..2048].try_into().unwrap();
        let sb = Superblock::parse(raw, bytes.len() as u64).unwrap();
        let bs = sb.block_size() as usize;
        Image { bytes, sb, bs }
    }

    fn block(&self, b: u64) -> &[u8] {
        let o = b as usize * self.bs;
        &self.bytes[o..o + self.bs]
    }

    fn blocks(&self) -> u64 {
        self.sb.blocks_count()
    }

    fn needs_recovery(&self) -> bool {
        self.sb
            .has_incompat(imgsan::fs::ext4::superblock::incompat::RECOVER)
    }
}

/// The journal inode's extents, from `debugfs -R 'stat <8>'`.
fn journal_location(img: &Path) -> JournalLocation {
    let text = debugfs_r(img, "stat <8>");
    let size: u64 = text
        .lines()
        .find(|l| l.starts_with("User:"))
        .and_then(|l| l.split("Size:").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("journal inode size");
    let ext_text: String = text
        .split("EXTENTS:")
        .nth(1)
        .expect("journal inode has extents")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut extents = Vec::new();
    for item in ext_text.split(", ") {
        let item = item.trim();
        if item.is_empty() || item.starts_with("(ETB") {
            continue;
        }
        let (logical, physical) = item
            .trim_start_matches('(')
            .split_once("):")
            .unwrap_or_else(|| panic!("extent {item:?}"));
        let range = |s: &str| -> (u64, u64) {
            match s.split_once('-') {
                Some((a, b)) => (a.trim().parse().unwrap(), b.trim().parse().unwrap()),
                None => {
                    let a = s.trim().parse().unwrap();
                    (a, a)
                }
            }
        };
        let (l0, l1) = range(logical);
        let (p0, _) = range(physical);
        extents.push((l0, p0, l1 - l0 + 1));
    }
    let bs = Image::load(img).bs as u64;
    JournalLocation {
        extents,
        len_blocks: size / bs,
    }
}

fn journal_phys(loc: &JournalLocation, j: u64) -> u64 {
    loc.extents
        .iter()
        .find(|&&(l, _, n)| j >= l && j < l + n)
        .map(|&(l, p, _)| p + (j - l))
        .expect("mapped journal block")
}

fn journal_blocks(loc: &JournalLocation) -> BTreeSet<u64> {
    loc.extents.iter().flat_map(|&(_, p, n)| p..p + n).collect()
}

fn replay_image(img: &Image, loc: &JournalLocation) -> imgsan::Result<(Overlay, ReplayReport)> {
    let bs = img.bs;
    let bytes = &img.bytes;
    let read = move |b: u64, buf: &mut [u8]| -> imgsan::Result<()> {
        let o = usize::try_from(b).unwrap() * bs;
        let src = bytes.get(o..o + buf.len()).ok_or_else(|| {
            imgsan::Error::corrupt("test image", imgsan::Location::Block(b), "past the end")
        })?;
        buf.copy_from_slice(src);
        Ok(())
    };
    journal::replay(&img.sb, loc, &read)
}

/// Recover a copy with e2fsprogs and return the recovered bytes.
fn e2fsprogs_replay(img: &Path) -> Vec<u8> {
    let copy = img.with_extension("recovered");
    std::fs::copy(img, &copy).unwrap();
    let out = debugfs_w(&copy, "jr\n");
    let recovered = Image::load(&copy);
    assert!(
        !recovered.needs_recovery(),
        "e2fsprogs left needs_recovery set: {out}"
    );
    recovered.bytes
}

/// What `logdump` says about the log: its start, and the transactions with a
/// commit block, in order.
#[derive(Debug, Default)]
struct LogDump {
    start_sequence: Option<u32>,
    commits: Vec<u32>,
    escaped_tags: usize,
    text: String,
}

fn logdump(img: &Path) -> LogDump {
    let text = debugfs_r(img, "logdump -a");
    let mut d = LogDump::default();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("Journal starts at block ") {
            d.start_sequence = rest
                .split("transaction ")
                .nth(1)
                .and_then(|s| s.trim().parse().ok());
        }
        if l.starts_with("Found expected sequence") && l.contains("(commit block)") {
            let seq = l
                .split_whitespace()
                .nth(3)
                .unwrap()
                .trim_end_matches(',')
                .parse()
                .unwrap();
            d.commits.push(seq);
        }
        if l.contains("logged at journal block") {
            let flags = l.rsplit("(flags 0x").next().unwrap().trim_end_matches(')');
            if u32::from_str_radix(flags, 16).unwrap() & 1 != 0 {
                d.escaped_tags += 1;
            }
        }
    }
    d.text = text;
    d
}

/// The core oracle: imgsan's overlay against e2fsprogs' recovery of a copy.
fn check_against_e2fsprogs(dirty: &Path) -> (Overlay, ReplayReport) {
    let img = Image::load(dirty);
    assert!(img.needs_recovery(), "{dirty:?} should need recovery");
    let loc = journal_location(dirty);
    let (overlay, report) = replay_image(&img, &loc).unwrap();
    let recovered = e2fsprogs_replay(dirty);
    let jblocks = journal_blocks(&loc);
    let bs = img.bs;
    // The superblock is rewritten by recovery (needs_recovery cleared, ...).
    let (sb_block, sb_bytes) = if bs == 1024 {
        (1, 0..1024)
    } else {
        (0, 1024..2048)
    };
    let mut wrong = Vec::new();
    for b in 0..img.blocks() {
        let o = b as usize * bs;
        let mut got_rec = recovered[o..o + bs].to_vec();
        let mut want = match overlay.get(b) {
            Some(v) => v.to_vec(),
            None if jblocks.contains(&b) => continue,
            None => img.block(b).to_vec(),
        };
        if b == sb_block {
            got_rec[sb_bytes.clone()].fill(0);
            want[sb_bytes.clone()].fill(0);
        }
        if got_rec != want {
            wrong.push((b, overlay.get(b).is_some()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{dirty:?}: blocks differing from e2fsprogs' recovery (block, in overlay): {:?}\n{report:#?}",
        &wrong[..wrong.len().min(20)]
    );
    assert_eq!(report.blocks, overlay.blocks.len() as u64);
    assert!(overlay.blocks.len() as u64 <= loc.len_blocks);
    (overlay, report)
}

/// Checks that the report's transactions are those `logdump` shows committed.
fn check_against_logdump(dirty: &Path, report: &ReplayReport) -> LogDump {
    let d = logdump(dirty);
    assert_eq!(
        report.transactions,
        d.commits.len() as u64,
        "{report:#?}\n{}",
        d.text
    );
    if !d.commits.is_empty() {
        assert_eq!(report.first_sequence, d.start_sequence, "{}", d.text);
        assert_eq!(report.first_sequence, d.commits.first().copied());
        assert_eq!(report.last_sequence, d.commits.last().copied());
        assert_eq!(
            report.end_sequence,
            d.commits.last().map(|s| s.wrapping_add(1))
        );
    }
    d
}

/// Blocks that differ between two images of the same size.
fn changed_blocks(a: &Image, b: &Image) -> Vec<u64> {
    (0..a.blocks())
        .filter(|&i| a.block(i) != b.block(i))
        .collect()
}

/// A transaction for debugfs's journal writer.
#[derive(Default, Clone)]
struct Txn {
    writes: Vec<(u64, Vec<u8>)>,
    revokes: Vec<u64>,
    uncommitted: bool,
}

fn list(blocks: impl IntoIterator<Item = u64>) -> String {
    blocks
        .into_iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Write transactions into the journal of `img` with debugfs (`jo OPEN_FLAGS`,
/// one `jw` per transaction, `jc`).
fn journal_write(img: &Path, open_flags: &str, txns: &[Txn]) -> String {
    let mut script = format!("jo {open_flags}\n");
    for (i, t) in txns.iter().enumerate() {
        let mut line = "jw".to_string();
        if !t.writes.is_empty() {
            line += &format!(" -b {}", list(t.writes.iter().map(|w| w.0)));
        }
        if !t.revokes.is_empty() {
            line += &format!(" -r {}", list(t.revokes.iter().copied()));
        }
        if t.uncommitted {
            line += " -c";
        }
        if !t.writes.is_empty() {
            let data = img.with_extension(format!("t{i}.bin"));
            let bytes: Vec<u8> = t.writes.iter().flat_map(|w| w.1.clone()).collect();
            std::fs::write(&data, bytes).unwrap();
            line += &format!(" {}", data.display());
        }
        script += &line;
        script += "\n";
    }
    script += "jc\n";
    debugfs_w(img, &script)
}

/// The writes that turn image `a` into image `b`, `chunks` transactions of them.
fn diff_as_transactions(a: &Image, b: &Image, chunks: usize) -> Vec<Txn> {
    let changed = changed_blocks(a, b);
    assert!(!changed.is_empty());
    let per = changed.len().div_ceil(chunks);
    changed
        .chunks(per)
        .map(|c| Txn {
            writes: c.iter().map(|&n| (n, b.block(n).to_vec())).collect(),
            ..Default::default()
        })
        .collect()
}

fn copy(a: &Path, name: &str) -> PathBuf {
    let p = a.with_file_name(name);
    std::fs::copy(a, &p).unwrap();
    p
}

/// A host file whose first bytes are the jbd2 magic, so that its data block is
/// escaped when journalled.
fn magic_file(dir: &Path, len: usize) -> PathBuf {
    let p = dir.join("magic.bin");
    let mut v: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    v[..4].copy_from_slice(&[0xC0, 0x3B, 0x39, 0x98]);
    std::fs::write(&p, v).unwrap();
    p
}

// ---- debugfs-written journals --------------------------------------------------

/// Files added on a copy by debugfs; the changed blocks (inode table, bitmaps,
/// group descriptors, directories, data, the superblock) are journalled onto the
/// original in three transactions with checksum v3 and 64-bit tags. A data block
/// starting with the jbd2 magic is escaped.
#[test]
fn adding_files_csum_v3_64bit() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(dir.path(), "base.img", &["-b", "4096"], "32M");
    let after = copy(&base, "after.img");
    let magic = magic_file(dir.path(), 9000);
    debugfs_w(
        &after,
        &format!(
            "mkdir docs\nmkdir docs/deep\nwrite /etc/services docs/services\n\
             write {m} docs/deep/magic\nsymlink docs/link /a/target/path/longer/than/sixty/bytes/for/a/slow/symlink/x\n\
             mknod docs/fifo p\n",
            m = magic.display()
        ),
    );
    let (a, b) = (Image::load(&base), Image::load(&after));
    let txns = diff_as_transactions(&a, &b, 3);
    let out = journal_write(&base, "-c", &txns);
    assert!(out.contains("Setting csum v3"), "{out}");
    let (overlay, report) = check_against_e2fsprogs(&base);
    let d = check_against_logdump(&base, &report);
    assert!(d.escaped_tags >= 1, "an escaped block: {}", d.text);
    assert_eq!(report.transactions, 3);
    assert!(report
        .journal_features
        .contains(&"journal_checksum_v3".to_string()));
    assert!(report
        .journal_features
        .contains(&"journal_64bit".to_string()));
    // Replay reproduces the image debugfs made.
    for b_no in changed_blocks(&a, &b) {
        if b_no == 0 {
            continue; // superblock block: compared above without the superblock
        }
        assert_eq!(
            &overlay.get(b_no).unwrap()[..],
            b.block(b_no),
            "block {b_no}"
        );
    }
    assert_eq!(report.revoked, 0);
    assert_eq!(report.unapplied_transaction, None);
}

/// Files deleted on a copy; their freeing is journalled with checksum v2 and
/// 32-bit tags (10-byte tags) on a 1 KiB-block filesystem.
#[test]
fn deleting_files_csum_v2_32bit_1k_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/inner")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("sub/f{i}")), vec![i as u8; 1500 * i]).unwrap();
    }
    std::fs::write(src.join("sub/inner/keep"), b"kept").unwrap();
    let base = dir.path().join("base.img");
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-O", "^64bit", "-d"])
        .arg(&src)
        .arg(&base)
        .arg("16M"));
    let after = copy(&base, "after.img");
    let mut script = String::new();
    for i in (0..40).step_by(3) {
        script += &format!("rm sub/f{i}\n");
    }
    script += "rm sub/inner/keep\nrmdir sub/inner\n";
    debugfs_w(&after, &script);
    let (a, b) = (Image::load(&base), Image::load(&after));
    let txns = diff_as_transactions(&a, &b, 2);
    let out = journal_write(&base, "-c -v 2", &txns);
    assert!(out.contains("Setting csum v2"), "{out}");
    let (overlay, report) = check_against_e2fsprogs(&base);
    check_against_logdump(&base, &report);
    assert_eq!(report.transactions, 2);
    assert!(report
        .journal_features
        .contains(&"journal_checksum_v2".to_string()));
    assert!(!report
        .journal_features
        .contains(&"journal_64bit".to_string()));
    for b_no in changed_blocks(&a, &b) {
        if b_no == 1 {
            continue; // the superblock's block
        }
        assert_eq!(
            &overlay.get(b_no).unwrap()[..],
            b.block(b_no),
            "block {b_no}"
        );
    }
}

/// Revokes: a block written then revoked by a later transaction disappears; a
/// block revoked then written again comes back with the later content; a revoke
/// in the same transaction as the write cancels it; a revoke never cancels a
/// later transaction's write. No checksums, 32-bit tags and revoke records.
#[test]
fn revoked_blocks_32bit_no_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(
        dir.path(),
        "base.img",
        &["-b", "4096", "-O", "^metadata_csum,^64bit"],
        "32M",
    );
    let blk = |tag: u8| vec![tag; 4096];
    let (a, b, c, d, e, f) = (5000, 5001, 5002, 5003, 5004, 5005);
    let txns = vec![
        Txn {
            writes: vec![(a, blk(1)), (b, blk(2)), (c, blk(3))],
            ..Default::default()
        },
        Txn {
            revokes: vec![b],
            ..Default::default()
        },
        Txn {
            writes: vec![(c, blk(4)), (d, blk(5))],
            ..Default::default()
        },
        Txn {
            revokes: vec![d],
            ..Default::default()
        },
        Txn {
            writes: vec![(b, blk(7))],
            ..Default::default()
        },
        // debugfs puts the commit block of a transaction that has both writes
        // and revokes where the next transaction starts (it underestimates the
        // transaction's length), so such a transaction can only come last.
        Txn {
            writes: vec![(f, blk(8)), (e, blk(6))],
            revokes: vec![f],
            ..Default::default()
        },
    ];
    journal_write(&base, "", &txns);
    let (overlay, report) = check_against_e2fsprogs(&base);
    check_against_logdump(&base, &report);
    let got: Vec<(u64, u8)> = overlay.blocks.iter().map(|(&n, v)| (n, v[0])).collect();
    assert_eq!(got, vec![(a, 1), (b, 7), (c, 4), (e, 6)]);
    // b in T1, d in T3, f in T6.
    assert_eq!(report.revoked, 3);
    assert_eq!(report.transactions, 6);
}

/// A torn last transaction (its commit block never written) is not applied; the
/// committed ones before it are. 64-bit tags without checksums.
#[test]
fn torn_last_transaction_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(
        dir.path(),
        "base.img",
        &["-b", "4096", "-O", "^metadata_csum"],
        "32M",
    );
    let txns = vec![
        Txn {
            writes: vec![(6000, vec![1; 4096]), (6001, vec![2; 4096])],
            ..Default::default()
        },
        Txn {
            writes: vec![(6002, vec![3; 4096])],
            ..Default::default()
        },
        Txn {
            writes: vec![(6001, vec![9; 4096]), (6003, vec![4; 4096])],
            uncommitted: true,
            ..Default::default()
        },
    ];
    journal_write(&base, "", &txns);
    let (overlay, report) = check_against_e2fsprogs(&base);
    check_against_logdump(&base, &report);
    let got: Vec<(u64, u8)> = overlay.blocks.iter().map(|(&n, v)| (n, v[0])).collect();
    assert_eq!(got, vec![(6000, 1), (6001, 2), (6002, 3)]);
    assert_eq!(report.transactions, 2);
    assert_eq!(report.unapplied_transaction, report.end_sequence);
    assert!(report.unapplied_transaction.is_some());
    assert!(
        report.notes.iter().any(|n| n.contains("torn")),
        "{:?}",
        report.notes
    );
}

/// Find the journal block of the commit block of transaction `seq` via logdump.
fn commit_block_of(img: &Path, seq: u32) -> u64 {
    let d = logdump(img);
    d.text
        .lines()
        .find(|l| l.starts_with(&format!("Found expected sequence {seq}, type 2")))
        .and_then(|l| l.rsplit("at block ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no commit for {seq}: {}", d.text))
}

fn corrupt_journal_byte(img: &Path, jblock: u64, offset: usize) {
    let loc = journal_location(img);
    let bs = Image::load(img).bs;
    let phys = journal_phys(&loc, jblock);
    let mut bytes = std::fs::read(img).unwrap();
    bytes[phys as usize * bs + offset] ^= 0x5A;
    std::fs::write(img, bytes).unwrap();
}

/// A commit block whose checksum fails ends the log: that transaction and those
/// after it are not applied (csum v3), as e2fsprogs agrees.
#[test]
fn bad_commit_checksum_stops_replay_csum_v3() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(dir.path(), "base.img", &["-b", "4096"], "32M");
    let txns: Vec<Txn> = (0..3u8)
        .map(|i| Txn {
            writes: vec![(7000 + u64::from(i), vec![i + 1; 4096])],
            ..Default::default()
        })
        .collect();
    journal_write(&base, "-c", &txns);
    let d = logdump(&base);
    assert_eq!(d.commits.len(), 3);
    let second = d.commits[1];
    // A byte of h_chksum[0] in the second commit block.
    corrupt_journal_byte(&base, commit_block_of(&base, second), 0x11);
    let (overlay, report) = check_against_e2fsprogs(&base);
    assert_eq!(report.transactions, 1);
    assert_eq!(report.unapplied_transaction, Some(second));
    let got: Vec<u64> = overlay.blocks.keys().copied().collect();
    assert_eq!(got, vec![7000]);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("fails its checksum")),
        "{:?}",
        report.notes
    );
}

/// Checksum v1 (COMPAT_CHECKSUM, a crc32 over each transaction in its commit
/// block): a damaged data block makes the commit's crc fail, so the transaction
/// and the ones after it are not applied.
#[test]
fn checksum_v1_commit_crc_covers_data_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(
        dir.path(),
        "base.img",
        &["-b", "1024", "-O", "^metadata_csum,^64bit"],
        "16M",
    );
    let txns: Vec<Txn> = (0..3u8)
        .map(|i| Txn {
            writes: vec![
                (9000 + 2 * u64::from(i), vec![i + 1; 1024]),
                (9001 + 2 * u64::from(i), vec![i + 0x41; 1024]),
            ],
            ..Default::default()
        })
        .collect();
    journal_write(&base, "-c", &txns);
    let clean = copy(&base, "clean.img");
    let (overlay, report) = check_against_e2fsprogs(&clean);
    check_against_logdump(&clean, &report);
    assert_eq!(report.transactions, 3);
    assert_eq!(overlay.blocks.len(), 6);
    assert!(report
        .journal_features
        .contains(&"journal_checksum".to_string()));

    // Damage the last data block of the second transaction (just before its
    // commit block).
    let d = logdump(&base);
    corrupt_journal_byte(&base, commit_block_of(&base, d.commits[1]) - 1, 100);
    let (overlay, report) = check_against_e2fsprogs(&base);
    assert_eq!(report.transactions, 1);
    assert_eq!(overlay.blocks.len(), 2);
    assert_eq!(report.unapplied_transaction, Some(d.commits[1]));
}

/// A damaged data block in a committed csum v3 transaction: the kernel fails
/// recovery (and the mount), so replay is a checksum error. Revoking that block
/// later makes the damage harmless, as in the kernel.
#[test]
fn bad_data_block_checksum_is_an_error_unless_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(dir.path(), "base.img", &["-b", "4096"], "32M");
    let t1 = Txn {
        writes: vec![(7100, vec![1; 4096]), (7101, vec![2; 4096])],
        ..Default::default()
    };
    let mut txns = vec![t1.clone()];
    journal_write(&base, "-c", &txns);
    let revoked = copy(&base, "revoked.img");
    // The first data block of T1 sits right after its descriptor (block s_start).
    let loc = journal_location(&base);
    let img = Image::load(&base);
    let jsb =
        JournalSuperblock::decode(img.block(journal_phys(&loc, 0))[..1024].try_into().unwrap());
    let first_data = u64::from(jsb.s_start) + 1;
    corrupt_journal_byte(&base, first_data, 2000);
    let e = replay_image(&Image::load(&base), &loc).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
    assert!(e.to_string().contains("jbd2 data block"), "{e}");

    // Same damage, then a later transaction revokes block 7100.
    txns = vec![Txn {
        revokes: vec![7100],
        ..Default::default()
    }];
    journal_write(&revoked, "", &txns);
    corrupt_journal_byte(&revoked, first_data, 2000);
    let (overlay, report) = replay_image(&Image::load(&revoked), &loc).unwrap();
    assert_eq!(
        overlay.blocks.keys().copied().collect::<Vec<_>>(),
        vec![7101]
    );
    assert_eq!(report.revoked, 1);
}

/// Rewrite the journal superblock of `img` through `edit`, refreshing its
/// checksum when the journal has v2/v3 checksums.
fn edit_journal_sb(img: &Path, edit: impl FnOnce(&mut JournalSuperblock)) {
    let loc = journal_location(img);
    let bs = Image::load(img).bs;
    let phys = journal_phys(&loc, 0) as usize;
    let mut bytes = std::fs::read(img).unwrap();
    let raw: &mut [u8; 1024] = (&mut bytes[phys * bs..phys * bs + 1024])
        .try_into()
        .unwrap();
    let mut jsb = JournalSuperblock::decode(raw);
    edit(&mut jsb);
    jsb.encode(raw);
    if jsb.s_feature_incompat & 0x18 != 0 {
        let c = JournalSuperblock::compute_checksum(raw);
        raw[0xFC..0x100].copy_from_slice(&c.to_be_bytes());
    }
    std::fs::write(img, bytes).unwrap();
}

/// The log wraps past its end back to s_first, and the transaction sequence wraps
/// past 2^32 - 1. debugfs only writes from s_first, so the sequence is set near
/// the wrap before writing and the written log is then rotated in place so that
/// it straddles the end of the journal (a log block's meaning does not depend on
/// its position, only on the order of the walk).
#[test]
fn log_and_sequence_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(dir.path(), "base.img", &["-b", "4096"], "32M");
    edit_journal_sb(&base, |j| j.s_sequence = 0xFFFF_FFFE);
    let txns: Vec<Txn> = (0..4u8)
        .map(|i| Txn {
            writes: (0..5)
                .map(|k| (8000 + 10 * u64::from(i) + k, vec![i * 16 + k as u8; 4096]))
                .collect(),
            revokes: if i == 3 { vec![8000] } else { vec![] },
            ..Default::default()
        })
        .collect();
    let magic = {
        let mut v = vec![0x77; 4096];
        v[..4].copy_from_slice(&[0xC0, 0x3B, 0x39, 0x98]);
        v
    };
    let mut txns = txns;
    txns[1].writes.push((8100, magic.clone()));
    let out = journal_write(&base, "-c", &txns);
    assert!(out.contains("Setting csum v3"), "{out}");
    let before = logdump(&base);
    assert_eq!(
        before.commits,
        vec![0xFFFF_FFFE, 0xFFFF_FFFF, 0, 1],
        "{}",
        before.text
    );

    // Rotate the log area so that it starts 10 blocks before its end.
    let loc = journal_location(&base);
    let mut bytes = std::fs::read(&base).unwrap();
    let bs = 4096usize;
    let jsb = JournalSuperblock::decode(
        bytes[journal_phys(&loc, 0) as usize * bs..][..1024]
            .try_into()
            .unwrap(),
    );
    let (first, maxlen) = (u64::from(jsb.s_first), u64::from(jsb.s_maxlen));
    let len = maxlen - first;
    let old_start = u64::from(jsb.s_start);
    let new_start = maxlen - 10;
    let shift = (new_start - old_start + len) % len;
    let log: Vec<Vec<u8>> = (first..maxlen)
        .map(|j| {
            let o = journal_phys(&loc, j) as usize * bs;
            bytes[o..o + bs].to_vec()
        })
        .collect();
    for (i, blk) in log.iter().enumerate() {
        let to = first + (i as u64 + shift) % len;
        let o = journal_phys(&loc, to) as usize * bs;
        bytes[o..o + bs].copy_from_slice(blk);
    }
    std::fs::write(&base, bytes).unwrap();
    edit_journal_sb(&base, |j| j.s_start = new_start as u32);

    let (overlay, report) = check_against_e2fsprogs(&base);
    let after = check_against_logdump(&base, &report);
    assert_eq!(after.commits, before.commits);
    assert_eq!(report.first_sequence, Some(0xFFFF_FFFE));
    assert_eq!(report.last_sequence, Some(1));
    assert_eq!(report.end_sequence, Some(2));
    assert_eq!(report.transactions, 4);
    assert_eq!(&overlay.get(8100).unwrap()[..], &magic[..]);
    assert!(overlay.get(8000).is_none());
    assert_eq!(report.revoked, 1);
    assert_eq!(overlay.blocks.len(), 4 * 5 - 1 + 1);
}

// ---- hostile journals ----------------------------------------------------------

/// A dirty csum v3 journal with two committed transactions, for mutation.
fn dirty_v3(dir: &Path) -> PathBuf {
    let base = mkfs(dir, "base.img", &["-b", "1024"], "8M");
    let txns = vec![
        Txn {
            writes: vec![(3000, vec![1; 1024]), (2000, vec![2; 1024])],
            ..Default::default()
        },
        Txn {
            revokes: vec![2000],
            ..Default::default()
        },
        // Writes and revokes together only in the last transaction (see
        // revoked_blocks_32bit_no_checksums).
        Txn {
            writes: vec![(3001, vec![3; 1024])],
            revokes: vec![3000],
            ..Default::default()
        },
    ];
    journal_write(&base, "-c", &txns);
    let d = logdump(&base);
    assert_eq!(d.commits.len(), 3, "{}", d.text);
    base
}

#[test]
fn journal_superblock_damage_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = dirty_v3(dir.path());
    let loc = journal_location(&base);

    // A flipped byte in the superblock: checksum error.
    let p = copy(&base, "sbcsum.img");
    let phys = journal_phys(&loc, 0);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[phys as usize * 1024 + 0x40] ^= 1; // s_nr_users
    std::fs::write(&p, bytes).unwrap();
    let e = replay_image(&Image::load(&p), &loc).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");

    type Edit = Box<dyn Fn(&mut JournalSuperblock)>;
    let cases: Vec<(&str, Edit, ErrorKind)> = vec![
        (
            "maxlen past the inode",
            Box::new(|j| j.s_maxlen += 100),
            ErrorKind::Corrupt,
        ),
        (
            "start past the log",
            Box::new(|j| j.s_start = j.s_maxlen + 5),
            ErrorKind::Corrupt,
        ),
        (
            "first zero",
            Box::new(|j| j.s_first = 0),
            ErrorKind::Corrupt,
        ),
        (
            "unknown incompat",
            Box::new(|j| j.s_feature_incompat |= 0x1000),
            ErrorKind::Unsupported,
        ),
        (
            "blocksize",
            Box::new(|j| j.s_blocksize = 4096),
            ErrorKind::Corrupt,
        ),
        (
            "v2 and v3",
            Box::new(|j| j.s_feature_incompat |= 0x8),
            ErrorKind::Corrupt,
        ),
        ("magic", Box::new(|j| j.h_magic = 0), ErrorKind::Corrupt),
        (
            "fast commit area larger than the journal",
            Box::new(|j| {
                j.s_feature_incompat |= 0x20;
                j.s_num_fc_blks = j.s_maxlen;
            }),
            ErrorKind::Corrupt,
        ),
    ];
    for (what, edit, kind) in cases {
        let p = copy(&base, "edited.img");
        edit_journal_sb(&p, edit);
        let e = replay_image(&Image::load(&p), &loc).unwrap_err();
        assert_eq!(e.kind(), kind, "{what}: {e}");
    }

    // A hole in the journal inode's map where the log is (journal block 3).
    let holed = JournalLocation {
        extents: (0..loc.len_blocks)
            .filter(|&j| j != 3)
            .map(|j| (j, journal_phys(&loc, j), 1))
            .collect(),
        len_blocks: loc.len_blocks,
    };
    let e = replay_image(&Image::load(&base), &holed).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("not mapped"), "{e}");
    // An extent past the filesystem.
    let mut beyond = loc.clone();
    beyond.extents[0].1 = Image::load(&base).blocks();
    let e = replay_image(&Image::load(&base), &beyond).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

/// Every log block is a descriptor of the expected transaction: the log never
/// ends, and the kernel's walk would go round forever. Replay stops after one
/// lap, applies nothing and says why.
#[test]
fn circular_log_stops_after_one_lap() {
    let dir = tempfile::tempdir().unwrap();
    let base = mkfs(
        dir.path(),
        "base.img",
        &["-b", "1024", "-O", "^metadata_csum,^64bit"],
        "8M",
    );
    journal_write(
        &base,
        "",
        &[Txn {
            writes: vec![(3000, vec![1; 1024])],
            ..Default::default()
        }],
    );
    let loc = journal_location(&base);
    let mut bytes = std::fs::read(&base).unwrap();
    let jsb = JournalSuperblock::decode(
        bytes[journal_phys(&loc, 0) as usize * 1024..][..1024]
            .try_into()
            .unwrap(),
    );
    for j in u64::from(jsb.s_first)..u64::from(jsb.s_maxlen) {
        let o = journal_phys(&loc, j) as usize * 1024;
        let blk = &mut bytes[o..o + 1024];
        blk.fill(0);
        blk[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
        blk[4..8].copy_from_slice(&1u32.to_be_bytes());
        blk[8..12].copy_from_slice(&jsb.s_sequence.to_be_bytes());
    }
    std::fs::write(&base, bytes).unwrap();
    let (overlay, report) = replay_image(&Image::load(&base), &loc).unwrap();
    assert!(overlay.is_empty());
    assert_eq!(report.transactions, 0);
    assert!(report.journal_blocks_read <= u64::from(jsb.s_maxlen) + 1);
    assert!(
        report.notes.iter().any(|n| n.contains("looping")),
        "{:?}",
        report.notes
    );
}

/// Random byte damage anywhere in a dirty journal never panics, never loops, and
/// never reads a journal block twice or holds more blocks than the journal has.
#[test]
fn random_damage_never_panics_or_loops() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let base = dirty_v3(dir.path());
    let loc = journal_location(&base);
    let clean = Image::load(&base);
    let jsb = JournalSuperblock::decode(
        clean.block(journal_phys(&loc, 0))[..1024]
            .try_into()
            .unwrap(),
    );
    let used = u64::from(jsb.s_start) + 12;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a62_6432);
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..400 {
        let mut img = Image::load(&base);
        for _ in 0..rng.random_range(1..4) {
            let j = rng.random_range(0..used);
            let off = rng.random_range(0..1024usize);
            let phys = journal_phys(&loc, j) as usize;
            img.bytes[phys * 1024 + off] = rng.random();
        }
        // Skip the superblock checksum sometimes, so mutations reach the log.
        if rng.random_bool(0.5) {
            let p = journal_phys(&loc, 0) as usize * 1024;
            let raw: &mut [u8; 1024] = (&mut img.bytes[p..p + 1024]).try_into().unwrap();
            let c = JournalSuperblock::compute_checksum(raw);
            raw[0xFC..0x100].copy_from_slice(&c.to_be_bytes());
        }
        match replay_image(&img, &loc) {
            Ok((overlay, report)) => {
                assert!(report.journal_blocks_read <= u64::from(jsb.s_maxlen) + 1);
                assert!(overlay.blocks.len() as u64 <= loc.len_blocks);
                *outcomes.entry("ok".into()).or_insert(0) += 1;
            }
            Err(e) => {
                *outcomes.entry(format!("{:?}", e.kind())).or_insert(0) += 1;
            }
        }
    }
    // The mutations reached more than one outcome.
    assert!(outcomes.len() >= 2, "{outcomes:?}");
}

// ---- kernel-written journals ---------------------------------------------------

/// The Linux kernel writes the journals: three filesystems are mounted in one
/// libguestfs appliance, files are created and deleted, an fsync makes the
/// journal commit, and the appliance is rebooted on the spot (sysrq `b`: no
/// unmount, no writeback), so the images keep their dirty journals. Writeback is
/// switched off first so the home locations of the journalled blocks are stale
/// and replay really matters.
///
/// - a: ext4 defaults, 4 KiB blocks: csum v3, 64-bit tags, revoke records;
/// - b: 1 KiB blocks, no metadata_csum, no 64bit, mounted with
///   journal_async_commit: checksum v1 and async commits, 32-bit tags;
/// - c: fast_commit: a file fsynced after the last full commit is logged as a
///   fast commit, which imgsan reports instead of replaying.
#[test]
fn kernel_written_journals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = mkfs(d, "a.img", &["-b", "4096"], "64M");
    let b = mkfs(
        d,
        "b.img",
        &["-b", "1024", "-O", "^metadata_csum,^64bit"],
        "64M",
    );
    let c = mkfs(d, "c.img", &["-b", "1024", "-O", "fast_commit"], "64M");
    let payload = d.join("payload.bin");
    std::fs::write(
        &payload,
        (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let p = payload.display();
    let script = format!(
        r#"run
debug sh "echo 0 > /proc/sys/vm/dirty_writeback_centisecs; echo 360000 > /proc/sys/vm/dirty_expire_centisecs"
mkmountpoint /a
mkmountpoint /b
mkmountpoint /c
mount-options "commit=1" /dev/sda /a
mount-options "commit=1,data=writeback,journal_async_commit" /dev/sdb /b
mount-options "commit=600" /dev/sdc /c
mkdir-p /a/old/sub
write /a/old/f1 "first file"
upload {p} /a/old/payload
mkdir-p /b/old/sub
write /b/old/f1 "first file"
upload {p} /b/old/payload
mkdir /c/old
write /c/old/f1 "first"
sync
rm /a/old/f1
rm-rf /a/old/sub
rm /a/old/payload
mkdir-p /a/new/deep
upload {p} /a/new/deep/payload
ln-s /a/new/deep/payload /a/new/link
write /a/new/small "small"
rm /b/old/payload
mkdir-p /b/new/deep
upload {p} /b/new/deep/payload
write /b/new/small "small"
debug sh "dd if=/dev/zero of=/sysroot/a/new/synced bs=1024 count=2 conv=fsync"
debug sh "dd if=/dev/zero of=/sysroot/b/new/synced bs=1024 count=2 conv=fsync"
debug sh "dd if=/dev/urandom of=/sysroot/c/fc1 bs=4096 count=3 conv=fsync"
sleep 2
debug sh "echo b > /proc/sysrq-trigger"
"#
    );
    let last_line = script.lines().count();
    let gf = d.join("crash.gf");
    std::fs::write(&gf, &script).unwrap();
    let out = Command::new("timeout")
        .arg("1800")
        .arg("guestfish")
        .arg("--format=raw")
        .args(["-a".as_ref(), a.as_os_str()])
        .args(["-a".as_ref(), b.as_os_str()])
        .args(["-a".as_ref(), c.as_os_str()])
        .arg("-f")
        .arg(&gf)
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .output()
        .expect("guestfish runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The appliance dies on the last command, and only there.
    assert!(
        stderr.contains(&format!("crash.gf:{last_line}:")),
        "guestfish did not reach the crash: {stderr}"
    );

    for (img, want_features) in [
        (&a, &["journal_checksum_v3", "journal_64bit"][..]),
        (&b, &["journal_checksum", "journal_async_commit"][..]),
    ] {
        let (overlay, report) = check_against_e2fsprogs(img);
        check_against_logdump(img, &report);
        for f in want_features {
            assert!(
                report.journal_features.contains(&f.to_string()),
                "{img:?}: {report:#?}"
            );
        }
        eprintln!("{img:?}: {report:#?}");
        assert!(report.transactions >= 2, "{img:?}: {report:#?}");
        let dirty = Image::load(img);
        let stale = overlay
            .blocks
            .iter()
            .filter(|(&n, v)| dirty.block(n) != &v[..])
            .count();
        assert!(
            stale > 0,
            "{img:?}: replay changes nothing, the crash came too late: {report:#?}"
        );
        assert!(overlay.fast.is_none());
    }
    // Deleting a directory whose block an earlier transaction logged makes the
    // kernel write a revoke record for it.
    let a_report = replay_image(&Image::load(&a), &journal_location(&a))
        .unwrap()
        .1;
    assert!(a_report.revoked > 0, "{a_report:#?}");

    // c: the full commits replay like e2fsprogs', and the fast commits that
    // follow them are decoded into the overlay (the tree they give is checked
    // against e2fsck on the corpus image in tests/e2fsprogs_corpus.rs).
    let c_img = Image::load(&c);
    let (c_overlay, c_report) = replay_image(&c_img, &journal_location(&c)).unwrap();
    eprintln!("{c:?}: {c_report:#?}");
    assert!(c_overlay.fast.is_some(), "{c_report:#?}");
    let dump = logdump(&c);
    let end = c_report.end_sequence.unwrap();
    assert!(
        dump.text
            .contains(&format!("tag HEAD, features 0x0, tid {end}")),
        "{}",
        dump.text
    );
    let tails = dump
        .text
        .lines()
        .filter(|l| *l == format!("tag TAIL, tid {end}"))
        .count();
    assert_eq!(c_report.fast_commits as usize, tails, "{}", dump.text);
    assert!(c_report.notes.iter().any(|n| n.contains("fast commit")));
    // e2fsprogs would replay the fast commits too, so its oracle runs on a copy
    // whose journal no longer advertises them.
    let plain = copy(&c, "c-plain.img");
    edit_journal_sb(&plain, |j| j.s_feature_incompat &= !0x20);
    let (plain_overlay, plain_report) = check_against_e2fsprogs(&plain);
    check_against_logdump(&plain, &plain_report);
    assert!(plain_overlay.fast.is_none());
    assert_eq!(plain_overlay.blocks, c_overlay.blocks);
    assert_eq!(plain_report.transactions, c_report.transactions);
}
