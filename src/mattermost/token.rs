//! The bot token, literal or from a file that is re-read whenever it changes (a rotated
//! Kubernetes Secret, a file rewritten by a vault agent).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Mutex;

use super::error::MattermostError;
use crate::settings::{Secret, TokenSource};

/// What identifies one version of the file, from a cheap `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Kubernetes swaps a Secret's files by replacing a symlink; a new inode is a new file
    /// even when the time and size happen to match.
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

/// Hands out the current bot token.
#[derive(Debug)]
pub(crate) enum TokenProvider {
    /// A fixed token.
    Literal(Arc<str>),
    /// A token file and the last version read from it.
    File {
        path: PathBuf,
        current: Mutex<Option<(Stamp, Arc<str>)>>,
    },
}

impl TokenProvider {
    pub(crate) fn new(source: &TokenSource) -> Result<Self, MattermostError> {
        match source {
            TokenSource::Literal(secret) => {
                let token = secret.expose().trim();
                if token.is_empty() {
                    return Err(MattermostError::Config(
                        "the Mattermost bot token is empty".into(),
                    ));
                }
                Ok(Self::Literal(token.into()))
            }
            TokenSource::File(path) => Ok(Self::File {
                path: path.clone(),
                current: Mutex::new(None),
            }),
        }
    }

    /// The token to send now. For a file, `stat`s it and re-reads it if it changed.
    pub(crate) async fn token(&self) -> Result<Arc<str>, MattermostError> {
        match self {
            Self::Literal(token) => Ok(token.clone()),
            Self::File { path, current } => {
                let mut current = current.lock().await;
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| file_error(path, format!("cannot stat it: {e}")))?;
                let stamp = Stamp::of(&meta);
                if let Some((seen, token)) = current.as_ref()
                    && *seen == stamp
                {
                    return Ok(token.clone());
                }
                let token = read_token(path).await?;
                if current.is_some() {
                    tracing::info!(path = %path.display(), "Mattermost bot token file changed; using the new token");
                }
                *current = Some((stamp, token.clone()));
                Ok(token)
            }
        }
    }

    /// After a 401: re-reads the file even if its `stat` looks unchanged (a rewrite within
    /// the file system's time resolution keeps the stamp) and says whether the token differs
    /// from `used`. Always `false` for a literal token.
    pub(crate) async fn refresh_after_rejection(&self, used: &str) -> bool {
        let Self::File { path, current } = self else {
            return false;
        };
        let mut current = current.lock().await;
        let (Ok(meta), Ok(token)) = (tokio::fs::metadata(path).await, read_token(path).await)
        else {
            return false;
        };
        let changed = &*token != used;
        *current = Some((Stamp::of(&meta), token));
        changed
    }
}

async fn read_token(path: &Path) -> Result<Arc<str>, MattermostError> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|e| file_error(path, format!("cannot read it: {e}")))?;
    let text = String::from_utf8(raw).map_err(|_| file_error(path, "it is not UTF-8 text"))?;
    let token = Secret::new(text.trim());
    if token.expose().is_empty() {
        return Err(file_error(path, "it is empty"));
    }
    if token.expose().chars().any(char::is_whitespace) {
        return Err(file_error(
            path,
            "it holds more than one word; it must contain only the token",
        ));
    }
    Ok(token.expose().into())
}

fn file_error(path: &Path, reason: impl Into<String>) -> MattermostError {
    MattermostError::TokenFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_token_is_trimmed_and_reread_after_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let provider = TokenProvider::new(&TokenSource::File(path.clone())).unwrap();
        assert_eq!(&*provider.token().await.unwrap(), "first");

        std::fs::write(&path, "second-token\n").unwrap();
        assert_eq!(&*provider.token().await.unwrap(), "second-token");
    }

    #[tokio::test]
    async fn same_size_rewrite_is_caught_after_a_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "aaaa").unwrap();
        let provider = TokenProvider::new(&TokenSource::File(path.clone())).unwrap();
        assert_eq!(&*provider.token().await.unwrap(), "aaaa");
        std::fs::write(&path, "bbbb").unwrap();
        assert!(provider.refresh_after_rejection("aaaa").await);
        assert_eq!(&*provider.token().await.unwrap(), "bbbb");
        assert!(!provider.refresh_after_rejection("bbbb").await);
    }

    #[tokio::test]
    async fn empty_or_missing_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  \n").unwrap();
        let provider = TokenProvider::new(&TokenSource::File(path.clone())).unwrap();
        let err = provider.token().await.unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("empty"), "{err}");

        let missing = dir.path().join("nope");
        let provider = TokenProvider::new(&TokenSource::File(missing.clone())).unwrap();
        let err = provider.token().await.unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn empty_literal_token_is_rejected() {
        assert!(TokenProvider::new(&TokenSource::Literal(Secret::new(" "))).is_err());
    }
}
