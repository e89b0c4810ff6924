//! The checksum primitives ext4 and jbd2 use, in one place so that readers verify and
//! builders compute with the same code.
//!
//! ext4's crc32c is the kernel's raw `crc32c_le(seed, data)`: no inversion on entry
//! or exit. The `crc32c` crate computes the standard CRC-32C (inverted at both ends),
//! so the raw form is `!crc32c_append(!seed, data)`.

/// The kernel's `crc32c_le(seed, data)` (no pre- or post-inversion).
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// CRC-16 (polynomial 0x8005, reflected: 0xA001), as used for `gdt_csum` group
/// descriptor checksums (lib/ext2fs/crc16.c in e2fsprogs, `crc16` in the kernel).
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc32c_matches_the_standard_form() {
        // Standard CRC-32C of "123456789" is 0xE3069283.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
        // Chaining the raw form equals one pass.
        let a = crc32c_raw(0x1234_5678, b"hello ");
        assert_eq!(
            crc32c_raw(a, b"world"),
            crc32c_raw(0x1234_5678, b"hello world")
        );
    }

    #[test]
    fn crc16_known_value() {
        // CRC-16/ARC of "123456789" (init 0) is 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
