//! Keeping a file server inside its directory, with nothing between the check and the use.
//!
//! A [`Sandbox`] holds an open handle to the served directory and reaches every path from it
//! one name at a time: each directory on the way with `openat(dir, name, O_DIRECTORY |
//! O_NOFOLLOW)`, the final name with `O_NOFOLLOW` (or `statat`, `unlinkat`, `renameat` relative
//! to its directory's handle). The check *is* the open, so there is no window in which a
//! symlink swapped in by someone else could lead the server out: a symlink anywhere in a path
//! is refused with [`FsError::Symlink`], whether it points out or not, and absolute paths and
//! `..` are refused before any file is touched, with [`FsError::OutsideRoot`]. Symlinks are
//! listed (and [`stat`](Sandbox::stat)ed) as what they are, never followed. What a handle was
//! opened on stays what it works on: a directory renamed or replaced by a symlink after an
//! upload opened it still receives that upload, and the file a download opened is the one it
//! sends.
//!
//! The system calls come from `rustix`, whose `openat` and friends are safe functions over
//! owned file descriptors: the workspace forbids `unsafe`, so `libc` is out. `cap-std` (which
//! builds on `rustix`) would do the walk itself, with `openat2(RESOLVE_BENEATH)` where the
//! kernel has it, but it follows symlinks that stay inside the directory, where this server
//! refuses every symlink, which is simpler to state and to test; it also costs three times the
//! cold build (23 s against 8 s; a dozen crates where `rustix` adds two). Hard links are beyond any path check:
//! a served directory must not hold hard links to files outside it (uploads never write into
//! an existing file, they create a new one and rename it into place). Unix only, like
//! `openat`.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::{Entry, FsError, Kind};

/// How every directory on a path is opened: never through a symlink, never kept across an
/// `exec`.
const DIRECTORY: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// One directory, and the rule that every path served is reached inside it.
pub(crate) struct Sandbox {
    /// The served directory as it was named at the start, canonical: for messages only.
    root: PathBuf,
    /// The served directory itself; every path is resolved from here.
    dir: Arc<OwnedFd>,
}

impl Sandbox {
    /// Opens the served directory. Symlinks in `root` itself are followed: the operator
    /// chose it.
    pub(crate) async fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = tokio::fs::canonicalize(root).await?;
        let opened = root.clone();
        let dir = tokio::task::spawn_blocking(move || {
            rustix::fs::openat(
                rustix::fs::CWD,
                &opened,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .await??;
        Ok(Sandbox {
            root,
            dir: Arc::new(dir),
        })
    }

    /// The served directory, canonical, as it was named at the start.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `work` on a blocking thread with the root's handle: every `*at` call blocks.
    async fn blocking<T: Send + 'static>(
        &self,
        path: &str,
        work: impl FnOnce(&OwnedFd) -> Result<T, FsError> + Send + 'static,
    ) -> Result<T, FsError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || work(&dir))
            .await
            .unwrap_or_else(|_| {
                Err(FsError::Io {
                    path: path.into(),
                    message: "the file operation panicked".into(),
                })
            })
    }

    /// The entries of directory `dir` (`""` or `"."` for the served directory), by name;
    /// symlinks are listed, not followed.
    pub(crate) async fn list(&self, dir: &str) -> Result<Vec<Entry>, FsError> {
        let (mut names, last) = split(dir)?;
        names.extend(last);
        let owned = dir.to_owned();
        self.blocking(dir, move |root| {
            let path = owned;
            let opened = walk(root, &names, &path)?;
            let failed = |err: Errno| io_error(&path, err.into());
            let mut entries = Vec::new();
            for entry in rustix::fs::Dir::read_from(&opened).map_err(failed)? {
                let entry = entry.map_err(failed)?;
                let name = entry.file_name();
                if matches!(name.to_bytes(), b"." | b"..") {
                    continue;
                }
                match rustix::fs::statat(&opened, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => entries.push(entry_of(
                        String::from_utf8_lossy(name.to_bytes()).into_owned(),
                        &stat,
                    )),
                    // Gone since the directory was read.
                    Err(Errno::NOENT) => {}
                    Err(err) => return Err(failed(err)),
                }
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    /// What is at `path`; a symlink is reported as one, not followed.
    pub(crate) async fn stat(&self, path: &str) -> Result<Entry, FsError> {
        let (names, last) = split(path)?;
        let owned = path.to_owned();
        self.blocking(path, move |root| {
            let path = owned;
            let parent = walk(root, &names, &path)?;
            let Some(name) = last else {
                let stat = rustix::fs::fstat(&parent).map_err(|err| io_error(&path, err.into()))?;
                return Ok(entry_of(".".into(), &stat));
            };
            let stat = rustix::fs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|err| io_error(&path, err.into()))?;
            Ok(entry_of(name.to_string_lossy().into_owned(), &stat))
        })
        .await
    }

    /// Opens the regular file at `path` for reading, with its length.
    pub(crate) async fn open_file(&self, path: &str) -> Result<(tokio::fs::File, u64), FsError> {
        let (names, last) = split(path)?;
        let owned = path.to_owned();
        let (file, len) = self
            .blocking(path, move |root| {
                let path = owned;
                let Some(name) = last else {
                    return Err(FsError::WrongKind { path });
                };
                let parent = walk(root, &names, &path)?;
                // Non-blocking, so that a FIFO planted here cannot hold the open forever; it
                // changes nothing for a regular file, the only kind read from.
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
                let file = rustix::fs::openat(&parent, &name, flags, Mode::empty())
                    .map_err(|err| refusal(&parent, &name, &path, err))?;
                let stat = rustix::fs::fstat(&file).map_err(|err| io_error(&path, err.into()))?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                    return Err(FsError::WrongKind { path });
                }
                Ok((std::fs::File::from(file), size(&stat)))
            })
            .await?;
        Ok((tokio::fs::File::from_std(file), len))
    }

    /// Starts storing file `path`: a new file beside it, which [`Upload::commit`] renames into
    /// place. A symlink at `path` is refused, and so is a directory.
    pub(crate) async fn upload(&self, path: &str) -> Result<Upload, FsError> {
        let (names, last) = split(path)?;
        let owned = path.to_owned();
        let (parent, name, partial, file) = self
            .blocking(path, move |root| {
                let path = owned;
                let Some(name) = last else {
                    return Err(FsError::WrongKind { path });
                };
                let parent = walk(root, &names, &path)?;
                // For a clear refusal only: the rename at the end replaces whatever is then at
                // `name` (a symlink swapped in meanwhile included) and never writes through it.
                match rustix::fs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                        FileType::RegularFile => {}
                        FileType::Symlink => return Err(FsError::Symlink { path }),
                        _ => return Err(FsError::WrongKind { path }),
                    },
                    Err(Errno::NOENT) => {}
                    Err(err) => return Err(io_error(&path, err.into())),
                }
                let mut partial = name.clone();
                partial.push(".partial");
                // A new file, always: never one left behind (a symlink or a hard link, say).
                match rustix::fs::unlinkat(&parent, &partial, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(err) => return Err(io_error(&path, err.into())),
                }
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let file =
                    rustix::fs::openat(&parent, &partial, flags, Mode::from_bits_truncate(0o666))
                        .map_err(|err| io_error(&path, err.into()))?;
                Ok((parent, name, partial, std::fs::File::from(file)))
            })
            .await?;
        Ok(Upload {
            path: path.to_owned(),
            place: Some(Place {
                parent,
                name,
                partial,
            }),
            file: tokio::fs::File::from_std(file),
        })
    }

    /// Deletes file `path`. Symlinks and directories are refused.
    pub(crate) async fn delete(&self, path: &str) -> Result<(), FsError> {
        let (names, last) = split(path)?;
        let owned = path.to_owned();
        self.blocking(path, move |root| {
            let path = owned;
            let Some(name) = last else {
                return Err(FsError::WrongKind { path });
            };
            let parent = walk(root, &names, &path)?;
            // The check is for a clear refusal: a symlink swapped in after it is removed
            // itself by `unlinkat`, never its target.
            let stat = rustix::fs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|err| io_error(&path, err.into()))?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => return Err(FsError::Symlink { path }),
                FileType::Directory => return Err(FsError::WrongKind { path }),
                _ => {}
            }
            rustix::fs::unlinkat(&parent, &name, AtFlags::empty()).map_err(|err| match err {
                Errno::ISDIR | Errno::PERM => FsError::WrongKind { path: path.clone() },
                err => io_error(&path, err.into()),
            })
        })
        .await
    }
}

/// An upload under way: the new file, written beside its final name in the directory that
/// was opened when it began. Dropped before [`commit`](Upload::commit) (its stream broke, or
/// its call was cancelled), it removes the new file, and the old one stays as it was.
pub(crate) struct Upload {
    path: String,
    /// Where the new file is; taken by the commit.
    place: Option<Place>,
    /// Where the data goes.
    pub(crate) file: tokio::fs::File,
}

/// A new file's place: its directory, its final name and its own.
struct Place {
    /// The directory as opened when the upload began: renaming or replacing it since
    /// changes nothing.
    parent: OwnedFd,
    name: OsString,
    partial: OsString,
}

impl Place {
    fn remove_partial(&self) {
        let _ = rustix::fs::unlinkat(&self.parent, &self.partial, AtFlags::empty());
    }
}

impl Upload {
    /// Renames the new file to its final name, replacing what is there (a symlink swapped
    /// in meanwhile included: `renameat` replaces the link, never its target). On failure the
    /// new file is removed.
    pub(crate) async fn commit(mut self) -> Result<(), FsError> {
        let Some(place) = self.place.take() else {
            return Ok(());
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            rustix::fs::renameat(&place.parent, &place.partial, &place.parent, &place.name).map_err(
                |err| {
                    place.remove_partial();
                    match err {
                        Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => {
                            FsError::WrongKind { path }
                        }
                        err => io_error(&path, err.into()),
                    }
                },
            )
        })
        .await
        .unwrap_or_else(|_| {
            Err(FsError::Io {
                path: self.path.clone(),
                message: "the rename panicked".into(),
            })
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // One `unlinkat`, made in place: a task spawned for it would have no owner.
        if let Some(place) = self.place.take() {
            place.remove_partial();
        }
    }
}

/// Splits a client's path into the directories to walk and the final name (none for the
/// served directory itself). Only plain names (and `.`) are accepted: no root, no drive
/// prefix, no `..`.
fn split(path: &str) -> Result<(Vec<OsString>, Option<OsString>), FsError> {
    let mut names = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => names.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FsError::OutsideRoot { path: path.into() })
            }
        }
    }
    let last = names.pop();
    Ok((names, last))
}

/// Opens the directory `names` leads to from `root`, one name at a time, refusing symlinks.
fn walk(root: &OwnedFd, names: &[OsString], path: &str) -> Result<OwnedFd, FsError> {
    let mut here = rustix::fs::openat(root, ".", DIRECTORY, Mode::empty())
        .map_err(|err| io_error(path, err.into()))?;
    for name in names {
        here = rustix::fs::openat(&here, name, DIRECTORY, Mode::empty())
            .map_err(|err| refusal(&here, name, path, err))?;
    }
    Ok(here)
}

/// What a failed `O_NOFOLLOW` open of `name` in `dir` means to the client.
fn refusal(dir: &OwnedFd, name: &OsStr, path: &str, err: Errno) -> FsError {
    match err {
        // What `O_NOFOLLOW` answers for a symlink (`EMLINK` on FreeBSD); with `O_DIRECTORY`
        // Linux may say "not a directory" instead, so look.
        Errno::LOOP | Errno::MLINK | Errno::NOTDIR => {
            let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
            match stat.map(|stat| FileType::from_raw_mode(stat.st_mode)) {
                Ok(FileType::Symlink) => FsError::Symlink { path: path.into() },
                Ok(_) => FsError::WrongKind { path: path.into() },
                Err(err) => io_error(path, err.into()),
            }
        }
        err => io_error(path, err.into()),
    }
}

/// A directory entry named `name` as `stat` (taken without following symlinks) describes it.
fn entry_of(name: String, stat: &Stat) -> Entry {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => Kind::Symlink,
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        _ => Kind::Other,
    };
    Entry {
        name,
        size: size(stat),
        kind,
    }
}

/// The size `stat` reports, never negative.
fn size(stat: &Stat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::Sandbox;
    use crate::scratch::TempDir;
    use crate::{FsError, Kind};

    /// A served directory holding `sub/file.txt` ("inside"), beside a directory `outside`
    /// holding `secret.txt` ("secret"), the file no client may reach.
    struct Scene {
        base: TempDir,
        served: PathBuf,
        outside: PathBuf,
    }

    impl Scene {
        fn new(test: &str) -> Scene {
            let base = TempDir(
                std::env::temp_dir()
                    .join(format!("rpc-files-sandbox-{}-{test}", std::process::id())),
            );
            let _ = std::fs::remove_dir_all(&base.0);
            let (served, outside) = (base.0.join("served"), base.0.join("outside"));
            std::fs::create_dir_all(served.join("sub")).expect("served dir");
            std::fs::create_dir_all(&outside).expect("outside dir");
            std::fs::write(served.join("sub/file.txt"), "inside").expect("inside file");
            std::fs::write(outside.join("secret.txt"), "secret").expect("outside file");
            Scene {
                base,
                served,
                outside,
            }
        }

        /// Fails the test unless `outside` holds exactly `secret.txt`, unchanged.
        fn outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(&self.outside)
                .expect("outside dir")
                .map(|entry| entry.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["secret.txt"], "nothing created or deleted outside");
            assert_eq!(
                std::fs::read_to_string(self.outside.join("secret.txt")).expect("secret"),
                "secret",
                "the outside file is unchanged"
            );
        }

        /// Replaces `sub/file.txt` with a symlink to the outside file.
        fn swap_file(&self) {
            let file = self.served.join("sub/file.txt");
            std::fs::remove_file(&file).expect("remove file");
            symlink(self.outside.join("secret.txt"), &file).expect("symlink file");
        }

        /// Moves `sub` to `sub.old` and puts a symlink to the outside directory in its place.
        fn swap_dir(&self) {
            let sub = self.served.join("sub");
            std::fs::rename(&sub, self.served.join("sub.old")).expect("move sub");
            symlink(&self.outside, &sub).expect("symlink dir");
        }
    }

    fn symlink_refused<T: std::fmt::Debug>(outcome: Result<T, FsError>, path: &str) {
        assert_eq!(
            outcome.expect_err("a symlink on the path must be refused"),
            FsError::Symlink { path: path.into() }
        );
    }

    async fn read_all(mut file: tokio::fs::File) -> String {
        let mut text = String::new();
        file.read_to_string(&mut text).await.expect("read");
        text
    }

    #[tokio::test]
    async fn plain_files_are_read_written_listed_and_deleted() {
        let scene = Scene::new("plain");
        let sandbox = Sandbox::new(&scene.served).await.expect("sandbox");
        let (file, len) = sandbox.open_file("sub/file.txt").await.expect("open");
        assert_eq!((read_all(file).await.as_str(), len), ("inside", 6));
        let mut upload = sandbox.upload("./sub/new.txt").await.expect("upload");
        upload.file.write_all(b"fresh").await.expect("write");
        upload.commit().await.expect("commit");
        let names: Vec<_> = sandbox
            .list("sub")
            .await
            .expect("list")
            .into_iter()
            .map(|entry| (entry.name, entry.kind, entry.size))
            .collect();
        assert_eq!(
            names,
            [
                ("file.txt".to_owned(), Kind::File, 6),
                ("new.txt".to_owned(), Kind::File, 5)
            ]
        );
        assert_eq!(sandbox.stat("").await.expect("stat root").kind, Kind::Dir);
        sandbox.delete("sub/new.txt").await.expect("delete");
        // An upload given up before its commit leaves nothing behind.
        let mut given_up = sandbox.upload("sub/gone.txt").await.expect("upload");
        given_up.file.write_all(b"half").await.expect("write");
        drop(given_up);
        let left: Vec<_> = std::fs::read_dir(scene.served.join("sub"))
            .expect("sub")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["file.txt"]);
        assert_eq!(
            sandbox.stat("sub/new.txt").await.map(|_| ()),
            Err(FsError::NotFound {
                path: "sub/new.txt".into()
            })
        );
        assert_eq!(
            sandbox.delete("sub").await,
            Err(FsError::WrongKind { path: "sub".into() })
        );
        for path in ["../outside/secret.txt", "/etc/passwd", "sub/../../outside"] {
            assert_eq!(
                sandbox.open_file(path).await.map(|_| ()),
                Err(FsError::OutsideRoot { path: path.into() })
            );
        }
        scene.outside_untouched();
    }

    #[tokio::test]
    async fn symlinks_anywhere_on_a_path_are_refused() {
        let scene = Scene::new("refused");
        symlink(
            scene.outside.join("secret.txt"),
            scene.served.join("escape"),
        )
        .expect("link");
        symlink(&scene.outside, scene.served.join("away")).expect("link");
        // Even one that stays inside: no symlink is followed.
        symlink(
            scene.served.join("sub/file.txt"),
            scene.served.join("inner"),
        )
        .expect("link");
        let sandbox = Sandbox::new(&scene.served).await.expect("sandbox");

        for path in ["escape", "away/secret.txt", "inner"] {
            symlink_refused(sandbox.open_file(path).await.map(|_| ()), path);
            symlink_refused(sandbox.upload(path).await.map(|_| ()), path);
            symlink_refused(sandbox.delete(path).await, path);
        }
        symlink_refused(
            sandbox.upload("away/new.txt").await.map(|_| ()),
            "away/new.txt",
        );
        symlink_refused(sandbox.list("away").await, "away");
        symlink_refused(sandbox.stat("away/secret.txt").await, "away/secret.txt");
        // A symlink itself is listed and stat'ed as one, not followed.
        let escape = sandbox.stat("escape").await.expect("stat link");
        assert_eq!(escape.kind, Kind::Symlink);
        let listed = sandbox.list("").await.expect("list");
        assert!(listed
            .iter()
            .any(|entry| entry.name == "away" && entry.kind == Kind::Symlink));
        scene.outside_untouched();
    }

    #[tokio::test]
    async fn a_symlink_swapped_in_after_a_check_is_refused_at_the_open() {
        let scene = Scene::new("swapped");
        let sandbox = Sandbox::new(&scene.served).await.expect("sandbox");
        // The check a client (or the old resolve-then-open server) would make first...
        assert_eq!(
            sandbox.stat("sub/file.txt").await.expect("stat").kind,
            Kind::File
        );
        // ...then the file becomes a symlink to the outside before the open.
        scene.swap_file();
        symlink_refused(
            sandbox.open_file("sub/file.txt").await.map(|_| ()),
            "sub/file.txt",
        );
        symlink_refused(sandbox.delete("sub/file.txt").await, "sub/file.txt");
        symlink_refused(
            sandbox.upload("sub/file.txt").await.map(|_| ()),
            "sub/file.txt",
        );

        // And the directory becomes one.
        assert_eq!(sandbox.stat("sub").await.expect("stat").kind, Kind::Dir);
        std::fs::remove_file(scene.served.join("sub/file.txt")).expect("remove link");
        scene.swap_dir();
        for path in ["sub/secret.txt", "sub/new.txt"] {
            symlink_refused(sandbox.open_file(path).await.map(|_| ()), path);
            symlink_refused(sandbox.upload(path).await.map(|_| ()), path);
            symlink_refused(sandbox.delete(path).await, path);
        }
        symlink_refused(sandbox.list("sub").await, "sub");
        scene.outside_untouched();
    }

    #[tokio::test]
    async fn what_was_opened_before_a_swap_is_what_is_used() {
        let scene = Scene::new("opened");
        let sandbox = Sandbox::new(&scene.served).await.expect("sandbox");
        // A download opened, an upload into `sub` begun, and an upload replacing
        // `sub/file.txt` begun...
        let (download, _) = sandbox.open_file("sub/file.txt").await.expect("open");
        let mut into_sub = sandbox.upload("sub/secret.txt").await.expect("upload");
        let mut replacing = sandbox.upload("sub/file.txt").await.expect("upload");
        // ...then the file, and then its directory, become symlinks to the outside.
        scene.swap_file();
        for upload in [&mut into_sub, &mut replacing] {
            upload.file.write_all(b"uploaded").await.expect("write");
        }
        replacing.commit().await.expect("commit");
        scene.swap_dir();
        into_sub.commit().await.expect("commit");

        assert_eq!(
            read_all(download).await,
            "inside",
            "the file opened is sent"
        );
        let old = scene.served.join("sub.old");
        // The upload replaced the symlink itself, and wrote nothing through it.
        assert_eq!(
            std::fs::read_to_string(old.join("file.txt")).expect("replaced"),
            "uploaded"
        );
        assert!(!std::fs::symlink_metadata(old.join("file.txt"))
            .expect("replaced")
            .is_symlink());
        // The upload into `sub` landed in the directory it opened, now `sub.old`.
        assert_eq!(
            std::fs::read_to_string(old.join("secret.txt")).expect("stored"),
            "uploaded"
        );
        scene.outside_untouched();
        drop(scene.base);
    }
}
