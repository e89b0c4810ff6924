//! Fixed-layout on-disk structures, decoded and encoded by the same table.
//!
//! `ondisk_struct!` declares a struct whose fields carry their byte offsets; it
//! generates `decode(&[u8; SIZE])` and `encode(&self, &mut [u8; SIZE])` from that one
//! list, so reading and writing a structure cannot drift apart, and the struct's size
//! is pinned at compile time. Little-endian (ext4) and big-endian (jbd2, XFS)
//! variants exist. Decoding a fixed-size array cannot fail; validation is the
//! caller's job, done once on the decoded struct.

/// A value stored little-endian at a byte offset.
pub trait Le: Sized {
    fn get_le(b: &[u8], off: usize) -> Self;
    fn put_le(&self, b: &mut [u8], off: usize);
}

/// A value stored big-endian at a byte offset.
pub trait Be: Sized {
    fn get_be(b: &[u8], off: usize) -> Self;
    fn put_be(&self, b: &mut [u8], off: usize);
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Le for $t {
            #[inline]
            fn get_le(b: &[u8], off: usize) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[off..off + std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(a)
            }
            #[inline]
            fn put_le(&self, b: &mut [u8], off: usize) {
                b[off..off + std::mem::size_of::<$t>()].copy_from_slice(&self.to_le_bytes());
            }
        }
        impl Be for $t {
            #[inline]
            fn get_be(b: &[u8], off: usize) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[off..off + std::mem::size_of::<$t>()]);
                <$t>::from_be_bytes(a)
            }
            #[inline]
            fn put_be(&self, b: &mut [u8], off: usize) {
                b[off..off + std::mem::size_of::<$t>()].copy_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}
int_codec!(u8, u16, u32, u64, i16, i32, i64);

impl<const N: usize> Le for [u8; N] {
    fn get_le(b: &[u8], off: usize) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[off..off + N]);
        a
    }
    fn put_le(&self, b: &mut [u8], off: usize) {
        b[off..off + N].copy_from_slice(self);
    }
}

impl<const N: usize> Be for [u8; N] {
    fn get_be(b: &[u8], off: usize) -> Self {
        <[u8; N] as Le>::get_le(b, off)
    }
    fn put_be(&self, b: &mut [u8], off: usize) {
        <[u8; N] as Le>::put_le(self, b, off)
    }
}

impl<const N: usize> Le for [u32; N] {
    fn get_le(b: &[u8], off: usize) -> Self {
        let mut a = [0u32; N];
        for (i, v) in a.iter_mut().enumerate() {
            *v = u32::get_le(b, off + 4 * i);
        }
        a
    }
    fn put_le(&self, b: &mut [u8], off: usize) {
        for (i, v) in self.iter().enumerate() {
            v.put_le(b, off + 4 * i);
        }
    }
}

impl<const N: usize> Be for [u32; N] {
    fn get_be(b: &[u8], off: usize) -> Self {
        let mut a = [0u32; N];
        for (i, v) in a.iter_mut().enumerate() {
            *v = u32::get_be(b, off + 4 * i);
        }
        a
    }
    fn put_be(&self, b: &mut [u8], off: usize) {
        for (i, v) in self.iter().enumerate() {
            v.put_be(b, off + 4 * i);
        }
    }
}

/// Declare an on-disk structure. Fields are listed with their offsets; the macro
/// checks at compile time that each field ends inside the structure, and generates
/// `SIZE`, `decode`, `encode` and `to_bytes`.
///
/// ```ignore
/// ondisk_struct! {
///     /// doc
///     pub struct Foo: 16, le {
///         a_magic: u32 = 0x0,
///         a_count: u16 = 0x4,
///     }
/// }
/// ```
#[macro_export]
macro_rules! ondisk_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident : $size:literal, $endian:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $off:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        #[allow(dead_code)]
        impl $name {
            pub const SIZE: usize = $size;

            /// Decode from exactly `SIZE` bytes.
            pub fn decode(b: &[u8; $size]) -> Self {
                $name {
                    $( $field: $crate::ondisk_struct!(@get $endian, $ty, b, $off), )*
                }
            }

            /// Encode into exactly `SIZE` bytes. Bytes not covered by a field are
            /// left as they are, so a caller can encode over the original bytes and
            /// keep unknown fields.
            pub fn encode(&self, b: &mut [u8; $size]) {
                $( $crate::ondisk_struct!(@put $endian, $ty, &self.$field, b, $off); )*
            }

            /// Encode into a fresh zeroed buffer.
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut b = [0u8; $size];
                self.encode(&mut b);
                b
            }
        }

        #[allow(clippy::int_plus_one)]
        const _: () = {
            $( assert!($off + std::mem::size_of::<$ty>() <= $size, concat!("field ", stringify!($field), " passes the end of ", stringify!($name))); )*
        };
    };
    (@get le, $ty:ty, $b:ident, $off:literal) => { <$ty as $crate::fs::codec::Le>::get_le(&$b[..], $off) };
    (@get be, $ty:ty, $b:ident, $off:literal) => { <$ty as $crate::fs::codec::Be>::get_be(&$b[..], $off) };
    (@put le, $ty:ty, $v:expr, $b:ident, $off:literal) => { <$ty as $crate::fs::codec::Le>::put_le($v, &mut $b[..], $off) };
    (@put be, $ty:ty, $v:expr, $b:ident, $off:literal) => { <$ty as $crate::fs::codec::Be>::put_be($v, &mut $b[..], $off) };
}

/// Read a little-endian integer at `off` of a slice, or `None` past its end.
pub fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Read a little-endian u32 at `off` of a slice, or `None` past its end.
pub fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Read a little-endian u64 at `off` of a slice, or `None` past its end.
pub fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Read a big-endian u32 at `off` of a slice, or `None` past its end.
pub fn be_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Read a big-endian u64 at `off` of a slice, or `None` past its end.
pub fn be_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    crate::ondisk_struct! {
        /// A test structure.
        pub struct Sample: 16, le {
            s_a: u32 = 0x0,
            s_b: u16 = 0x4,
            s_c: [u8; 4] = 0x8,
            s_d: u8 = 0xf,
        }
    }

    crate::ondisk_struct! {
        pub struct SampleBe: 8, be {
            h_magic: u32 = 0x0,
            h_seq: u32 = 0x4,
        }
    }

    #[test]
    fn round_trip_keeps_bytes() {
        let mut raw = [0u8; 16];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = i as u8 * 7;
        }
        let s = Sample::decode(&raw);
        assert_eq!(s.s_a, u32::from_le_bytes([0, 7, 14, 21]));
        let mut out = raw;
        s.encode(&mut out);
        assert_eq!(out, raw);
        let be = SampleBe::decode(&[0xc0, 0x3b, 0x39, 0x98, 0, 0, 0, 2]);
        assert_eq!(be.h_magic, 0xc03b3998);
        assert_eq!(be.to_bytes(), [0xc0, 0x3b, 0x39, 0x98, 0, 0, 0, 2]);
    }
}
