//! Images: SSRF-safe fetching and validation (`fetch`), and blob storage
//! of originals through object_store, keyed by content hash.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

pub mod decode;
pub mod fetch;

pub use fetch::{AddressPolicy, FetchConfig, FetchedImage, ImageFetcher, MediaError};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blobs.url: {0}")]
    InvalidUrl(String),
    #[error("blob store: {0}")]
    Store(String),
    #[error("no blob {0}")]
    NotFound(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
            other => BlobError::Store(other.to_string()),
        }
    }
}

/// Where images (and later plugin binaries) are kept: a local directory by
/// default, any object_store URL (`s3://bucket/prefix`, `file:///dir`,
/// `memory://`) when `blobs.url` is set.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl BlobStore {
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, BlobError> {
        match url {
            None => {
                let dir = data_dir.join("blobs");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| BlobError::Store(format!("cannot create {}: {e}", dir.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                Ok(Self {
                    store: Arc::new(store),
                    prefix: ObjectPath::default(),
                })
            }
            Some(raw) => {
                let url = url::Url::parse(raw).map_err(|e| BlobError::InvalidUrl(e.to_string()))?;
                if url.scheme() == "file" {
                    let dir = url
                        .to_file_path()
                        .map_err(|_| BlobError::InvalidUrl("not a local path".into()))?;
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| BlobError::Store(format!("cannot create {}: {e}", dir.display())))?;
                }
                let (store, prefix) =
                    object_store::parse_url(&url).map_err(|e| BlobError::InvalidUrl(e.to_string()))?;
                Ok(Self {
                    store: Arc::from(store),
                    prefix,
                })
            }
        }
    }

    /// Key of an image: `images/<2 hex>/<sha256>`; the fan-out keeps
    /// directories small on local disks.
    pub fn image_key(sha256: &str) -> String {
        format!("images/{}/{sha256}", &sha256[..2.min(sha256.len())])
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from_iter(self.prefix.parts().chain(ObjectPath::from(key).parts()))
    }

    /// Stores an original image once; the same content is never written
    /// twice. Returns its key.
    pub async fn put_image(&self, image: &FetchedImage) -> Result<String, BlobError> {
        let key = Self::image_key(&image.sha256);
        let path = self.path(&key);
        match self.store.head(&path).await {
            Ok(_) => return Ok(key),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.put(&path, image.bytes.clone().into()).await?;
        Ok(key)
    }

    /// Stores `bytes` under `key` (replacing what was there).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store.put(&self.path(key), bytes.into()).await?;
        Ok(())
    }

    /// Removes a blob; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        Ok(self.store.get(&self.path(key)).await?.bytes().await?)
    }
}

#[cfg(test)]
mod tests;
