#![no_main]
//! jbd2 replay over arbitrary journal contents: the input is the journal itself
//! (1 KiB blocks, mapped contiguously after a small filesystem), replayed with the
//! needs_recovery flag set and both 32- and 64-bit filesystem feature sets.
use imgsan::fs::ext4::journal::{replay, JournalLocation};
use imgsan::fs::ext4::superblock::{incompat, Superblock};
use libfuzzer_sys::fuzz_target;

const BS: usize = 1024;
const FS_BLOCKS: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let jblocks = (data.len() / BS) as u64;
    if jblocks < 2 || jblocks > 1024 {
        return;
    }
    for wide in [false, true] {
        let mut raw = [0u8; 1024];
        let mut sb = Superblock::decode(&raw);
        sb.s_magic = 0xEF53;
        sb.s_log_block_size = 0;
        sb.s_first_data_block = 1;
        sb.s_blocks_per_group = 8192;
        sb.s_inodes_per_group = 1024;
        sb.s_rev_level = 1;
        sb.s_inode_size = 256;
        sb.s_feature_incompat = incompat::RECOVER | if wide { incompat::BIT64 } else { 0 };
        sb.s_desc_size = if wide { 64 } else { 0 };
        sb.set_blocks_count(FS_BLOCKS + jblocks);
        sb.encode(&mut raw);
        let loc = JournalLocation {
            extents: vec![(0, FS_BLOCKS, jblocks)],
            len_blocks: jblocks,
        };
        let read = |blk: u64, buf: &mut [u8]| -> imgsan::Result<()> {
            buf.fill(0);
            if blk >= FS_BLOCKS {
                let o = ((blk - FS_BLOCKS) as usize) * BS;
                if let Some(src) = data.get(o..o + buf.len()) {
                    buf.copy_from_slice(src);
                }
            }
            Ok(())
        };
        let _ = replay(&sb, &loc, &read);
    }
});
