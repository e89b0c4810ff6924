//! XFS: reading a volume into a Tree (superblock, allocation groups, inode
//! B+trees, inodes, forks, directories, attributes) and, in `build`, making a
//! fresh volume from one. `ondisk` holds the structures both sides share.

pub mod log;
pub mod ondisk;
pub mod read;
pub mod volume;
