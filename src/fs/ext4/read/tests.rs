//! Unit tests of the reader on small images made by mke2fs.
