//! Tables on S3 and S3-compatible object stores (`--storage-url
//! s3://bucket/prefix`), through `object_store`'s own S3 client, registered
//! with delta-rs for the `s3` scheme.
//!
//! Commits are safe only because each log entry is written with
//! put-if-absent (`If-None-Match: *`, object_store's `PutMode::Create`):
//! of two writers racing for one version exactly one wins, and delta-rs
//! retries the other at the next version after checking it for conflicts.
//! So the store must honour conditional writes (AWS S3 does since 2024;
//! MinIO, Ceph RGW and moto do), and the settings that older delta-rs
//! releases used for commits without them — a DynamoDB lock, "unsafe
//! rename", conditional puts turned off — are refused at start with a
//! message rather than passed through: with any of them a commit could
//! silently overwrite another.
//!
//! Credentials come from the usual environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or the container and
//! instance credential endpoints); endpoint, region and addressing from
//! [`S3Settings`].

use std::sync::Arc;

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use url::Url;

/// Where and how to reach the S3 service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint of an S3-compatible service (`http://127.0.0.1:9000`);
    /// `None`: AWS, by region. An `http://` endpoint is allowed (a local
    /// test server); AWS is always `https`.
    pub endpoint: Option<String>,
    /// Region (`None`: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`, what most S3-compatible
    /// servers need) instead of virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Access key id and secret, for embedding and tests; the server takes
    /// them from the environment (`None`).
    pub credentials: Option<(String, String)>,
}

/// Environment variables that ask for commits without conditional writes.
const REFUSED: [(&str, &str); 3] = [
    (
        "AWS_S3_LOCKING_PROVIDER",
        "the DynamoDB lock is gone from delta-rs 1.x; commits use conditional writes",
    ),
    (
        "AWS_S3_ALLOW_UNSAFE_RENAME",
        "commits use conditional writes, never an unsafe rename",
    ),
    (
        "AWS_CONDITIONAL_PUT",
        "commits need conditional writes (If-None-Match); turning them off or \
         replacing them would let two writers both commit one version",
    ),
];

/// Refuses environment settings that would make commits unsafe (see the
/// module docs); the error names the variable and why.
pub fn check_environment(var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    for (name, why) in REFUSED {
        if let Some(value) = var(name) {
            // `AWS_CONDITIONAL_PUT=etag` asks for what is done anyway.
            if name == "AWS_CONDITIONAL_PUT" && value.eq_ignore_ascii_case("etag") {
                continue;
            }
            return Err(format!("{name}={value} is not supported: {why}; unset it"));
        }
    }
    Ok(())
}

/// Registers the `s3://` scheme with delta-rs. Idempotent; the last
/// settings registered win.
pub fn register(settings: S3Settings) {
    let scheme = Url::parse("s3://").expect("valid URL");
    object_store_factories().insert(scheme.clone(), Arc::new(Factory(settings)));
    logstore_factories().insert(scheme, Arc::new(LogStores));
}

/// The names directly under `prefix` of the object store at `root` (the
/// tenants under `tenants/`).
pub async fn children(root: &Url, prefix: &str) -> DeltaResult<Vec<String>> {
    // `s3://bucket/base` is the directory `base`, with or without the slash.
    let mut root = root.clone();
    if !root.path().ends_with('/') {
        root.set_path(&format!("{}/", root.path()));
    }
    let url = root
        .join(prefix)
        .map_err(|e| DeltaTableError::generic(format!("{root}{prefix}: {e}")))?;
    let store = deltalake::logstore::store_for(&url, std::iter::empty::<(&str, &str)>())?;
    let listing = store.list_with_delimiter(None).await?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// The object store of a bucket.
struct Factory(S3Settings);

impl Factory {
    fn build(&self, url: &Url) -> DeltaResult<object_store::aws::AmazonS3> {
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_virtual_hosted_style_request(!self.0.path_style);
        let endpoint = self.0.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|v| std::env::var(v).ok())
        });
        if let Some(endpoint) = endpoint {
            let endpoint = if self.0.path_style {
                endpoint
            } else {
                bucket_endpoint(&endpoint, bucket)?
            };
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some((id, secret)) = &self.0.credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let region = self.0.region.clone().or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|v| std::env::var(v).ok())
        });
        builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
        builder
            .build()
            .map_err(|e| DeltaTableError::generic(format!("S3 store for {url}: {e}")))
    }
}

/// The virtual-hosted endpoint of `bucket` at the service `endpoint`
/// (`https://s3.example.com` -> `https://bucket.s3.example.com`): object_store
/// takes an endpoint as the bucket's own in that style, and would otherwise
/// address the first path segment as the bucket.
fn bucket_endpoint(endpoint: &str, bucket: &str) -> DeltaResult<String> {
    let refuse = |why: &str| {
        DeltaTableError::generic(format!(
            "S3 endpoint {endpoint:?}: {why}; set --s3-path-style true for a store addressed by \
             path (most S3-compatible servers)"
        ))
    };
    let mut url = Url::parse(endpoint).map_err(|e| refuse(&e.to_string()))?;
    let host = match url.host() {
        Some(url::Host::Domain(host)) => host.to_string(),
        Some(_) => return Err(refuse("an IP address cannot carry the bucket name")),
        None => return Err(refuse("no host")),
    };
    if host.starts_with(&format!("{bucket}.")) {
        return Ok(endpoint.to_string());
    }
    url.set_host(Some(&format!("{bucket}.{host}")))
        .map_err(|e| refuse(&e.to_string()))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl ObjectStoreFactory for Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = self.build(url)?;
        let path = Path::from_url_path(url.path())
            .map_err(|e| DeltaTableError::generic(format!("{url}: {e}")))?;
        Ok((Arc::new(store), path))
    }
}

/// delta-rs' default log store: commits by put-if-absent.
struct LogStores;

impl LogStoreFactory for LogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_virtual_hosted_endpoint_carries_the_bucket() {
        assert_eq!(
            bucket_endpoint("https://s3.example.com", "spans").unwrap(),
            "https://spans.s3.example.com"
        );
        assert_eq!(
            bucket_endpoint("https://spans.s3.example.com", "spans").unwrap(),
            "https://spans.s3.example.com"
        );
        let err = bucket_endpoint("http://127.0.0.1:9000", "spans").unwrap_err();
        assert!(err.to_string().contains("--s3-path-style true"), "{err}");
    }

    #[test]
    fn settings_that_make_commits_unsafe_are_refused_by_name() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| map.get(k).cloned()
        };
        assert!(check_environment(env(&[])).is_ok());
        assert!(check_environment(env(&[("AWS_CONDITIONAL_PUT", "etag")])).is_ok());
        for (name, value) in [
            ("AWS_S3_LOCKING_PROVIDER", "dynamodb"),
            ("AWS_S3_ALLOW_UNSAFE_RENAME", "true"),
            ("AWS_CONDITIONAL_PUT", "disabled"),
        ] {
            let err = check_environment(env(&[(name, value)])).unwrap_err();
            assert!(err.contains(name) && err.contains("unset it"), "{err}");
        }
    }
}
