//! A file server: large transfers as streams, with progress, integrity checks, and paths kept
//! inside the served directory.
//!
//! ```text
//! cargo run --release --example files                                 # demo: 64 MiB up and down, exits
//! cargo run --example files -- server 127.0.0.1:7002 /tmp/shared      # terminal 1 (Ctrl-C stops it)
//! cargo run --example files -- client 127.0.0.1:7002 list             # terminal 2
//! cargo run --example files -- client 127.0.0.1:7002 upload ./big.iso big.iso
//! cargo run --example files -- client 127.0.0.1:7002 download big.iso ./copy.iso
//! cargo run --example files -- client 127.0.0.1:7002 delete big.iso
//! ```
//!
//! `upload` takes an `rpc::Stream` of chunks as its last argument; `download` returns one.
//! Flow control keeps at most a window of chunks in memory on either side however large the
//! file. A transfer takes as long as it takes, so the client calls both with `.no_deadline()`
//! (a call's deadline, 30 s by default, covers its whole stream).
//!
//! After each transfer both sides' checksums (FNV-1a, 64 bits: an integrity check against
//! truncation or corruption, not a defense against tampering) are compared, and the client
//! prints `OK` or `MISMATCH`. The server never leaves its directory: absolute paths and `..`
//! are refused with [`FsError::OutsideRoot`], and symlinks are never followed (a path through
//! one is refused with [`FsError::Symlink`]). It opens every path from a handle on the served
//! directory, one name at a time with `O_NOFOLLOW`, so a symlink swapped in while it works
//! cannot lead it out either. Unix only.
//!
//! This file is the streaming; beside it, `sandbox.rs` holds the path handling, `checksum.rs`
//! the checksum and `scratch.rs` the demo's temporary directory and test data.

mod checksum;
mod sandbox;
mod scratch;

use std::error::Error;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use checksum::Fnv;
use sandbox::{io_error, Sandbox};
use scratch::{generate, TempDir};

/// Bytes per chunk of a transfer.
const CHUNK: usize = 64 * 1024;

/// Size of the demo's generated file.
const DEMO_SIZE: u64 = 64 << 20;

/// The service's own errors; they travel to the client as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FsError {
    /// The path is absolute or climbs out with `..`.
    OutsideRoot {
        /// The path as the client gave it.
        path: String,
    },
    /// The path is, or passes through, a symlink: the server follows none, wherever they
    /// point.
    Symlink {
        /// The path as the client gave it.
        path: String,
    },
    /// Nothing exists at the path.
    NotFound {
        /// The path as the client gave it.
        path: String,
    },
    /// The path names something that is not a regular file (for a transfer or a delete) or
    /// not a directory (for a listing).
    WrongKind {
        /// The path as the client gave it.
        path: String,
    },
    /// The upload's stream broke before its end; nothing was stored.
    Interrupted {
        /// The path as the client gave it.
        path: String,
        /// Why the stream broke.
        reason: String,
    },
    /// Any other I/O failure on the server.
    Io {
        /// The path as the client gave it.
        path: String,
        /// The server's description of the failure.
        message: String,
    },
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::OutsideRoot { path } => write!(
                f,
                "{path:?} is outside the served directory (absolute paths and `..` are refused)"
            ),
            FsError::Symlink { path } => write!(
                f,
                "{path:?} is or passes through a symlink, and the server follows no symlinks"
            ),
            FsError::NotFound { path } => write!(f, "{path:?} does not exist"),
            FsError::WrongKind { path } => write!(f, "{path:?} is not the right kind of file"),
            FsError::Interrupted { path, reason } => {
                write!(f, "upload of {path:?} interrupted: {reason}")
            }
            FsError::Io { path, message } => write!(f, "{path:?}: {message}"),
        }
    }
}

impl Error for FsError {}

/// One directory entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's name in its directory.
    pub name: String,
    /// Size in bytes (of the link itself, for a symlink).
    pub size: u64,
    /// What it is.
    pub kind: Kind,
}

/// What a directory entry is. Symlinks are listed, not followed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (socket, device, ...).
    Other,
}

/// What one side saw of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Bytes transferred.
    pub bytes: u64,
    /// FNV-1a 64 of those bytes.
    pub checksum: u64,
}

/// A piece of a file. An [`rpc::Payload`] is one length and the bytes on the wire, like
/// `serde_bytes`, and is not copied by the framework: a received chunk is a slice of its
/// frame, and a sent one (64 KiB, above [`rpc::Payload::SPLICE_MIN`]) is written from its
/// own memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk(pub rpc::Payload);

/// An item of a download: the data, then the server's receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Piece {
    /// The next bytes of the file.
    Data(Chunk),
    /// The last item: what the server sent.
    End(Receipt),
}

/// Files in one directory on the server.
#[rpc::service]
pub trait Files {
    /// The entries of directory `dir` (`""` or `"."` for the served directory), by name.
    async fn list(&self, dir: String) -> Result<Vec<Entry>, FsError>;
    /// Stores `data` as file `path` (replacing it), once the stream has ended normally.
    async fn upload(&self, path: String, data: rpc::Stream<Chunk>) -> Result<Receipt, FsError>;
    /// What is at `path` (a symlink is reported as one, not followed), like FTP's `SIZE`.
    async fn stat(&self, path: String) -> Result<Entry, FsError>;
    /// Sends file `path`: its data, then a [`Piece::End`]; or one error.
    async fn download(&self, path: String) -> rpc::Stream<Result<Piece, FsError>>;
    /// Deletes file `path`.
    async fn delete(&self, path: String) -> Result<(), FsError>;
}

/// Reads up to one chunk, filling it unless the file ends first. Empty at the end.
async fn read_chunk(file: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; CHUNK];
    let mut filled = 0;
    while filled < CHUNK {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Where a download's stream is.
enum Sending {
    Data(tokio::fs::File, Fnv, u64),
    Done,
}

/// Serves one directory.
struct Dir {
    sandbox: Sandbox,
}

impl Dir {
    async fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Dir {
            sandbox: Sandbox::new(root).await?,
        })
    }
}

impl Files for Dir {
    async fn list(&self, dir: String) -> Result<Vec<Entry>, FsError> {
        self.sandbox.list(&dir).await
    }

    async fn upload(&self, path: String, mut data: rpc::Stream<Chunk>) -> Result<Receipt, FsError> {
        // The sandbox writes beside the target and renames at the end: readers never see half
        // a file, and a broken upload (dropped here, or with the call) leaves the old file in
        // place.
        let mut upload = self.sandbox.upload(&path).await?;
        let mut sum = Fnv::new();
        let mut bytes = 0u64;
        async {
            while let Some(chunk) = data.next().await {
                let Chunk(chunk) = chunk.map_err(|err| FsError::Interrupted {
                    path: path.clone(),
                    reason: err.to_string(),
                })?;
                sum.update(&chunk);
                bytes += chunk.len() as u64;
                upload
                    .file
                    .write_all(&chunk)
                    .await
                    .map_err(|err| io_error(&path, err))?;
            }
            upload
                .file
                .flush()
                .await
                .map_err(|err| io_error(&path, err))
        }
        .await?;
        upload.commit().await?;
        Ok(Receipt {
            bytes,
            checksum: sum.value(),
        })
    }

    async fn download(&self, path: String) -> rpc::Stream<Result<Piece, FsError>> {
        let (file, _) = match self.sandbox.open_file(&path).await {
            Ok(opened) => opened,
            Err(err) => return rpc::Stream::iter([Err(err)]),
        };
        let failed = move |err: std::io::Error| io_error(&path, err);
        rpc::Stream::new(futures::stream::unfold(
            Sending::Data(file, Fnv::new(), 0),
            move |state| {
                let failed = failed.clone();
                async move {
                    match state {
                        Sending::Data(mut file, mut sum, bytes) => {
                            match read_chunk(&mut file).await {
                                Ok(chunk) if chunk.is_empty() => {
                                    let receipt = Receipt {
                                        bytes,
                                        checksum: sum.value(),
                                    };
                                    Some((Ok(Piece::End(receipt)), Sending::Done))
                                }
                                Ok(chunk) => {
                                    sum.update(&chunk);
                                    let bytes = bytes + chunk.len() as u64;
                                    Some((
                                        Ok(Piece::Data(Chunk(chunk.into()))),
                                        Sending::Data(file, sum, bytes),
                                    ))
                                }
                                Err(err) => Some((Err(failed(err)), Sending::Done)),
                            }
                        }
                        Sending::Done => None,
                    }
                }
            },
        ))
    }

    async fn stat(&self, path: String) -> Result<Entry, FsError> {
        self.sandbox.stat(&path).await
    }

    async fn delete(&self, path: String) -> Result<(), FsError> {
        self.sandbox.delete(&path).await
    }
}

// ---- client side ----------------------------------------------------------------------------

/// A progress bar for `total` bytes; drawn on stderr, and only when it is a terminal.
fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:32}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// How a transfer went, from the client's side.
struct Transfer {
    bytes: u64,
    elapsed: Duration,
    matched: bool,
}

impl Transfer {
    fn report(&self, what: &str) {
        let secs = self.elapsed.as_secs_f64();
        let mib = self.bytes as f64 / f64::from(1 << 20);
        println!(
            "{what}: {mib:.1} MiB in {secs:.2} s = {:.0} MiB/s, checksum {}",
            mib / secs.max(1e-9),
            if self.matched { "OK" } else { "MISMATCH" }
        );
    }
}

/// Streams local file `local` to the server as `remote`.
async fn upload(
    files: &FilesClient,
    local: &Path,
    remote: &str,
) -> Result<Transfer, Box<dyn Error>> {
    let file = tokio::fs::File::open(local)
        .await
        .map_err(|err| format!("{}: {err}", local.display()))?;
    let size = file.metadata().await?.len();
    let bar = progress(size, "upload");
    // The stream reads the file chunk by chunk as flow control allows, and reports what it
    // read when it reaches the end.
    let (sent_tx, mut sent_rx) = oneshot::channel::<std::io::Result<Receipt>>();
    let chunks = futures::stream::unfold(
        Some((file, Fnv::new(), 0u64, sent_tx, bar.clone())),
        |state| async move {
            let (mut file, mut sum, bytes, sent, bar) = state?;
            match read_chunk(&mut file).await {
                Ok(chunk) if !chunk.is_empty() => {
                    sum.update(&chunk);
                    bar.inc(chunk.len() as u64);
                    let bytes = bytes + chunk.len() as u64;
                    Some((Ok(Chunk(chunk.into())), Some((file, sum, bytes, sent, bar))))
                }
                Ok(_) => {
                    let _ = sent.send(Ok(Receipt {
                        bytes,
                        checksum: sum.value(),
                    }));
                    None
                }
                Err(err) => {
                    let _ = sent.send(Err(err));
                    // Ends the stream with an error: the server discards the partial upload.
                    Some((Err(rpc::Error::Cancelled), None))
                }
            }
        },
    );
    let started = Instant::now();
    let outcome = files
        .upload(remote.into(), rpc::Stream::from_results(chunks))
        .no_deadline()
        .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    // The server's receipt means it saw the end of the stream, which the stream reports
    // before ending: the local side's receipt is there by now.
    let sent = sent_rx.try_recv().ok();
    if let Some(Err(err)) = sent {
        // A local read error explains a failed upload better than the server's reply does.
        return Err(format!("reading {}: {err}", local.display()).into());
    }
    let received = outcome??;
    let sent = sent.ok_or("the server replied before the end of the file")??;
    Ok(Transfer {
        bytes: received.bytes,
        elapsed,
        matched: sent == received,
    })
}

/// Fetches `remote` from the server into local file `local`.
async fn download(
    files: &FilesClient,
    remote: &str,
    local: &Path,
) -> Result<Transfer, Box<dyn Error>> {
    let started = Instant::now();
    // The size is only for the progress bar: the receipt at the end is what counts.
    let size = files.stat(remote.into()).await??.size;
    let mut pieces = files.download(remote.into()).no_deadline().await?;
    let bar = progress(size, "download");
    let mut out = tokio::fs::File::create(local)
        .await
        .map_err(|err| format!("{}: {err}", local.display()))?;
    let mut sum = Fnv::new();
    let mut bytes = 0u64;
    let sent = loop {
        match pieces.next().await {
            Some(Ok(Ok(Piece::Data(Chunk(chunk))))) => {
                sum.update(&chunk);
                bytes += chunk.len() as u64;
                bar.inc(chunk.len() as u64);
                out.write_all(&chunk).await?;
            }
            Some(Ok(Ok(Piece::End(receipt)))) => break receipt,
            Some(Ok(Err(err))) => return Err(err.into()),
            Some(Err(err)) => return Err(err.into()),
            None => return Err("the download ended without the server's receipt".into()),
        }
    };
    out.flush().await?;
    bar.finish_and_clear();
    let received = Receipt {
        bytes,
        checksum: sum.value(),
    };
    Ok(Transfer {
        bytes,
        elapsed: started.elapsed(),
        matched: sent == received,
    })
}

fn print_listing(entries: &[Entry]) {
    for entry in entries {
        let kind = match entry.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "link",
            Kind::Other => "other",
        };
        println!("  {kind:<5} {:>12}  {}", entry.size, entry.name);
    }
}

const USAGE: &str =
    "usage: files [server ADDR DIR | client ADDR (list [DIR] | upload LOCAL REMOTE | \
                     download REMOTE LOCAL | delete REMOTE)]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Display, not Debug: the server's refusals are meant to be read.
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => demo().await,
        ["server", addr, dir] => serve(addr, dir).await,
        ["client", addr, command @ ..] => {
            let files = FilesClient::connect(*addr).await?;
            match command {
                ["list"] => print_listing(&files.list(String::new()).await??),
                ["list", dir] => print_listing(&files.list((*dir).into()).await??),
                ["upload", local, remote] => {
                    let transfer = upload(&files, Path::new(local), remote).await?;
                    transfer.report(&format!("upload {local} -> {remote}"));
                    if !transfer.matched {
                        return Err("checksum mismatch".into());
                    }
                }
                ["download", remote, local] => {
                    let transfer = download(&files, remote, Path::new(local)).await?;
                    transfer.report(&format!("download {remote} -> {local}"));
                    if !transfer.matched {
                        return Err("checksum mismatch".into());
                    }
                }
                ["delete", remote] => {
                    files.delete((*remote).into()).await??;
                    println!("deleted {remote}");
                }
                _ => return Err(USAGE.into()),
            }
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

async fn serve(addr: &str, dir: &str) -> Result<(), Box<dyn Error>> {
    let served = Dir::new(dir).await?;
    println!(
        "serving {} on {addr}; Ctrl-C to stop",
        served.sandbox.root().display()
    );
    let server = rpc::Server::builder()
        .serve(served.into_service())
        .bind(addr)
        .await?;
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await;
    Ok(())
}

async fn demo() -> Result<(), Box<dyn Error>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let base = TempDir(
        std::env::temp_dir().join(format!("rpc-files-demo-{}-{nanos}", std::process::id())),
    );
    let (served, local, outside) = (
        base.0.join("served"),
        base.0.join("local"),
        base.0.join("outside"),
    );
    for dir in [&served, &local, &outside] {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::write(outside.join("secret.txt"), "not for clients\n").await?;

    let original = local.join("big.bin");
    generate(&original, DEMO_SIZE).await?;
    println!(
        "generated {} MiB in {}",
        DEMO_SIZE >> 20,
        original.display()
    );

    let server = rpc::Server::builder()
        .serve(Dir::new(&served).await?.into_service())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().ok_or("server is not on TCP")?;
    let handle = server.handle();
    let running = tokio::spawn(server.run());
    println!("serving {} on {addr}", served.display());

    let files = FilesClient::connect(addr).await?;
    upload(&files, &original, "big.bin")
        .await?
        .report("upload   big.bin");
    let copy = local.join("big.copy");
    download(&files, "big.bin", &copy)
        .await?
        .report("download big.bin");
    let identical = tokio::fs::read(&original).await? == tokio::fs::read(&copy).await?;
    println!("local copy identical to the original: {identical}");

    // A symlink inside the served directory that points out of it.
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.txt"), served.join("escape"))?;
    println!("listing:");
    print_listing(&files.list(String::new()).await??);

    println!("paths outside the served directory, and symlinks, are refused:");
    let outcomes = [
        (
            "download ../outside/secret.txt",
            files
                .download("../outside/secret.txt".into())
                .await?
                .next()
                .await,
        ),
        (
            "download /etc/passwd",
            files.download("/etc/passwd".into()).await?.next().await,
        ),
        (
            "download escape (symlink)",
            files.download("escape".into()).await?.next().await,
        ),
    ];
    for (what, first) in outcomes {
        match first {
            Some(Ok(Err(err))) => println!("  {what}: {err}"),
            other => println!("  {what}: unexpectedly {other:?}"),
        }
    }
    let refused = files
        .upload(
            "../escape".into(),
            rpc::Stream::iter([Chunk(rpc::Payload::from_static(b"x"))]),
        )
        .await?;
    println!(
        "  upload ../escape: {}",
        refused
            .err()
            .map_or("unexpectedly stored".into(), |e| e.to_string())
    );
    println!(
        "  delete escape (symlink): {}",
        describe(files.delete("escape".into()).await?)
    );

    println!(
        "delete big.bin: {}",
        describe(files.delete("big.bin".into()).await?)
    );
    handle.shutdown();
    running.await?;
    drop(base);
    println!("server stopped, temporary directory removed");
    Ok(())
}

fn describe(outcome: Result<(), FsError>) -> String {
    match outcome {
        Ok(()) => "done".into(),
        Err(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The service over TCP: a transfer each way, a listing, a delete, and a symlink refused
    /// for every method, with the refusal arriving as the call's own typed error.
    #[tokio::test]
    async fn the_service_transfers_files_and_follows_no_symlink() {
        let base =
            TempDir(std::env::temp_dir().join(format!("rpc-files-service-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&base.0);
        let (served, outside) = (base.0.join("served"), base.0.join("outside"));
        for dir in [&served, &outside] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        std::fs::write(outside.join("secret.txt"), "secret").expect("secret");
        symlink(outside.join("secret.txt"), served.join("escape")).expect("link");

        let server = rpc::Server::builder()
            .serve(Dir::new(&served).await.expect("served").into_service())
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = server.local_addr().expect("tcp address");
        let handle = server.handle();
        let running = tokio::spawn(server.run());
        let files = FilesClient::connect(addr).await.expect("connect");

        // Three chunks and a bit, through the streaming upload and download.
        let data: Vec<u8> = (0..3 * CHUNK + 100).map(|i| (i % 251) as u8).collect();
        let receipt = files
            .upload(
                "data.bin".into(),
                rpc::Stream::iter(
                    data.chunks(CHUNK)
                        .map(|c| Chunk(c.to_vec().into()))
                        .collect::<Vec<_>>(),
                ),
            )
            .await
            .expect("call")
            .expect("upload");
        assert_eq!(receipt.bytes, data.len() as u64);
        let mut pieces = files.download("data.bin".into()).await.expect("call");
        let mut received = Vec::new();
        while let Some(piece) = pieces.next().await {
            match piece.expect("item").expect("piece") {
                Piece::Data(Chunk(chunk)) => received.extend_from_slice(&chunk),
                Piece::End(end) => assert_eq!(end, receipt, "both sides saw the same bytes"),
            }
        }
        assert!(received == data, "the download is what was uploaded");
        let names: Vec<_> = files
            .list(String::new())
            .await
            .expect("call")
            .expect("list")
            .into_iter()
            .map(|entry| (entry.name, entry.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("data.bin".to_owned(), Kind::File),
                ("escape".to_owned(), Kind::Symlink)
            ]
        );

        let refused = || FsError::Symlink {
            path: "escape".into(),
        };
        let first = files
            .download("escape".into())
            .await
            .expect("call")
            .next()
            .await;
        assert_eq!(
            first.map(|item| item.expect("item").err()),
            Some(Some(refused()))
        );
        let upload = files
            .upload(
                "escape".into(),
                rpc::Stream::iter([Chunk(rpc::Payload::from_static(b"x"))]),
            )
            .await
            .expect("call");
        assert_eq!(upload, Err(refused()));
        assert_eq!(
            files.delete("escape".into()).await.expect("call"),
            Err(refused())
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("secret.txt")).expect("secret"),
            "secret"
        );
        files
            .delete("data.bin".into())
            .await
            .expect("call")
            .expect("delete");
        assert!(!served.join("data.bin").exists());

        handle.shutdown();
        running.await.expect("server task");
    }
}
