//! Where a checkpoint comes from (setting `encoder.model`) and how it is made local.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::error::{EncoderError, Result};

/// Files a checkpoint directory must contain.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// Files used when present.
pub const OPTIONAL_FILES: [&str; 1] = ["preprocessor_config.json"];

/// A parsed `encoder.model` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory in Hugging Face layout.
    LocalDir(PathBuf),
    /// An object-store URL of such a directory (`file://`, `s3://`, `gs://`, `az://`, ...).
    ObjectStore(url::Url),
    /// A Hugging Face hub repo id, optionally `@revision`.
    Hub { repo: String, revision: Option<String> },
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalDir(p) => write!(f, "{}", p.display()),
            Self::ObjectStore(u) => write!(f, "{u}"),
            Self::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "{repo}@{r}"),
            Self::Hub { repo, .. } => write!(f, "{repo}"),
        }
    }
}

fn is_hub_id(s: &str) -> bool {
    let (id, rev) = match s.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (s, None),
    };
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let mut parts = id.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    valid(org) && valid(name) && rev.is_none_or(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

impl FromStr for ModelSource {
    type Err = EncoderError;

    /// Parsing rules, in order:
    /// 1. `scheme://...` is an object-store URL (`hf://org/name[@rev]` is accepted as a hub id);
    /// 2. an existing path, or one starting with `/`, `./`, `../` or `~/`, is a local directory;
    /// 3. `org/name` or `org/name@revision` is a hub repo id.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let invalid = |message: &str| EncoderError::InvalidSource {
            source_str: s.to_string(),
            message: message.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if let Some(rest) = s.strip_prefix("hf://") {
            return Self::from_str(rest).and_then(|src| match src {
                hub @ Self::Hub { .. } => Ok(hub),
                _ => Err(invalid("expected hf://org/name[@revision]")),
            });
        }
        if s.contains("://") {
            let url = url::Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
            return Ok(Self::ObjectStore(url));
        }
        if let Some(home_rel) = s.strip_prefix("~/") {
            let home = std::env::var_os("HOME").ok_or_else(|| invalid("HOME is not set"))?;
            return Ok(Self::LocalDir(PathBuf::from(home).join(home_rel)));
        }
        let path = Path::new(s);
        if path.is_absolute() || s.starts_with("./") || s.starts_with("../") || path.exists() {
            return Ok(Self::LocalDir(path.to_path_buf()));
        }
        if is_hub_id(s) {
            let (repo, revision) = match s.split_once('@') {
                Some((r, rev)) => (r.to_string(), Some(rev.to_string())),
                None => (s.to_string(), None),
            };
            return Ok(Self::Hub { repo, revision });
        }
        Err(invalid(
            "not an existing directory, an object-store URL or a hub id like `openai/clip-vit-base-patch32`",
        ))
    }
}

/// Knobs for fetching remote sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOptions {
    /// Cache directory for hub / object-store downloads. Hub default: `$HF_HOME/hub`
    /// (hf-hub's own default); object-store default: `$TMPDIR/vitrine-encoder-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Pinned hub revision (commit sha or tag) used when the id has no `@revision`;
    /// `main` otherwise.
    pub revision: Option<String>,
}

/// A checkpoint available on the local filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCheckpoint {
    pub dir: PathBuf,
    /// Human-readable origin, used in the model id.
    pub origin: String,
}

impl ModelSource {
    /// Make the checkpoint available locally (downloading if needed).
    pub fn resolve(&self, opts: &SourceOptions) -> Result<LocalCheckpoint> {
        match self {
            Self::LocalDir(dir) => {
                if !dir.is_dir() {
                    return Err(EncoderError::MissingFile { path: dir.clone() });
                }
                let abs = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                Ok(LocalCheckpoint {
                    origin: format!("local:{}", abs.display()),
                    dir: abs,
                })
            }
            Self::Hub { repo, revision } => {
                let rev = revision
                    .clone()
                    .or_else(|| opts.revision.clone())
                    .unwrap_or_else(|| "main".to_string());
                let dir = fetch_hub(repo, &rev, opts.cache_dir.as_deref())?;
                Ok(LocalCheckpoint {
                    dir,
                    origin: format!("hf:{repo}@{rev}"),
                })
            }
            Self::ObjectStore(url) => {
                let dir = fetch_object_store(url, opts.cache_dir.as_deref())?;
                Ok(LocalCheckpoint {
                    dir,
                    origin: url.to_string(),
                })
            }
        }
    }
}

fn fetch_hub(repo: &str, revision: &str, cache_dir: Option<&Path>) -> Result<PathBuf> {
    use hf_hub::api::sync::{ApiBuilder, ApiError};
    use hf_hub::{Repo, RepoType};

    let unreachable = |file: &str, message: String| EncoderError::HubUnreachable {
        repo: repo.to_string(),
        file: file.to_string(),
        message,
    };
    let mut builder = ApiBuilder::from_env().with_progress(false).with_retries(1);
    if let Some(dir) = cache_dir {
        builder = builder.with_cache_dir(dir.to_path_buf());
    }
    let api = builder.build().map_err(|e| unreachable("-", e.to_string()))?;
    let api_repo = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let classify = |file: &str, err: ApiError| -> EncoderError {
        let status = match &err {
            ApiError::RequestError(e) => match e.as_ref() {
                ureq::Error::Status(code, _) => Some(*code),
                ureq::Error::Transport(_) => None,
            },
            _ => None,
        };
        match status {
            Some(code @ (401 | 403 | 404)) => EncoderError::HubNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                file: file.to_string(),
                message: format!("HTTP {code}"),
            },
            _ => unreachable(file, err.to_string()),
        }
    };
    let mut dir = None;
    for file in REQUIRED_FILES {
        // `get` serves from the cache when the file is already there (offline use).
        let path = api_repo.get(file).map_err(|e| classify(file, e))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL_FILES {
        match api_repo.get(file) {
            Ok(_) => {}
            Err(e) => match classify(file, e) {
                EncoderError::HubNotFound { .. } => {}
                other => return Err(other),
            },
        }
    }
    dir.ok_or_else(|| unreachable("-", "no files resolved".into()))
}

fn fetch_object_store(url: &url::Url, cache_dir: Option<&Path>) -> Result<PathBuf> {
    use futures::StreamExt;
    use object_store::{ObjectStore, path::Path as ObjPath};
    use std::io::Write;

    let err = |message: String| EncoderError::ObjectStore {
        url: url.to_string(),
        message,
    };
    let (store, prefix) = object_store::parse_url(url).map_err(|e| match e {
        object_store::Error::NotImplemented | object_store::Error::Generic { .. } => {
            EncoderError::UnsupportedSource {
                source_str: url.to_string(),
                message: format!(
                    "object-store scheme `{}` is not enabled in this build ({e}); \
                     enable object_store's aws/gcp/azure feature or use a local directory",
                    url.scheme()
                ),
            }
        }
        other => err(other.to_string()),
    })?;
    let cache_root = cache_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("vitrine-encoder-cache"));
    // One cache sub-directory per URL; the name is a stable hash of the URL.
    let dest = cache_root.join(format!("{:016x}", fnv1a(url.as_str().as_bytes())));
    std::fs::create_dir_all(&dest).map_err(|e| super::config::io_error(&dest, e))?;

    let fetch = |name: &str, required: bool| -> Result<()> {
        let loc: ObjPath = prefix.child(name);
        futures::executor::block_on(async {
            let meta = match store.head(&loc).await {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) if !required => return Ok(()),
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(EncoderError::MissingFile {
                        path: PathBuf::from(format!("{url}/{name}")),
                    });
                }
                Err(e) => return Err(err(format!("{name}: {e}"))),
            };
            let target = dest.join(name);
            if std::fs::metadata(&target).ok().map(|m| m.len()) == Some(meta.size) {
                return Ok(()); // cached copy of the same size
            }
            let tmp = dest.join(format!("{name}.partial"));
            let mut file = std::fs::File::create(&tmp).map_err(|e| super::config::io_error(&tmp, e))?;
            let mut stream = store
                .get(&loc)
                .await
                .map_err(|e| err(format!("{name}: {e}")))?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| err(format!("{name}: {e}")))?;
                file.write_all(&chunk)
                    .map_err(|e| super::config::io_error(&tmp, e))?;
            }
            file.sync_all().map_err(|e| super::config::io_error(&tmp, e))?;
            std::fs::rename(&tmp, &target).map_err(|e| super::config::io_error(&target, e))?;
            Ok(())
        })
    };
    for name in REQUIRED_FILES {
        fetch(name, true)?;
    }
    for name in OPTIONAL_FILES {
        fetch(name, false)?;
    }
    Ok(dest)
}

/// FNV-1a 64-bit; stable across Rust versions, unlike `DefaultHasher`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
