//! Object stores: where tables and raw files live, and one cached client per
//! bucket.
//!
//! DataFusion asks the registry for a store on every scan and write; the
//! stock Ballista S3 registry builds a new client each time (and panics on
//! `register_store`). [`StoreRegistry`] (which `tauc-jobs` hands to
//! DataFusion as its `ObjectStoreRegistry`) builds a client once per
//! `(scheme, bucket)` with the process's own [`S3Options`] — credentials
//! come from the process environment or the instance role, never from a
//! plan, so they never travel to the scheduler or show in its API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::list::PaginatedListStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

/// How to reach S3 (or an S3-compatible server). Each field is also an
/// environment variable (`TAUC_S3_ENDPOINT`, ...); flags beat env, env
/// beats the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`);
    /// unset means AWS.
    pub endpoint: Option<String>,
    /// AWS region; unset means `AWS_REGION`/`AWS_DEFAULT_REGION` or `us-east-1`.
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (local test servers).
    pub allow_http: Option<bool>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual hosts;
    /// defaults to true when an endpoint is set.
    pub path_style: Option<bool>,
    /// Give up on a failing request after this many seconds of retries.
    pub retry_timeout_secs: Option<u64>,
}

impl S3Options {
    /// The options' environment variables, in field order.
    pub const ENV_VARS: [&'static str; 5] = [
        "TAUC_S3_ENDPOINT",
        "TAUC_S3_REGION",
        "TAUC_S3_ALLOW_HTTP",
        "TAUC_S3_PATH_STYLE",
        "TAUC_S3_RETRY_TIMEOUT_SECS",
    ];

    /// Fills unset fields from `TAUC_S3_*` environment variables.
    pub fn with_env(mut self) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.endpoint = self.endpoint.or(var("TAUC_S3_ENDPOINT"));
        self.region = self.region.or(var("TAUC_S3_REGION"));
        if self.allow_http.is_none() {
            self.allow_http = var("TAUC_S3_ALLOW_HTTP")
                .map(|v| parse_bool("TAUC_S3_ALLOW_HTTP", &v))
                .transpose()?;
        }
        if self.path_style.is_none() {
            self.path_style = var("TAUC_S3_PATH_STYLE")
                .map(|v| parse_bool("TAUC_S3_PATH_STYLE", &v))
                .transpose()?;
        }
        if self.retry_timeout_secs.is_none() {
            self.retry_timeout_secs = var("TAUC_S3_RETRY_TIMEOUT_SECS")
                .map(|v| {
                    v.parse().map_err(|_| {
                        Error::config(format!(
                            "invalid TAUC_S3_RETRY_TIMEOUT_SECS '{v}' (expected whole seconds)"
                        ))
                    })
                })
                .transpose()?;
        }
        Ok(self)
    }

    fn build(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_http_connector(CountingConnector);
        if let Some(endpoint) = &self.endpoint {
            Url::parse(endpoint).map_err(|e| {
                Error::config(format!(
                    "invalid S3 endpoint '{endpoint}': {e} (expected a URL such as http://127.0.0.1:9000)"
                ))
            })?;
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(!self.path_style.unwrap_or(true));
        } else if let Some(path_style) = self.path_style {
            b = b.with_virtual_hosted_style_request(!path_style);
        }
        if let Some(region) = &self.region {
            b = b.with_region(region);
        }
        if let Some(allow) = self.allow_http {
            b = b.with_allow_http(allow);
        }
        let timeout = Duration::from_secs(self.retry_timeout_secs.unwrap_or(30));
        // The timeout is the whole budget: object_store stops at whichever
        // of `max_retries` and `retry_timeout` comes first, and 10 jittered
        // retries were spent in ~4 s of a 30 s budget (a 5 s S3 restart
        // failed the run). Backing off up to 5 s between tries keeps a busy
        // S3's 500/503s from being hammered.
        b = b.with_retry(RetryConfig {
            max_retries: usize::MAX,
            retry_timeout: timeout,
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
        });
        let s3 = Arc::new(b.build().map_err(|e| {
            Error::config(format!("cannot configure S3 for bucket '{bucket}': {e}"))
        })?);
        PAGERS
            .write()
            .expect("pager lock")
            .insert(bucket.to_string(), s3.clone());
        Ok(s3)
    }
}

/// The S3 requests this process has sent, by kind — every client the
/// registry builds counts at its HTTP connector, so retries, listing
/// pages and multipart parts are each one request, as S3 bills them.
/// `tauc-job follow` shows them per micro-batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `ListObjectsV2` (and multipart-upload listings).
    pub list: u64,
    /// `GetObject`, whole or ranged.
    pub get: u64,
    /// `HeadObject`.
    pub head: u64,
    /// `PutObject`, copies and the multipart calls (`POST`s included).
    pub put: u64,
    /// `DeleteObject(s)`.
    pub delete: u64,
    /// Anything else.
    pub other: u64,
}

impl Requests {
    /// The kinds' names, as metrics label them, with their counts.
    pub fn by_kind(&self) -> [(&'static str, u64); 6] {
        [
            ("list", self.list),
            ("get", self.get),
            ("head", self.head),
            ("put", self.put),
            ("delete", self.delete),
            ("other", self.other),
        ]
    }

    /// The requests made since `before` (an earlier [`requests`]).
    pub fn since(&self, before: &Requests) -> Requests {
        Requests {
            list: self.list - before.list,
            get: self.get - before.get,
            head: self.head - before.head,
            put: self.put - before.put,
            delete: self.delete - before.delete,
            other: self.other - before.other,
        }
    }
}

/// The counters behind [`requests`], in [`Requests::by_kind`] order.
static REQUESTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The S3 requests this process has sent so far.
pub fn requests() -> Requests {
    let n = |i: usize| REQUESTS[i].load(Ordering::Relaxed);
    Requests {
        list: n(0),
        get: n(1),
        head: n(2),
        put: n(3),
        delete: n(4),
        other: n(5),
    }
}

/// The [`Requests`] slot of a request: by method, and for `GET`/`POST` by
/// the S3 sub-resource in the query.
fn request_kind(method: &str, query: Option<&str>) -> usize {
    let has =
        |key: &str| query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(key)));
    match method {
        "GET" if has("list-type") || has("uploads") => 0,
        "GET" => 1,
        "HEAD" => 2,
        "POST" if has("delete") => 4,
        "PUT" | "POST" => 3,
        "DELETE" => 4,
        _ => 5,
    }
}

/// The HTTP client of every S3 client, counting what it sends.
#[derive(Debug)]
struct Counting(HttpClient);

#[async_trait::async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let kind = request_kind(req.method().as_str(), req.uri().query());
        REQUESTS[kind].fetch_add(1, Ordering::Relaxed);
        self.0.execute(req).await
    }
}

/// object_store's own reqwest client, wrapped in [`Counting`].
#[derive(Debug)]
struct CountingConnector;

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counting(inner)))
    }
}

/// The S3 client of each bucket, as built last in this process, for
/// listings paged by hand (`ingest::listing`): DataFusion hands a scan only
/// `dyn ObjectStore`, which cannot list from a key `object_store` refuses.
static PAGERS: LazyLock<RwLock<HashMap<String, Arc<AmazonS3>>>> = LazyLock::new(Default::default);

/// The paged lister of `store_url` (`s3://bucket`) when it is an S3 store
/// built by this process.
pub fn s3_pager(store_url: &str) -> Option<Arc<dyn PaginatedListStore>> {
    let bucket = store_url.strip_prefix("s3://")?.trim_end_matches('/');
    let pagers = PAGERS.read().expect("pager lock");
    Some(pagers.get(bucket)?.clone() as Arc<dyn PaginatedListStore>)
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(Error::config(format!(
            "invalid {name} '{v}' (expected true or false)"
        ))),
    }
}

/// A place in an object store: the store's URL (`s3://bucket`, `file:///`)
/// and a prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// `s3://bucket` or `file:///`.
    pub store_url: String,
    /// Key prefix inside the store, without leading or trailing `/`.
    pub prefix: String,
}

impl Location {
    /// Parses an `s3://bucket/prefix` URL, a `file://` URL or a local path
    /// (made absolute; it need not exist yet).
    pub fn parse(s: &str) -> Result<Location> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::config(
                "empty location (expected s3://bucket/prefix or a local path)",
            ));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::config(format!(
                    "invalid location '{s}': no bucket (expected s3://bucket/prefix)"
                )));
            }
            return Ok(Location {
                store_url: format!("s3://{bucket}"),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let path = if let Some(p) = s.strip_prefix("file://") {
            std::path::PathBuf::from(p)
        } else if s.contains("://") {
            return Err(Error::config(format!(
                "unsupported location '{s}' (expected s3://bucket/prefix or a local path)"
            )));
        } else {
            std::path::PathBuf::from(s)
        };
        let abs = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()?.join(path)
        };
        let text = abs.to_string_lossy().replace('\\', "/");
        Ok(Location {
            store_url: "file:///".to_string(),
            prefix: normalise_local(&text).trim_matches('/').to_string(),
        })
    }

    /// A location below this one.
    pub fn join(&self, rel: &str) -> Location {
        let rel = rel.trim_matches('/');
        let prefix = match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        };
        Location {
            store_url: self.store_url.clone(),
            prefix,
        }
    }

    /// The prefix as an object-store path.
    pub fn path(&self) -> Path {
        Path::from(self.prefix.as_str())
    }

    /// A URL DataFusion can scan: `s3://bucket/prefix/` or `file:///prefix/`.
    pub fn url(&self) -> String {
        let base = if self.store_url.starts_with("file") {
            "file://"
        } else {
            self.store_url.trim_end_matches('/')
        };
        if self.prefix.is_empty() {
            format!("{base}/")
        } else {
            format!("{base}/{}/", self.prefix)
        }
    }

    /// The URL of an object `key` (a full key, as listings return it) in
    /// this location's store.
    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{key}", self.store_url.trim_end_matches('/'))
    }

    /// The store's URL as a [`Url`].
    pub fn store(&self) -> Result<Url> {
        Url::parse(&self.store_url)
            .map_err(|e| Error::config(format!("invalid store url '{}': {e}", self.store_url)))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.store_url.starts_with("file") {
            write!(f, "/{}", self.prefix)
        } else {
            write!(f, "{}/{}", self.store_url, self.prefix)
        }
    }
}

/// Removes `.` and `..` segments of an absolute path, lexically.
fn normalise_local(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

/// The object-store registry every tauc session uses.
#[derive(Debug)]
pub struct StoreRegistry {
    options: S3Options,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    /// A registry whose S3 clients use `options`.
    pub fn new(options: S3Options) -> Self {
        StoreRegistry {
            options,
            stores: RwLock::new(HashMap::new()),
        }
    }

    fn key(url: &Url) -> String {
        format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
    }

    /// The store for a location.
    pub fn for_location(&self, loc: &Location) -> Result<Arc<dyn ObjectStore>> {
        self.for_url(&loc.store()?)
    }

    /// The store for a URL's scheme and bucket, built at its first use.
    pub fn for_url(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        if let Some(s) = self.stores.read().expect("registry lock").get(&key) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => Arc::new(LocalFileSystem::new()),
            "s3" => self.options.build(url.host_str().unwrap_or(""))?,
            other => {
                return Err(Error::config(format!(
                    "unsupported object store scheme '{other}' in '{url}' (expected s3:// or a local path)"
                )));
            }
        };
        let mut stores = self.stores.write().expect("registry lock");
        Ok(stores.entry(key).or_insert(store).clone())
    }

    /// Puts `store` in the place of `url`'s scheme and bucket; returns the
    /// one it replaces.
    pub fn register(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .expect("registry lock")
            .insert(Self::key(url), store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_by_what_s3_bills() {
        let kind = |m, q| Requests::default().by_kind()[request_kind(m, q)].0;
        assert_eq!(kind("GET", Some("list-type=2&prefix=a%2F")), "list");
        assert_eq!(kind("GET", None), "get");
        assert_eq!(kind("HEAD", None), "head");
        assert_eq!(kind("PUT", Some("partNumber=1&uploadId=x")), "put");
        assert_eq!(kind("POST", Some("uploads")), "put");
        assert_eq!(kind("POST", Some("delete")), "delete");
        assert_eq!(kind("DELETE", None), "delete");
        assert_eq!(kind("OPTIONS", None), "other");
    }

    #[test]
    fn locations() {
        let l = Location::parse("s3://bkt/a/b/").unwrap();
        assert_eq!(
            (l.store_url.as_str(), l.prefix.as_str()),
            ("s3://bkt", "a/b")
        );
        assert_eq!(l.join("ods/t").url(), "s3://bkt/a/b/ods/t/");
        let l = Location::parse("/tmp/x/../y").unwrap();
        assert_eq!(l.url(), "file:///tmp/y/");
        assert!(Location::parse("s3://").is_err());
        assert!(Location::parse("gs://b/x").is_err());
    }
}
