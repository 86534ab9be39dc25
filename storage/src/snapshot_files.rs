//! The snapshot's data, kept in a file of its own next to sled rather than as a sled value.
//!
//! A snapshot of a large site is tens of MiB, written whole and read back seldom. As a sled
//! value it went to a blob file and stayed in sled's memory besides (most of sled's share of a
//! 100 000-point node). A plain file costs one write, one fsync and a rename.
//!
//! Files are named by a number the database hands out (never by the snapshot id, which may
//! come from another node). Only the file that the snapshot tree names is current; a file
//! that no tree names is what a crash left between writing it and naming it, and goes at the
//! next save or open.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const DIR: &str = "state";
const SUFFIX: &str = ".snap";
const PARTIAL: &str = ".partial";

pub(crate) struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// `dir` is the store's directory; the files go in a directory of their own in it (sled
    /// itself only looks at its own names there).
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        let files = Self { dir: dir.join(DIR) };
        if !files.dir.exists() {
            fs::create_dir_all(&files.dir)?;
            File::open(dir)?.sync_all()?;
        }
        Ok(files)
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number}{SUFFIX}"))
    }

    /// Writes `data` as file `number`, durably: once this returns, the file survives a crash
    /// whole, and under its name only if whole.
    pub(crate) fn write(&self, number: u64, data: &[u8]) -> io::Result<()> {
        let partial = self.dir.join(format!("{number}{PARTIAL}"));
        let mut file = File::create(&partial)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&partial, self.path(number))?;
        File::open(&self.dir)?.sync_all()
    }

    pub(crate) fn read(&self, number: u64) -> io::Result<Vec<u8>> {
        fs::read(self.path(number))
    }

    /// Removes every file but `keep` (none if `None`). A file that cannot be removed is
    /// logged and left: it costs disk space, not correctness.
    pub(crate) fn keep_only(&self, keep: Option<u64>) {
        let keep = keep.map(|n| format!("{n}{SUFFIX}"));
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "listing snapshot files");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if keep.as_deref().is_some_and(|k| name == k) {
                continue;
            }
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "removing an old snapshot file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotFiles;

    #[test]
    fn a_written_file_reads_back_and_only_the_kept_one_stays() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let files = SnapshotFiles::open(dir.path())?;
        files.write(3, b"three")?;
        files.write(4, b"four")?;
        std::fs::write(dir.path().join("state").join("5.partial"), b"cut off")?;
        assert_eq!(files.read(3)?, b"three");
        files.keep_only(Some(4));
        assert!(files.read(3).is_err());
        assert_eq!(files.read(4)?, b"four");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("state"))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("4.snap")]);
        Ok(())
    }
}
