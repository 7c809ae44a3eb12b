//! An ingest as a user asks for it — a source ([`SourceSpec`]) and how to write it
//! ([`IngestOptions`]) — with every check made before anything is read or written, in one
//! place: `siamlab ingest` and the experiments of `siamlab ablate` both go through
//! [`IngestRequest`], so a dataset an experiment file names is refused exactly as the same
//! dataset on the command line.

use crate::decode::check_resize;
use crate::error::{Error, Result};
use crate::ingest::{IngestOptions, Outcome};
use crate::record::Source;
use crate::shard::Manifest;
use crate::sources::SourceSpec;
use crate::store::{ingest_to, open_path, prepare_location, Location, StoreOptions};

/// A source and the options to ingest it with.
pub struct IngestRequest<'a> {
    /// What to read.
    pub spec: SourceSpec<'a>,
    /// Where and how to write it.
    pub options: IngestOptions<'a>,
}

impl IngestRequest<'_> {
    /// The checks made before reading anything: a known source with its `src` (file sources)
    /// or valid numbers (generated ones), the resize in range, a positive shard size. Whether
    /// `src` exists is for [`open`](Self::open) to say: a plan may be checked before its data
    /// is there.
    pub fn check(&self) -> Result<()> {
        self.spec.check()?;
        check_resize(self.options.resize)?;
        if self.options.shard_bytes == 0 {
            return Err(Error::Usage("the shard size must be positive".into()));
        }
        Ok(())
    }

    /// Where the output is: `options.out`, a folder or an object-store URL (`s3://bucket/prefix`).
    pub fn location(&self) -> Result<Location> {
        open_path(&self.options.out, &StoreOptions::default())
    }

    /// The complete dataset already at the output, made with the same recorded arguments (then
    /// there is nothing to do); `None` when there is work to do. Errors as
    /// [`prepare_location`] does (an existing file, a complete dataset of other arguments, a
    /// non-empty folder that is not siamlab's).
    pub fn already_complete(&self) -> Result<Option<Manifest>> {
        prepare_location(&self.location()?, self.options.overwrite, &self.options.arguments)
    }

    /// [`check`](Self::check)s, then opens the source (file sources read their index).
    pub fn open(&self) -> Result<Box<dyn Source>> {
        self.check()?;
        self.spec.open()
    }

    /// Ingests `source` (from [`open`](Self::open)) with the request's options, into a folder
    /// or an object store ([`ingest_to`]).
    pub fn ingest(&self, source: Box<dyn Source>) -> Result<Outcome> {
        ingest_to(source, &self.options, &self.location()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(kind: &'a str, out: &std::path::Path) -> IngestRequest<'a> {
        let spec = SourceSpec {
            kind,
            src: None,
            count: Some(4),
            test_count: None,
            size: Some(4),
            seed: Some(1),
            mean: None,
            std: None,
        };
        IngestRequest { spec, options: IngestOptions::new(out) }
    }

    #[test]
    fn checks_come_before_any_reading_and_a_good_request_ingests() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("o");
        let e = request("imagenet", &out).check().unwrap_err().to_string();
        assert!(e.contains("unknown source \"imagenet\""), "{e}");
        let e = request("cifar10", &out).check().unwrap_err().to_string();
        assert!(e.contains("needs a path"), "{e}");
        let mut r = request("random", &out);
        r.options.resize = Some(0);
        assert!(r.check().unwrap_err().to_string().contains("resize 0"));
        r.options.resize = None;
        r.options.shard_bytes = 0;
        assert!(r.check().unwrap_err().to_string().contains("shard size"));
        assert!(!out.exists(), "a refused request writes nothing");
        let r = request("random", &out);
        assert!(r.already_complete().unwrap().is_none());
        let done = r.ingest(r.open().unwrap()).unwrap();
        assert_eq!(done.manifest().splits["train"].rows, 4);
        assert_eq!(r.already_complete().unwrap().map(|m| m.splits["train"].rows), Some(4));
    }
}
