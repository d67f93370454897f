//! Keeping a file server inside its directory: [`Sandbox::resolve`] refuses absolute paths,
//! `..`, and symlinks that lead out, with [`FsError::OutsideRoot`].

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::FsError;

/// One directory, and the rule that every path served resolves inside it.
pub(crate) struct Sandbox {
    /// The served directory, canonical.
    root: PathBuf,
}

impl Sandbox {
    pub(crate) async fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Sandbox {
            root: tokio::fs::canonicalize(root).await?,
        })
    }

    /// The served directory, canonical.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where `path` is, for reading or deleting it (`must_exist`) or for writing it.
    ///
    /// Lexically, only plain names (and `.`) are accepted: no root, no drive prefix, no `..`.
    /// Then the parent directory is canonicalized, which resolves every symlink on the way,
    /// and must lie inside the root; an existing final component that is a symlink must
    /// resolve inside the root too. The returned path is the parent's canonical path joined
    /// with the final name, so a delete removes a link rather than its target.
    ///
    /// This is checked before the file is opened. A client that can also change the served
    /// directory by other means could swap in a symlink in between; a server exposed to such
    /// clients would open files relative to a directory handle with `O_NOFOLLOW` instead.
    pub(crate) async fn resolve(&self, path: &str, must_exist: bool) -> Result<PathBuf, FsError> {
        let outside = || FsError::OutsideRoot { path: path.into() };
        let relative = Path::new(path);
        let mut names = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => names.push(name),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(outside())
                }
            }
        }
        let Some(name) = names.pop() else {
            // The root itself: only a listing may name it.
            return Ok(self.root.clone());
        };
        let parent: PathBuf = names.iter().collect();
        let parent = tokio::fs::canonicalize(self.root.join(parent))
            .await
            .map_err(|err| io_error(path, err))?;
        if !parent.starts_with(&self.root) {
            return Err(outside());
        }
        let full = parent.join(name);
        match tokio::fs::symlink_metadata(&full).await {
            Ok(meta) if meta.file_type().is_symlink() => {
                // Wherever it points (or dangles to), it must stay inside.
                let target = tokio::fs::canonicalize(&full).await;
                if !target.is_ok_and(|target| target.starts_with(&self.root)) {
                    return Err(outside());
                }
            }
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::NotFound && !must_exist => {}
            Err(err) => return Err(io_error(path, err)),
        }
        Ok(full)
    }

    /// Opens the regular file at `path` for reading, with its length.
    pub(crate) async fn open_file(&self, path: &str) -> Result<(tokio::fs::File, u64), FsError> {
        let full = self.resolve(path, true).await?;
        let file = tokio::fs::File::open(&full)
            .await
            .map_err(|err| io_error(path, err))?;
        let meta = file.metadata().await.map_err(|err| io_error(path, err))?;
        if !meta.is_file() {
            return Err(FsError::WrongKind { path: path.into() });
        }
        Ok((file, meta.len()))
    }
}

/// The client's view of an I/O failure at `path`: not found, or the kind of failure, never
/// the server's own paths.
pub(crate) fn io_error(path: &str, err: std::io::Error) -> FsError {
    match err.kind() {
        ErrorKind::NotFound => FsError::NotFound { path: path.into() },
        // Don't reveal the server's own paths in messages.
        _ => FsError::Io {
            path: path.into(),
            message: err.kind().to_string(),
        },
    }
}
