//! Scaffolding for the demo: a temporary directory and a file of test data.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// Bytes generated per write.
const BLOCK: usize = 256 * 1024;

/// Removes the demo's directory however the demo ends.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `size` deterministic pseudo-random bytes (xorshift64) to `path`.
pub(crate) async fn generate(path: &Path, size: u64) -> std::io::Result<()> {
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(path).await?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = Vec::with_capacity(BLOCK);
    let mut written = 0;
    while written < size {
        block.clear();
        while block.len() < BLOCK {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            block.extend_from_slice(&state.to_le_bytes());
        }
        let take = block
            .len()
            .min(usize::try_from(size - written).unwrap_or(usize::MAX));
        out.write_all(&block[..take]).await?;
        written += take as u64;
    }
    out.flush().await
}
