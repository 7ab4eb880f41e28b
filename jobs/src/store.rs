//! Object stores: where tables and raw files live ([`tauc_common::store`],
//! shared with the collection chain), and the registry DataFusion asks for
//! a store on every scan and write.

use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use url::Url;

pub use tauc_common::store::{Location, Requests, S3Options, StoreRegistry, requests, s3_pager};

/// `registry` as DataFusion's object-store registry: every session of the
/// process then shares its one cached client per bucket.
pub fn for_datafusion(registry: Arc<StoreRegistry>) -> Arc<dyn ObjectStoreRegistry> {
    Arc::new(SessionStores(registry))
}

/// The shared registry behind DataFusion's trait.
#[derive(Debug)]
struct SessionStores(Arc<StoreRegistry>);

impl ObjectStoreRegistry for SessionStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.0.register(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        Ok(self.0.for_url(url).map_err(crate::Error::from)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_caches_per_bucket() {
        let r = for_datafusion(Arc::new(StoreRegistry::new(S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            allow_http: Some(true),
            ..Default::default()
        })));
        let a = r.get_store(&Url::parse("s3://one/x").unwrap()).unwrap();
        let b = r.get_store(&Url::parse("s3://one/y").unwrap()).unwrap();
        let c = r.get_store(&Url::parse("s3://two/").unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(r.get_store(&Url::parse("gs://x/").unwrap()).is_err());
    }
}
