//! Where a chunk store keeps each chunk: the layout of `chunks/`, named in `FORMAT` at the
//! store's root.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use swarmfs_proto::ChunkId;

use crate::StoreError;

/// The layout of a new store. 1: `chunks/ab/cd/<id>`; 2: `chunks/ab/<id>`. A new store takes
/// 2: with two levels, nearly every chunk a store of less than 65,536 chunks took made a
/// directory of its own (a second inode and a second fsync per put, a quarter of a put's time
/// on the peer); one level of 256 directories holds 4,096 files each at a million chunks,
/// which ext4 and XFS index. A store keeps the layout it was made with; this build reads and
/// writes both.
pub const STORE_FORMAT: u32 = 2;
const FORMAT_PREFIX: &str = "swarmfs chunk store ";

/// A store's layout (1 or 2, see [`STORE_FORMAT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout(u32);

impl Layout {
    /// Reads the store's layout from `FORMAT`, or writes it: the newest for a new store, 1
    /// for a store protocol 2 made (no marker, layout 1, chunks in it). Refuses a layout this
    /// build does not know.
    pub(crate) fn open(root: &Path) -> Result<Layout, StoreError> {
        let path = root.join("FORMAT");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let version = text.trim().strip_prefix(FORMAT_PREFIX).and_then(|v| v.parse::<u32>().ok());
                match version {
                    Some(v @ 1..=STORE_FORMAT) => Ok(Layout(v)),
                    _ => Err(StoreError::Format(format!(
                        "{} says {:?}; this swarmfs knows store formats 1 to {STORE_FORMAT}",
                        path.display(),
                        text.trim()
                    ))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let old = fs::read_dir(root.join("chunks"))?.next().is_some();
                let version = if old { 1 } else { STORE_FORMAT };
                let mut f = File::create(&path)?;
                f.write_all(format!("{FORMAT_PREFIX}{version}\n").as_bytes())?;
                f.sync_all()?;
                File::open(root)?.sync_all()?;
                Ok(Layout(version))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn chunk_path(self, chunks: &Path, id: &ChunkId) -> PathBuf {
        let h = id.to_string();
        match self.0 {
            1 => chunks.join(&h[0..2]).join(&h[2..4]).join(h),
            _ => chunks.join(&h[0..2]).join(h),
        }
    }

    /// Number of fan-out directories.
    pub(crate) fn buckets(self) -> u32 {
        match self.0 {
            1 => 1 << 16,
            _ => 1 << 8,
        }
    }

    /// Fan-out directory `bucket`: the chunks whose ids start with its one or two bytes.
    pub(crate) fn bucket_dir(self, chunks: &Path, bucket: u32) -> PathBuf {
        match self.0 {
            1 => chunks.join(format!("{:02x}", bucket >> 8)).join(format!("{:02x}", bucket & 0xff)),
            _ => chunks.join(format!("{bucket:02x}")),
        }
    }

    /// Calls `f` with every chunk file's id and length.
    pub(crate) fn walk(self, chunks: &Path, f: &mut impl FnMut(ChunkId, u64)) -> Result<(), StoreError> {
        visit(chunks, if self.0 == 1 { 2 } else { 1 }, f)
    }
}

/// Calls `f` for every chunk file `levels` fan-out directories below `dir`.
fn visit(dir: &Path, levels: u32, f: &mut impl FnMut(ChunkId, u64)) -> Result<(), StoreError> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if levels > 0 {
            visit(&e.path(), levels - 1, f)?;
        } else if let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<ChunkId>().ok()) {
            f(id, e.metadata()?.len());
        }
    }
    Ok(())
}
