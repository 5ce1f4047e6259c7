//! FUSE
