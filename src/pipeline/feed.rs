//! Streams what an in-process async producer sends (a replication
//! session's COPY stream) into one repository object: producer → bounded
//! channel → encode (blocking thread) → upload. The object is committed
//! only when the producer ends without error; otherwise it is aborted.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::Stored;
use super::upload::{
    PipelineError, QUEUE, Target, Upload, UploadOutcome, codec_chain, upload_encoded,
};

/// Why a fed object was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FeedError<E> {
    /// The producer failed; the object was aborted.
    #[error(transparent)]
    Producer(E),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// The sending end handed to a producer: its chunks go to the encoder,
/// at most [`QUEUE`] in flight (the producer waits when storage is slow).
pub type Feed = mpsc::Sender<Bytes>;

/// Runs `produce` (given the channel's sending end) beside the encoder and
/// the upload of `upload.path`; returns the outcome and what `produce`
/// returned.
pub async fn upload_fed<T, E, F>(
    produce: impl FnOnce(Feed) -> F,
    upload: Upload<'_>,
    cancel: &CancellationToken,
) -> Result<(UploadOutcome, T), FeedError<E>>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let Upload {
        tool,
        repo,
        path,
        encode,
        limits,
        progress,
    } = upload;
    let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(QUEUE);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(QUEUE);
    let encoder = {
        let encode = encode.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Stored)> {
            use std::io::Write;
            let mut chain = codec_chain(out_tx, &encode)?;
            let mut raw = 0u64;
            let mut raw_rx = raw_rx;
            while let Some(chunk) = raw_rx.blocking_recv() {
                chain.write_all(&chunk)?;
                raw += chunk.len() as u64;
                progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok((raw, chain.finish()?))
        })
    };
    // The producer's own error is kept here; the upload only learns that
    // the stream must not be committed.
    let failed = std::sync::Mutex::new(None);
    let produced = std::sync::Mutex::new(None);
    let encoded = async {
        match produce(raw_tx).await {
            Ok(value) => *produced.lock().unwrap_or_else(|p| p.into_inner()) = Some(value),
            Err(e) => {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Err(PipelineError::Encode(format!("{tool} failed")));
            }
        }
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let encoded = encoder
            .await
            .map_err(|e| PipelineError::Encode(format!("{tool}: {e}")))?;
        encoded.map_err(|e| PipelineError::Encode(e.to_string()))
    };
    let target = Target { repo, path, limits };
    let outcome = upload_encoded(out_rx, encoded, target, cancel).await;
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(FeedError::Producer(e));
    }
    let outcome = outcome?;
    let value = produced
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| PipelineError::Encode(format!("{tool} produced nothing")))?;
    Ok((outcome, value))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::*;
    use crate::config::Compression;
    use crate::pipeline::limits::UploadLimits;
    use crate::pipeline::upload::EncodeSpec;

    use crate::repo::fs_for_tests as fs_repo;

    fn spec() -> EncodeSpec {
        EncodeSpec {
            compression: Compression::None,
            level: 0,
            workers: 1,
            zstd_job_size: 1 << 20,
            recipients: vec![],
        }
    }

    /// Sends `chunks` of 64 KiB, then ends as `outcome` says.
    async fn produce(
        feed: Feed,
        chunks: usize,
        outcome: Result<u32, &'static str>,
    ) -> Result<u32, &'static str> {
        for _ in 0..chunks {
            feed.send(Bytes::from(vec![7u8; 64 << 10])).await.unwrap();
        }
        outcome
    }

    #[tokio::test]
    async fn a_producer_that_ends_well_commits_and_one_that_fails_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let encode = spec();
        let cancel = CancellationToken::new();
        let upload = |path: &'static str| Upload {
            tool: "test",
            repo: &repo,
            path,
            encode: &encode,
            limits: UploadLimits::for_repo(&repo, Duration::from_secs(5)),
            progress: std::sync::Arc::new(AtomicU64::new(0)),
        };
        let (outcome, value) = upload_fed(|feed| produce(feed, 20, Ok(9)), upload("good"), &cancel)
            .await
            .unwrap();
        assert_eq!((outcome.raw_bytes, value), (20 << 16, 9));
        assert_eq!(
            std::fs::metadata(dir.path().join("good")).unwrap().len(),
            20 << 16
        );

        let failed = upload_fed(|feed| produce(feed, 20, Err("cut")), upload("bad"), &cancel).await;
        assert!(
            matches!(failed, Err(FeedError::Producer("cut"))),
            "{failed:?}"
        );
        assert!(
            !dir.path().join("bad").exists(),
            "a failed stream was committed"
        );
    }

    #[tokio::test]
    async fn progress_counts_every_object_of_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let encode = spec();
        let cancel = CancellationToken::new();
        let progress = std::sync::Arc::new(AtomicU64::new(0));
        for (path, chunks) in [("base.tar", 20), ("backup_manifest", 2)] {
            let upload = Upload {
                tool: "test",
                repo: &repo,
                path,
                encode: &encode,
                limits: UploadLimits::for_repo(&repo, Duration::from_secs(5)),
                progress: std::sync::Arc::clone(&progress),
            };
            upload_fed(|feed| produce(feed, chunks, Ok(0)), upload, &cancel)
                .await
                .unwrap();
        }
        // A second, smaller object must not take the run's count back.
        assert_eq!(progress.load(Ordering::Relaxed), 22 << 16);
    }
}
