//! Mirroring: objects read, written and copied by their path relative to
//! the prefix, hashed on the way so a damaged source is never committed.

use futures::StreamExt;

use super::RepoError;
use super::store::Repository;

impl Repository {
    /// Reads a small object whole (manifests, pins).
    pub async fn read_small(&self, relative: &str) -> Result<Vec<u8>, RepoError> {
        let path = self.absolute(relative);
        self.op()
            .read(&path)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.storage_err("cannot read", &path, e))
    }

    /// Writes a small object whole (a mirrored manifest or pin).
    pub async fn write_small(&self, relative: &str, bytes: Vec<u8>) -> Result<(), RepoError> {
        let path = self.absolute(relative);
        self.op()
            .write(&path, bytes)
            .await
            .map(|_| ())
            .map_err(|e| self.storage_err("cannot write", &path, e))
    }

    pub async fn delete_object(&self, relative: &str) -> Result<(), RepoError> {
        let path = self.absolute(relative);
        self.op()
            .delete(&path)
            .await
            .map_err(|e| self.storage_err("cannot delete", &path, e))
    }

    /// SHA-256 and size of a stored object, streamed.
    pub async fn hash_object(&self, relative: &str) -> Result<(String, u64), RepoError> {
        use sha2::Digest;
        let path = self.absolute(relative);
        let mut stream = self.read_stream(&path).await?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// Streams `relative` to the same relative path in `dest`, hashing it on
    /// the way. With `expected` `(sha256, size)`, a different object is not
    /// committed: the write is aborted. Returns the hash and size copied.
    pub async fn copy_to(
        &self,
        relative: &str,
        dest: &Repository,
        expected: Option<(&str, u64)>,
    ) -> Result<(String, u64), RepoError> {
        use sha2::Digest;
        let from = self.absolute(relative);
        let to = dest.absolute(relative);
        let mut stream = self.read_stream(&from).await?;
        let mut writer = dest.writer(&to).await?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        // The destination's own part size on multipart services (within a
        // bandwidth cap's burst); 1 MiB writes where it streams.
        let part_size = if dest.writes_are_parts() {
            dest.part_size.min(dest.max_part_size)
        } else {
            1 << 20
        };
        let mut part = bytes::BytesMut::with_capacity(part_size);
        let copied: Result<(), RepoError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                hasher.update(&chunk);
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let take = (part_size - part.len()).min(rest.len());
                    part.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if part.len() == part_size {
                        let full =
                            std::mem::replace(&mut part, bytes::BytesMut::with_capacity(part_size));
                        writer
                            .write(full.freeze())
                            .await
                            .map_err(|e| dest.storage_err("cannot write", &to, e))?;
                    }
                }
            }
            if !part.is_empty() {
                writer
                    .write(part.split().freeze())
                    .await
                    .map_err(|e| dest.storage_err("cannot write", &to, e))?;
            }
            Ok(())
        }
        .await;
        let sha = hex::encode(hasher.finalize());
        let mismatch = expected.filter(|(want, want_size)| *want != sha || *want_size != size);
        if copied.is_err() || mismatch.is_some() {
            let _ = writer.abort().await;
            copied?;
            let (want, want_size) = mismatch.unwrap_or_default();
            return Err(RepoError::Storage {
                repo: self.name.clone(),
                action: "refusing to copy",
                path: from,
                detail: format!(
                    "its SHA-256 is {sha} ({size} bytes) but the manifest says {want} ({want_size} bytes): the source object is damaged"
                ),
                retryable: false,
            });
        }
        writer
            .close()
            .await
            .map_err(|e| dest.storage_err("cannot finish", &to, e))?;
        Ok((sha, size))
    }
}
