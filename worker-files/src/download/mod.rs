//! Streams an S3 object to a spool file with a size cap, hashing it on the way.

use std::path::Path;

use aws_sdk_s3::Client;
use sha2::{Digest, Sha256};
use shared::error::JobError;
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

/// A downloaded object: the spool file (deleted on drop), its size and sha256.
pub struct Downloaded {
    pub file: NamedTempFile,
    pub size: u64,
    pub sha256: String,
}

pub async fn download(
    s3: &Client,
    bucket: &str,
    key: &str,
    max_bytes: u64,
    spool_dir: &Path,
) -> Result<Downloaded, JobError> {
    let response = s3.get_object().bucket(bucket).key(key).send().await;
    let response = match response {
        Ok(response) => response,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_no_such_key()) =>
        {
            return Err(JobError::permanent(
                "object_missing",
                format!("the object {key} is gone from bucket {bucket}"),
            ));
        }
        Err(error) => {
            return Err(JobError::transient(
                "s3_unavailable",
                format!(
                    "get_object {key}: {}",
                    shared::aws::describe_sdk_error(&error)
                ),
            ));
        }
    };
    if let Some(length) = response.content_length
        && length as u64 > max_bytes
    {
        return Err(JobError::permanent(
            "too_large",
            format!("the file has {length} bytes; the limit is {max_bytes}"),
        ));
    }
    let spool = NamedTempFile::new_in(spool_dir).map_err(|error| {
        JobError::transient("spool", format!("cannot create a spool file: {error}"))
    })?;
    let mut sink = tokio::fs::File::from_std(
        spool
            .reopen()
            .map_err(|error| JobError::transient("spool", error.to_string()))?,
    );
    let mut body = response.body;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(bytes) = body
        .try_next()
        .await
        .map_err(|error| JobError::transient("s3_unavailable", format!("reading {key}: {error}")))?
    {
        size += bytes.len() as u64;
        // Enforced while streaming too: the object may not have declared its length.
        if size > max_bytes {
            return Err(JobError::permanent(
                "too_large",
                format!("the file exceeds the limit of {max_bytes} bytes"),
            ));
        }
        hasher.update(&bytes);
        sink.write_all(&bytes).await.map_err(|error| {
            JobError::transient("spool", format!("writing the spool file: {error}"))
        })?;
    }
    sink.flush()
        .await
        .map_err(|error| JobError::transient("spool", error.to_string()))?;
    Ok(Downloaded {
        file: spool,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}
