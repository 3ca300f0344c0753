//! The storage error type. `Corruption` is kept apart from `Io`; control outcomes that callers
//! branch on (`TooLarge`, `NotFound`, `Failed`) are variants, not strings.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the storage layer. Messages name the file involved.
#[derive(Debug)]
pub enum StorageError {
    /// A system call failed on `path`.
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What we were doing ("open", "fallocate", "rename", ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Bytes on disk failed validation (CRC, length, header, naming).
    Corruption {
        /// The segment file.
        path: PathBuf,
        /// The log offset (for a record) or byte position (for a header) involved.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A record body larger than the configured maximum or than a segment can hold.
    TooLarge {
        /// The body length offered.
        len: usize,
        /// The largest body accepted.
        max: usize,
    },
    /// No record at this offset: below the head, at or past the tail, or in a gap left by a
    /// recovery cut.
    NotFound {
        /// The offset asked for.
        offset: u64,
    },
    /// The log is poisoned: a sync failed, so nothing more can be promised durable. Appends
    /// fail; reads still work. Reopen the log to recover.
    Failed(String),
    /// A [`LogConfig`](super::LogConfig) value is out of range.
    Config(String),
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            op,
            source,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            StorageError::Corruption {
                path,
                offset,
                reason,
            } => {
                write!(f, "corruption in {} at {offset}: {reason}", path.display())
            }
            StorageError::TooLarge { len, max } => {
                write!(f, "record body of {len} bytes exceeds the maximum of {max} (see --max-msg-size, --max-bytes-per-file)")
            }
            StorageError::NotFound { offset } => write!(f, "no record at offset {offset}"),
            StorageError::Failed(why) => write!(f, "log failed, appends refused: {why}"),
            StorageError::Config(why) => write!(f, "invalid storage configuration: {why}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
