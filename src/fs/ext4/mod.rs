//! ext4: reading a volume into a Tree (superblock, groups, inodes, extents,
//! directories, xattrs, journal replay) and building a fresh volume from a Tree.

pub mod build;
pub mod csum;
pub mod group;
pub mod journal;
pub mod ondisk;
pub mod read;
pub mod superblock;
pub mod volume;
