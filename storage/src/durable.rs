//! fsync for sled 0.34's files, because sled's own `flush()` is not one.
//!
//! Raft may only acknowledge an append or a vote once it survives a power cut. In sled
//! 0.34.7, `Tree::flush()` goes `pagecache::flush` → `iobuf::make_stable` →
//! `IoBufs::write_to_log` (src/pagecache/iobuf.rs, around line 730), which on Linux without
//! the `io_uring` feature does `pwrite` and then `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)`; it falls back to `sync_all` only on ENOSYS. `sync_file_range` writes the
//! pages out but neither commits the file's metadata (its new size) nor flushes the
//! device's write cache, so it is not an fsync. Worse, a value or tree node larger than
//! about a quarter of a segment (128 KiB with the default 512 KiB segments,
//! src/pagecache/logger.rs) goes to its own file `<dir>/blobs/<lsn>` (src/pagecache/
//! blob_io.rs `write_blob`), which sled never syncs at all, and the directory entries of
//! `<dir>/db`, `<dir>/conf` and the blob files are never synced either.
//!
//! So after each `flush()` that must be durable we fdatasync sled's data file (named
//! `db` by `Config::db_path` in sled's src/config.rs; fdatasync is per inode, so our own
//! descriptor does it), every blob not yet synced, and the blob directory when it gained
//! entries.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

const DATA_FILE: &str = "db";
const CONF_FILE: &str = "conf";
const BLOB_DIR: &str = "blobs";

pub(crate) struct SledFiles {
    data: File,
    blob_dir: PathBuf,
    /// Blob name → its length when last synced. sled writes a blob once, appending, so a
    /// blob whose length has not changed since it was synced needs no new sync; one seen
    /// while sled was still writing it is synced again once it has grown.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
}

impl SledFiles {
    /// Call once sled has opened `dir`: syncs what sled created without syncing.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        let files = Self {
            data: File::open(dir.join(DATA_FILE))?,
            blob_dir: dir.join(BLOB_DIR),
            synced_blobs: Mutex::new(HashMap::new()),
        };
        sync_path(&dir.join(CONF_FILE))?;
        files.sync()?;
        sync_path(&files.blob_dir)?;
        sync_path(dir)?;
        Ok(files)
    }

    /// Makes everything sled has flushed durable. Blocking: call off the async runtime.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.sync_blobs()?;
        self.data.sync_data()
    }

    fn sync_blobs(&self) -> io::Result<()> {
        // Poisoning only means another sync panicked; the map is still a valid cache.
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut present = HashMap::with_capacity(synced.len());
        let mut gained_entries = false;
        for entry in fs::read_dir(&self.blob_dir)? {
            let name = entry?.file_name();
            let len = match fs::metadata(self.blob_dir.join(&name)) {
                Ok(meta) => meta.len(),
                // sled garbage-collects blobs the log no longer points to.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if synced.get(&name) != Some(&len) {
                match File::open(self.blob_dir.join(&name)) {
                    Ok(blob) => blob.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                gained_entries |= !synced.contains_key(&name);
            }
            present.insert(name, len);
        }
        if gained_entries {
            sync_path(&self.blob_dir)?;
        }
        *synced = present;
        Ok(())
    }
}

/// fsync of a file or a directory (for a directory: the entries it holds).
fn sync_path(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::{self, Write};

    use super::SledFiles;

    fn synced_len(files: &SledFiles, name: &str) -> Option<u64> {
        let synced = files.synced_blobs.lock().ok()?;
        synced.get(std::ffi::OsStr::new(name)).copied()
    }

    #[test]
    fn blob_seen_half_written_is_synced_again_and_forgotten_once_gone() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("db"), b"")?;
        fs::write(dir.path().join("conf"), b"")?;
        fs::create_dir(dir.path().join("blobs"))?;
        let files = SledFiles::open(dir.path())?;

        let blob = dir.path().join("blobs").join("7");
        fs::write(&blob, b"crc")?;
        files.sync()?;
        assert_eq!(synced_len(&files, "7"), Some(3));

        OpenOptions::new()
            .append(true)
            .open(&blob)?
            .write_all(b"data")?;
        files.sync()?;
        assert_eq!(synced_len(&files, "7"), Some(7));

        fs::remove_file(&blob)?;
        files.sync()?;
        assert_eq!(synced_len(&files, "7"), None);
        Ok(())
    }
}
