//! The data path at start-up: one server per directory, and a directory the server can write.
//!
//! [`claim`] runs before anything is read or written there:
//!
//! 1. The path must be a directory (created if missing). A file there is named as such, not
//!    blamed on the checkpoint or a topic.
//! 2. The directory is `flock`ed (`LOCK_EX | LOCK_NB`), as nsqd locks its data path, and stays
//!    locked for the server's life (the lock goes with the [`DataPathLock`]'s descriptor). A
//!    second server on the same path would rewrite the first's live segments; it is refused
//!    with nsqd's message instead. `flock` locks belong to the open file description, so a
//!    second server in the same process is refused too.
//! 3. A probe file is created, written, fsynced and removed: a read-only mount, a full disk or
//!    missing permissions stop the start with the path and the OS error, rather than letting
//!    the server answer `/ping` and fail every publish.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::StartError;

/// The probe file's name; removed again at once (a leftover from a crash is overwritten).
pub const PROBE_FILE: &str = ".corqd-write-test";

/// The held lock on the data path; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataPathLock {
    /// The directory, opened read-only: its descriptor carries the `flock`.
    _dir: File,
}

/// Makes sure `dir` is a writable directory no other server uses, and locks it.
///
/// # Errors
/// [`StartError::DataPath`] naming the path and the OS error, or [`StartError::Locked`].
pub fn claim(dir: &Path) -> Result<DataPathLock, StartError> {
    ensure_dir(dir)?;
    let lock = lock(dir)?;
    probe(dir).map_err(|(what, e)| unusable(dir.join(PROBE_FILE), what, e))?;
    Ok(lock)
}

fn unusable(path: PathBuf, what: &'static str, err: io::Error) -> StartError {
    StartError::DataPath { path, what, err }
}

fn ensure_dir(dir: &Path) -> Result<(), StartError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StartError::NotADirectory(dir.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir)
            .map_err(|e| unusable(dir.to_owned(), "cannot create the directory", e)),
        // Permission denied on a parent, a file as a parent (ENOTDIR), ...
        Err(e) => Err(unusable(dir.to_owned(), "cannot read", e)),
    }
}

fn lock(dir: &Path) -> Result<DataPathLock, StartError> {
    let f = File::open(dir).map_err(|e| unusable(dir.to_owned(), "cannot open", e))?;
    // SAFETY: flock(2) on a descriptor we own; it only takes or refuses an advisory lock.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StartError::Locked(
            dir.to_owned(),
            io::Error::last_os_error(),
        ));
    }
    Ok(DataPathLock { _dir: f })
}

/// Create, write, fsync, remove; the failing step and its error.
fn probe(dir: &Path) -> Result<(), (&'static str, io::Error)> {
    let path = dir.join(PROBE_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| ("cannot create a file", e))?;
    f.write_all(b"corqd write test\n")
        .map_err(|e| ("cannot write a file", e))?;
    f.sync_all().map_err(|e| ("cannot sync a file", e))?;
    drop(f);
    fs::remove_file(&path).map_err(|e| ("cannot remove a file", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testutil_dir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("corq-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn a_second_claim_is_refused_until_the_first_is_dropped() {
        let tmp = testutil_dir("datapath-lock");
        let first = claim(&tmp).unwrap();
        let err = claim(&tmp).unwrap_err().to_string();
        assert!(
            err.starts_with("failed to lock data-path: cannot flock directory"),
            "{err}"
        );
        assert!(
            err.ends_with("(possibly in use by another instance of corqd)"),
            "{err}"
        );
        drop(first);
        drop(claim(&tmp).unwrap());
        assert!(!tmp.join(PROBE_FILE).exists());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_file_or_a_path_under_a_file_is_named() {
        let tmp = testutil_dir("datapath-file");
        let file = tmp.join("plain");
        fs::write(&file, b"x").unwrap();
        let err = claim(&file).unwrap_err().to_string();
        assert!(err.contains("is a file, not a directory"), "{err}");
        let under = file.join("data");
        let err = claim(&under).unwrap_err().to_string();
        assert!(err.contains(&under.display().to_string()), "{err}");
        assert!(err.contains("Not a directory"), "{err}");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
