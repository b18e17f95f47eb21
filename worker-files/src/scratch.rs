//! The worker's private folder for spool files and the extraction children's scratch folders.
//!
//! Each worker process owns one folder, `glassbox-worker-files-<pid>-<random>`, under the configured
//! spool folder, and holds a lock on a file inside it for as long as it lives. At start, every such
//! folder whose lock nobody holds belonged to a worker that was killed: it is removed with whatever
//! spool files it held. At a clean exit the worker removes its own.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const FOLDER_PREFIX: &str = "glassbox-worker-files-";
const LOCK_FILE: &str = ".lock";
/// A folder without a lock file this old is a start that never finished.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// The worker's own folder; removed on drop.
#[derive(Debug)]
pub struct WorkerFolder {
    path: PathBuf,
    /// Held for the life of the process: the kernel releases it when the process dies.
    _lock: File,
}

impl WorkerFolder {
    /// Removes the folders of dead workers under `parent`, then creates and locks this worker's.
    /// Returns the folder and how many stale ones were removed.
    pub fn create(parent: &Path) -> std::io::Result<(WorkerFolder, usize)> {
        std::fs::create_dir_all(parent)?;
        let removed = remove_stale(parent)?;
        let path = parent.join(format!(
            "{FOLDER_PREFIX}{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir(&path)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))?;
        lock.lock()?;
        Ok((WorkerFolder { path, _lock: lock }, removed))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkerFolder {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(folder = %self.path.display(), %error, "cannot remove the worker's spool folder");
        }
    }
}

/// Removes every worker folder under `parent` whose lock is free.
fn remove_stale(parent: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let is_worker_folder = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(FOLDER_PREFIX));
        if !is_worker_folder || !entry.file_type()?.is_dir() {
            continue;
        }
        let folder = entry.path();
        let stale = match OpenOptions::new().write(true).open(folder.join(LOCK_FILE)) {
            Ok(lock) => match lock.try_lock() {
                Ok(()) => true,
                Err(TryLockError::WouldBlock) => false,
                Err(TryLockError::Error(error)) => return Err(error),
            },
            Err(_) => entry
                .metadata()?
                .modified()
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > UNLOCKED_GRACE),
        };
        if stale {
            std::fs::remove_dir_all(&folder)?;
            tracing::info!(folder = %folder.display(), "removed the spool folder of a worker that was killed");
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_dead_workers_are_removed_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        // A killed worker left a folder with a spool file and an unlocked lock file.
        let dead = parent.path().join(format!("{FOLDER_PREFIX}1-deadbeef"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK_FILE), b"").unwrap();
        std::fs::write(dead.join("spool-file"), b"left behind").unwrap();
        // Something else in the same folder is none of our business.
        std::fs::write(parent.path().join("other.txt"), b"keep").unwrap();

        let (live, removed) = WorkerFolder::create(parent.path()).unwrap();
        assert_eq!(removed, 1);
        assert!(!dead.exists());
        assert!(parent.path().join("other.txt").exists());
        assert!(live.path().exists());

        // A second worker starting now leaves the first one's folder alone.
        let (second, removed) = WorkerFolder::create(parent.path()).unwrap();
        assert_eq!(removed, 0);
        assert!(live.path().exists());

        let live_path = live.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists(), "a clean exit removes the folder");
        drop(second);
    }
}
