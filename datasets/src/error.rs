//! The crate's error type: every failure names the file and, where there is one, the record.

use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while reading a source or writing / reading shards.
///
/// Every variant that concerns a file carries its name (an archive member is named
/// `archive.tar.gz:member`) and, where it applies, the record, line or row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a file.
    #[error("{file}: {err}")]
    Io {
        /// The file being read or written.
        file: String,
        /// The underlying error (kept out of the error chain: the message already has it).
        err: std::io::Error,
    },
    /// The file's content is not in the expected layout.
    #[error("{file}: {at}{msg}", at = at_prefix(.record))]
    Corrupt {
        /// The file (or archive member).
        file: String,
        /// The record, line or row, when one is at fault.
        record: Option<String>,
        /// What is wrong.
        msg: String,
    },
    /// A required file is absent.
    #[error("{0}")]
    Missing(String),
    /// The caller asked for something that cannot be done (bad argument, bad output path).
    #[error("{0}")]
    Usage(String),
    /// Parquet / Arrow failure on a shard.
    #[error("{file}: {msg}")]
    Shard {
        /// The shard file.
        file: String,
        /// What failed.
        msg: String,
    },
    /// An object store request failed (after its retries).
    #[error("{object}: {msg}")]
    Remote {
        /// The object's URL.
        object: String,
        /// What failed.
        msg: String,
    },
    /// The consumer of a record stream went away; the producer stops quietly.
    #[error("cancelled")]
    Cancelled,
}

fn at_prefix(record: &Option<String>) -> String {
    match record {
        Some(r) => format!("{r}: "),
        None => String::new(),
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { file: path.as_ref().display().to_string(), err: source }
    }

    /// A layout error in `file` at `record`.
    pub fn corrupt(file: impl Into<String>, record: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Corrupt { file: file.into(), record: Some(record.into()), msg: msg.into() }
    }

    /// A layout error in `file` as a whole.
    pub fn corrupt_file(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Corrupt { file: file.into(), record: None, msg: msg.into() }
    }

    /// A Parquet / Arrow error on a shard file.
    pub fn shard(file: impl AsRef<Path>, err: impl std::fmt::Display) -> Self {
        Error::Shard { file: file.as_ref().display().to_string(), msg: err.to_string() }
    }
}

/// Extension to attach a path to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename,
/// fsync of the folder. On failure the temporary file is removed and `path` is untouched.
///
/// The one atomic write of siamlab: manifests and markers here, checkpoints, run files, plots
/// and experiment results in the trainer, previews in the pipeline all go through it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp: PathBuf = tmp_name(path);
    let write = || -> Result<()> {
        let mut f = std::fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        std::fs::rename(&tmp, path).at(path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        sync_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    }
    Ok(())
}

/// The temporary name used while `path` is being written (`.name.tmp` in the same folder).
pub(crate) fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Best-effort fsync of a directory, so that a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["a.json"]);
    }

    /// A write that cannot finish (the target is a folder: the rename fails) keeps the target
    /// as it was and removes the temporary file.
    #[test]
    fn a_failed_write_cleans_up_and_keeps_the_target() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"x").unwrap();
        let err = write_atomic(&p, b"new").unwrap_err().to_string();
        assert!(err.contains("taken"), "{err}");
        assert!(p.join("inside").is_file());
        let names: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["taken"], "no temporary left");
        assert!(write_atomic(&t.path().join("missing/x"), b"y").is_err());
    }
}
