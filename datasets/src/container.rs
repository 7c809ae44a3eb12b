//! Uniform access to a dataset delivered as a folder, a `.tar`/`.tar.gz` archive or a `.zip`.
//!
//! Archives are read as streams and never extracted: a tar.gz is decompressed on the fly,
//! members are visited in archive order, and a member wanted out of order costs one more scan.
//!
//! Every compressed stream is read to its end, so that its checksum is checked: a tar.gz to the
//! gzip trailer (CRC-32 and length) of its last gzip member even when the members wanted come
//! earlier, and each zip member read to its end (CRC-32). A flipped bit in an archive is an
//! error, never other pixels. A tar.gz may be several gzip members end to end (`cat a.gz b.gz`);
//! all are read, and bytes after the last one that do not form another member are an error,
//! except zero bytes (block padding, as tape and some tools write it), which `gzip -d` and
//! Python's `gzip` skip too.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A member of a container: its path inside (with `/`), and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Path relative to the container root, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

impl Member {
    /// The last path component.
    pub fn basename(&self) -> &str {
        basename(&self.name)
    }
}

/// Last `/`-separated component of a member name.
pub fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// A folder or an archive holding a dataset's files.
#[derive(Debug, Clone)]
pub enum Container {
    /// An extracted folder.
    Dir(PathBuf),
    /// A tar archive, gzip-compressed when `gz`.
    Tar {
        /// The archive file.
        path: PathBuf,
        /// Whether it is gzip-compressed.
        gz: bool,
    },
    /// A zip archive.
    Zip(PathBuf),
}

impl Container {
    /// Opens `path` as a folder, or as an archive by its extension.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).at(path)?;
        if meta.is_dir() {
            return Ok(Container::Dir(path.to_path_buf()));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Ok(Container::Tar { path: path.to_path_buf(), gz: true })
        } else if name.ends_with(".tar") {
            Ok(Container::Tar { path: path.to_path_buf(), gz: false })
        } else if name.ends_with(".zip") {
            Ok(Container::Zip(path.to_path_buf()))
        } else {
            Err(Error::Usage(format!("{}: expected a folder, a .tar, .tar.gz, .tgz or .zip archive", path.display())))
        }
    }

    /// The container's own path.
    pub fn path(&self) -> &Path {
        match self {
            Container::Dir(p) | Container::Zip(p) | Container::Tar { path: p, .. } => p,
        }
    }

    /// How a member is named in messages: its file path, or `archive:member`.
    pub fn display(&self, member: &str) -> String {
        match self {
            Container::Dir(d) => d.join(member).display().to_string(),
            _ => format!("{}:{}", self.path().display(), member),
        }
    }

    /// Lists all regular-file members (in container order; a folder is listed sorted) and
    /// reads fully those for which `small` is true, in one pass.
    pub fn scan(&self, small: &dyn Fn(&Member) -> bool) -> Result<Scan> {
        let mut list = Vec::new();
        let mut contents = BTreeMap::new();
        self.visit(&mut |m, r| {
            if small(m) {
                let mut buf = Vec::with_capacity(m.size as usize);
                r.read_to_end(&mut buf).map_err(|e| self.read_error(&m.name, e))?;
                contents.insert(m.name.clone(), buf);
            }
            list.push(m.clone());
            Ok(Visit::Continue)
        })?;
        Ok((list, contents))
    }

    /// Streams the members named in `names` to `f`, in exactly that order. For a tar archive
    /// whose order differs, the archive is scanned again (never extracted).
    pub fn stream_in_order(
        &self,
        names: &[String],
        f: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        match self {
            Container::Dir(dir) => {
                for name in names {
                    let path = dir.join(name);
                    let file = File::open(&path).at(&path)?;
                    let size = file.metadata().at(&path)?.len();
                    let mut r = BufReader::with_capacity(1 << 20, file);
                    f(&Member { name: name.clone(), size }, &mut r)?;
                }
                Ok(())
            }
            Container::Zip(path) => {
                let mut zip = open_zip(path)?;
                for name in names {
                    let mut entry =
                        zip.by_name(name).map_err(|e| Error::corrupt_file(self.display(name), e.to_string()))?;
                    let size = entry.size();
                    f(&Member { name: name.clone(), size }, &mut entry)?;
                    // The member's CRC-32 is checked once it is read to its end.
                    std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| self.read_error(name, e))?;
                }
                Ok(())
            }
            Container::Tar { .. } => {
                let mut next = 0;
                while next < names.len() {
                    let before = next;
                    self.visit(&mut |m, r| {
                        if next < names.len() && m.name == names[next] {
                            f(m, r)?;
                            next += 1;
                        }
                        Ok(if next == names.len() { Visit::Stop } else { Visit::Continue })
                    })?;
                    if next == before {
                        return Err(Error::Missing(format!("{}: no member {}", self.path().display(), names[next])));
                    }
                }
                Ok(())
            }
        }
    }

    fn read_error(&self, member: &str, e: std::io::Error) -> Error {
        match self {
            Container::Dir(_) => Error::io(self.display(member), e),
            _ => Error::corrupt_file(self.display(member), format!("corrupt archive: {e}")),
        }
    }

    fn visit(&self, f: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<Visit>) -> Result<()> {
        match self {
            Container::Dir(dir) => {
                let mut files = Vec::new();
                walk(dir, dir, &mut files)?;
                for name in files {
                    let path = dir.join(&name);
                    let file = File::open(&path).at(&path)?;
                    let size = file.metadata().at(&path)?.len();
                    let mut r = BufReader::with_capacity(1 << 20, file);
                    if let Visit::Stop = f(&Member { name, size }, &mut r)? {
                        break;
                    }
                }
                Ok(())
            }
            Container::Zip(path) => {
                let mut zip = open_zip(path)?;
                for i in 0..zip.len() {
                    let mut entry = zip
                        .by_index(i)
                        .map_err(|e| Error::corrupt_file(path.display().to_string(), format!("corrupt zip: {e}")))?;
                    if !entry.is_file() {
                        continue;
                    }
                    let name = entry
                        .name()
                        .map_err(|e| Error::corrupt_file(path.display().to_string(), format!("corrupt zip: {e}")))?
                        .trim_start_matches("./")
                        .to_string();
                    let size = entry.size();
                    // `scan` reads a member whole (its CRC-32 is checked at its end) or not at all.
                    if let Visit::Stop = f(&Member { name, size }, &mut entry)? {
                        break;
                    }
                }
                Ok(())
            }
            Container::Tar { path, gz } => {
                let file = BufReader::with_capacity(1 << 20, File::open(path).at(path)?);
                // All gzip members, one after the other, as `gzip -d` and Python's `tarfile` read
                // them: a tar split over several members is read whole, and bytes after the last
                // member that are not another member (nor zero padding) are an error.
                let reader: Box<dyn Read> = if *gz { Box::new(GzMembers::new(file)) } else { Box::new(file) };
                let mut archive = tar::Archive::new(reader);
                let corrupt = |e: std::io::Error| {
                    Error::corrupt_file(path.display().to_string(), format!("corrupt archive: {e}"))
                };
                for entry in archive.entries().map_err(corrupt)? {
                    let mut entry = entry.map_err(corrupt)?;
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let name = entry.path().map_err(corrupt)?.to_string_lossy().trim_start_matches("./").to_string();
                    let size = entry.size();
                    if let Visit::Stop = f(&Member { name, size }, &mut entry)? {
                        break;
                    }
                }
                // Read the stream to its end: gzip checks its CRC-32 and length only there, and
                // tar stops reading at the end-of-archive blocks, before the trailer.
                if *gz {
                    let mut rest = archive.into_inner();
                    std::io::copy(&mut rest, &mut std::io::sink()).map_err(corrupt)?;
                }
                Ok(())
            }
        }
    }
}

/// The gzip members of a stream, decompressed one after the other. Between and after members,
/// zero bytes are skipped (Python's `gzip` does the same; `gzip -d` warns "trailing zero bytes
/// ignored"); any other byte must start a valid member, else reading fails.
struct GzMembers<R: BufRead> {
    member: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: BufRead> GzMembers<R> {
    fn new(r: R) -> Self {
        GzMembers { member: Some(flate2::bufread::GzDecoder::new(r)) }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(member) = self.member.as_mut() {
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This member ended (its CRC-32 and length checked): skip zero padding, then either
            // the stream ends or another member starts.
            let mut rest = self.member.take().expect("a member is being read").into_inner();
            loop {
                let chunk = rest.fill_buf()?;
                if chunk.is_empty() {
                    return Ok(0);
                }
                let zeros = chunk.iter().take_while(|&&b| b == 0).count();
                let whole = zeros == chunk.len();
                rest.consume(zeros);
                if !whole {
                    break;
                }
            }
            self.member = Some(flate2::bufread::GzDecoder::new(rest));
        }
        Ok(0)
    }
}

/// The members of a container and the contents of those read fully.
pub type Scan = (Vec<Member>, BTreeMap<String, Vec<u8>>);

enum Visit {
    Continue,
    Stop,
}

pub(crate) fn open_zip(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>> {
    let file = BufReader::new(File::open(path).at(path)?);
    zip::ZipArchive::new(file).map_err(|e| Error::corrupt_file(path.display().to_string(), format!("corrupt zip: {e}")))
}

/// Recursively lists regular files under `dir` as `/`-separated paths relative to `root`, sorted.
pub(crate) fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).at(dir)?.collect::<std::io::Result<Vec<_>>>().at(dir)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ty = e.file_type().at(&path)?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() || (ty.is_symlink() && path.is_file()) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

/// Finds the one member whose basename is `base` (any folder depth).
pub fn find<'a>(members: &'a [Member], base: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.basename() == base)
}
