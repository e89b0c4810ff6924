//! ext4: reading a volume into a Tree (superblock, groups, inodes, extents, directories,
//! xattrs, journal replay) and building a fresh volume from a Tree.
