//! What a location string means: a local path, or an object store and a prefix in it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, RetryConfig};

use crate::error::{Error, Result};

/// A parsed location.
pub(crate) enum Parsed {
    Local(PathBuf),
    Remote(RemoteSpec),
}

/// An object store and the prefix of the shard folder in it.
pub(crate) struct RemoteSpec {
    /// The URL as shown in messages, without a trailing `/`.
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjPath,
    /// `http(s)://`: nothing can be written.
    pub read_only: bool,
}

/// Requests are retried by the store's client (with exponential backoff) on transient errors;
/// downloads are retried again as a whole by the cache.
fn retry() -> RetryConfig {
    RetryConfig { max_retries: 4, retry_timeout: Duration::from_secs(60), ..RetryConfig::default() }
}

fn store_error(url: &str, e: object_store::Error) -> Error {
    Error::Usage(format!("{url}: cannot open the object store: {e}"))
}

/// Parses `spec`: a URL with a known scheme, else a local path.
pub(crate) fn parse(spec: &str) -> Result<Parsed> {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return Ok(Parsed::Local(PathBuf::from(spec)));
    };
    let scheme_lc = scheme.to_ascii_lowercase();
    if scheme_lc == "file" {
        return Ok(Parsed::Local(PathBuf::from(if rest.is_empty() { "/" } else { rest })));
    }
    let trimmed = rest.trim_end_matches('/');
    let url = format!("{scheme_lc}://{trimmed}");
    if scheme_lc == "http" || scheme_lc == "https" {
        ensure_tls();
        let store = object_store::http::HttpBuilder::new()
            .with_url(&url)
            .with_retry(retry())
            .build()
            .map_err(|e| store_error(&url, e))?;
        return Ok(Parsed::Remote(RemoteSpec {
            url,
            store: Arc::new(store),
            prefix: ObjPath::default(),
            read_only: true,
        }));
    }
    let (bucket, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if bucket.is_empty() {
        return Err(Error::Usage(format!("{spec}: no bucket in the URL (write {scheme_lc}://BUCKET/PREFIX)")));
    }
    let prefix = ObjPath::parse(prefix).map_err(|e| Error::Usage(format!("{spec}: bad object prefix: {e}")))?;
    let root = format!("{scheme_lc}://{bucket}");
    ensure_tls();
    let store: Arc<dyn ObjectStore> = match scheme_lc.as_str() {
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(&root)
                .with_retry(retry())
                .build()
                .map_err(|e| store_error(&url, e))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(&root)
                .with_retry(retry())
                .build()
                .map_err(|e| store_error(&url, e))?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(&root)
                .with_retry(retry())
                .build()
                .map_err(|e| store_error(&url, e))?,
        ),
        _ => {
            return Err(Error::Usage(format!(
                "{spec}: unknown URL scheme {scheme:?} (known: s3://, gs://, az://, http(s)://, file://)"
            )))
        }
    };
    Ok(Parsed::Remote(RemoteSpec { url, store, prefix, read_only: false }))
}

/// Installs ring as the process's TLS provider (once; a provider installed by the embedding
/// program stays).
fn ensure_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_file_urls_stay_local() {
        assert!(
            matches!(parse("data/cifar10").unwrap(), Parsed::Local(p) if p == std::path::Path::new("data/cifar10"))
        );
        assert!(matches!(parse("file:///tmp/x").unwrap(), Parsed::Local(p) if p == std::path::Path::new("/tmp/x")));
    }

    #[test]
    fn unknown_schemes_and_missing_buckets_are_refused() {
        let e = parse("ftp://host/x").err().unwrap().to_string();
        assert!(e.contains("unknown URL scheme \"ftp\""), "{e}");
        let e = parse("s3:///x").err().unwrap().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }

    #[test]
    fn s3_urls_name_bucket_and_prefix() {
        let Parsed::Remote(r) = parse("s3://bucket/a/b/").unwrap() else { panic!("remote") };
        assert_eq!(r.url, "s3://bucket/a/b");
        assert_eq!(r.prefix.as_ref(), "a/b");
        assert!(!r.read_only);
    }
}
