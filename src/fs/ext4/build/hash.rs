//! Directory-entry name hashes for htree (dir_index) directories: legacy
//! (`dx_hack_hash`), half-MD4 and TEA, each with the signed-`char` and
//! unsigned-`char` readings of the name bytes. The builder orders entries and
//! fills dx_root/dx_node indexes with these, so they must agree bit for bit with
//! the kernel's `fs/ext4/hash.c` (checked in the tests against `debugfs dx_hash`).
//!
//! Owns nothing but arithmetic; it never sees a directory block. siphash
//! (casefolded and encrypted directories) is not here: the builder refuses those
//! features.

use crate::fs::ext4::superblock::{flags, hash_version, Superblock};

/// Which hash, with the signedness of name bytes folded in (values as in
/// `s_def_hash_version` / dx_root `hash_version`, 0..=5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirHash {
    pub version: u8,
    pub seed: [u32; 4],
}

/// The seed MD4 starts from when the superblock's seed is all zeros.
const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

impl DirHash {
    /// The hash the kernel uses for new directories of this filesystem:
    /// `s_def_hash_version`, moved to its unsigned variant when `s_flags` says
    /// names hash unsigned (`ext4_fill_super` sets `s_hash_unsigned`; `dx_probe`
    /// adds it to versions up to TEA). With neither hint flag the kernel on x86
    /// hashes signed, and so do we.
    pub fn for_superblock(sb: &Superblock) -> Self {
        let mut version = sb.s_def_hash_version;
        if version <= hash_version::TEA && sb.s_flags & flags::UNSIGNED_HASH != 0 {
            version += 3;
        }
        let mut seed = [0u32; 4];
        for (i, s) in seed.iter_mut().enumerate() {
            *s = u32::from_le_bytes([
                sb.s_hash_seed[4 * i],
                sb.s_hash_seed[4 * i + 1],
                sb.s_hash_seed[4 * i + 2],
                sb.s_hash_seed[4 * i + 3],
            ]);
        }
        DirHash { version, seed }
    }

    /// Whether `version` is one this module computes.
    pub fn supported(version: u8) -> bool {
        version <= hash_version::TEA_UNSIGNED
    }

    /// (major hash, minor hash) of a name. The major hash has its low bit clear
    /// (the bit marks hash-collision continuations in index entries).
    pub fn hash(&self, name: &[u8]) -> (u32, u32) {
        let unsigned = self.version >= hash_version::LEGACY_UNSIGNED;
        let mut buf = if self.seed == [0; 4] {
            DEFAULT_SEED
        } else {
            self.seed
        };
        if name.is_empty() {
            return (0, 0);
        }
        let (major, minor) = match self.version {
            hash_version::LEGACY | hash_version::LEGACY_UNSIGNED => (legacy(name, unsigned), 0),
            hash_version::HALF_MD4 | hash_version::HALF_MD4_UNSIGNED => {
                let mut input = [0u32; 8];
                let mut rest = name;
                loop {
                    words(rest, &mut input, unsigned);
                    half_md4(&mut buf, &input);
                    if rest.len() <= 32 {
                        break;
                    }
                    rest = &rest[32..];
                }
                (buf[1], buf[2])
            }
            _ => {
                let mut input = [0u32; 4];
                let mut rest = name;
                loop {
                    words(rest, &mut input, unsigned);
                    tea(&mut buf, &input);
                    if rest.len() <= 16 {
                        break;
                    }
                    rest = &rest[16..];
                }
                (buf[0], buf[1])
            }
        };
        let mut major = major & !1;
        // fs/ext4/hash.c: the all-ones 31-bit value is the end-of-directory
        // cookie for 32-bit readdir, so the kernel moves names that hash to it
        // one step down.
        if major == 0x7fff_ffff << 1 {
            major = (0x7fff_ffff - 1) << 1;
        }
        (major, minor)
    }
}

fn byte(b: u8, unsigned: bool) -> u32 {
    if unsigned {
        u32::from(b)
    } else {
        i32::from(b as i8) as u32
    }
}

/// `dx_hack_hash`.
fn legacy(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1): (u32, u32) = (0x12a3_fe2d, 0x37ab_e8f9);
    for &b in name {
        let mut h = h1.wrapping_add(h0 ^ byte(b, unsigned).wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// `str2hashbuf`: pack up to `out.len() * 4` name bytes into words, padding with
/// a pattern derived from the remaining length.
fn words(msg: &[u8], out: &mut [u32], unsigned: bool) {
    // Names are at most 255 bytes, so the length fits the byte lanes exactly.
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let take = msg.len().min(out.len() * 4);
    let mut val = pad;
    let mut w = 0;
    for (i, &b) in msg[..take].iter().enumerate() {
        val = byte(b, unsigned).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < out.len() {
        out[w] = val;
        w += 1;
    }
    for o in &mut out[w..] {
        *o = pad;
    }
}

fn tea(buf: &mut [u32; 4], input: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let [a, b, c, d] = *input;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            ((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)),
        );
        b1 = b1.wrapping_add(
            ((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);

    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);

    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}
