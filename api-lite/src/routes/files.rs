//! Files: create (presigned upload), confirm (enqueue via the outbox), show, list,
//! delete and reprocess. Every query is scoped by the caller's org.
//!
//! The presigned PUT signs the declared content type and length, so S3 takes no other
//! object; confirm checks the size again. An upload not confirmed within the presign
//! expiry (plus a grace) is removed by the sweeper.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::aws::describe_sdk_error;
use shared::files::{self, FileStatus, NewFile};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Dependency};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Every column a file view shows, in one place for all queries.
const FILE_COLUMNS: &str = "id, name, content_type, size_bytes, status, stage, attempts, error_class, error_code, error_message, \
     detected_type, pages, chunk_count, embedding_model, extraction_engine, extractor_version, stage_durations_ms, \
     created_at, updated_at, queued_at, started_at, finished_at";

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FileView {
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub status: String,
    pub stage: Option<String>,
    pub attempts: i32,
    pub error_class: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub detected_type: Option<String>,
    pub pages: Option<i32>,
    pub chunk_count: Option<i32>,
    pub embedding_model: Option<String>,
    /// What read the text: `pdfium`, `pdf-extract`, `docx`, `html` or `text`.
    pub extraction_engine: Option<String>,
    pub extractor_version: Option<i32>,
    pub stage_durations_ms: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

async fn load_file(state: &AppState, caller: &Caller, id: Uuid) -> Result<FileView, ApiError> {
    let statement = format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND org_id = $2");
    sqlx::query_as(&statement)
        .bind(id)
        .bind(caller.org_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("file"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFile {
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedFile {
    pub id: Uuid,
    pub status: String,
    pub upload: Upload,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Upload {
    pub method: &'static str,
    pub url: String,
    /// Send these headers with the PUT; the signature covers them.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub headers: serde_json::Map<String, Value>,
    pub expires_at: DateTime<Utc>,
}

/// Registers a file and returns a presigned PUT for its bytes.
#[utoipa::path(post, path = "/v1/files", tag = "files", request_body = CreateFile,
    responses((status = 201, description = "Registered; PUT the bytes to `upload.url` with `upload.headers`, then confirm", body = CreatedFile),
              (status = 413, description = "Larger than the limit", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateFile>,
) -> Result<(StatusCode, ApiJson<CreatedFile>), ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name must be 1 to 255 characters without control characters",
        ));
    }
    let content_type = request.content_type.trim().to_ascii_lowercase();
    let base_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if !state
        .settings
        .api
        .allowed_content_types
        .iter()
        .any(|allowed| allowed == &base_type)
    {
        return Err(ApiError::Invalid {
            code: "unsupported_type",
            message: format!(
                "content type {base_type:?} is not accepted; accepted: {}",
                state.settings.api.allowed_content_types.join(", ")
            ),
        });
    }
    if request.size > state.settings.api.max_file_bytes {
        return Err(ApiError::TooLarge(format!(
            "size {} bytes exceeds the limit of {} bytes",
            request.size, state.settings.api.max_file_bytes
        )));
    }
    let id = Uuid::now_v7();
    let object_key = format!("orgs/{}/files/{id}", caller.org_id);
    let mut transaction = state.pool.begin().await?;
    files::create(
        &mut transaction,
        &NewFile {
            id,
            org_id: caller.org_id,
            name,
            content_type: &base_type,
            size_bytes: request.size as i64,
            object_key: &object_key,
        },
    )
    .await?;
    transaction.commit().await?;
    let expiry = Duration::from_secs(state.settings.storage.presign_expiry_secs);
    let presigning =
        PresigningConfig::expires_in(expiry).map_err(|error| ApiError::Internal(error.into()))?;
    let presigned = state
        .aws
        .s3
        .put_object()
        .bucket(&state.settings.storage.bucket)
        .key(&object_key)
        .content_type(&base_type)
        // Signed, so S3 refuses a PUT of any other length than the one declared.
        .content_length(request.size as i64)
        .presigned(presigning)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("presign failed: {error}")))?;
    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), Value::String(base_type));
    headers.insert(
        "content-length".into(),
        Value::String(request.size.to_string()),
    );
    let expires_at = Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_default();
    tracing::info!(file_id = %id, "file created, awaiting upload");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedFile {
            id,
            status: FileStatus::AwaitingUpload.as_str().into(),
            upload: Upload {
                method: "PUT",
                url: presigned.uri().to_string(),
                headers,
                expires_at,
            },
        }),
    ))
}

/// Confirms the upload and queues the file for processing.
#[utoipa::path(post, path = "/v1/files/{id}/confirm", tag = "files", params(("id" = Uuid, Path, description = "The file's id")),
    responses((status = 202, description = "Queued", body = FileView),
              (status = 200, description = "Confirmed already", body = FileView),
              (status = 409, description = "`upload_missing` or `size_mismatch`", body = crate::error::ErrorBody)))]
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<FileView>), ApiError> {
    let file = load_file(&state, &caller, id).await?;
    if file.status != FileStatus::AwaitingUpload.as_str() {
        // Confirming twice is harmless: the file is already on its way.
        return Ok((StatusCode::OK, ApiJson(file)));
    }
    let object_key = format!("orgs/{}/files/{id}", caller.org_id);
    let head = state
        .aws
        .s3
        .head_object()
        .bucket(&state.settings.storage.bucket)
        .key(&object_key)
        .send()
        .await;
    let head = match head {
        Ok(head) => head,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_not_found()) =>
        {
            return Err(ApiError::conflict(
                "upload_missing",
                "no object was uploaded for this file; PUT it to the upload URL first",
            ));
        }
        Err(error) => {
            return Err(ApiError::unavailable(
                Dependency::Storage,
                format!("s3 head_object: {}", describe_sdk_error(&error)),
            ));
        }
    };
    let uploaded = head.content_length.unwrap_or(-1);
    if uploaded != file.size_bytes {
        return Err(ApiError::conflict(
            "size_mismatch",
            format!(
                "the uploaded object has {uploaded} bytes, but the file was declared with {}",
                file.size_bytes
            ),
        ));
    }
    let mut transaction = state.pool.begin().await?;
    // False when a concurrent confirm got there first: the file is on its way either way.
    files::queue_uploaded(&mut transaction, id, caller.org_id).await?;
    transaction.commit().await?;
    tracing::info!(file_id = %id, "file confirmed and enqueued");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_file(&state, &caller, id).await?),
    ))
}

/// A file: its status, stage, error, what processing learned, and a presigned download.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", params(("id" = Uuid, Path, description = "The file's id")),
    responses((status = 200, description = "The file", body = FileDetail)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<FileDetail>, ApiError> {
    let file = load_file(&state, &caller, id).await?;
    // Until the upload is confirmed there may be no object to download.
    let download = if file.status == FileStatus::AwaitingUpload.as_str() {
        None
    } else {
        Some(presign_download(&state, &caller, &file).await?)
    };
    Ok(ApiJson(FileDetail { file, download }))
}

/// A file with a short-lived link to its original bytes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileDetail {
    #[serde(flatten)]
    pub file: FileView,
    /// A presigned GET of the original, for the caller's org only; absent while the
    /// file awaits its upload.
    pub download: Option<Download>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Download {
    pub method: &'static str,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

async fn presign_download(
    state: &AppState,
    caller: &Caller,
    file: &FileView,
) -> Result<Download, ApiError> {
    let expiry = Duration::from_secs(state.settings.storage.download_expiry_secs.max(1));
    let presigning =
        PresigningConfig::expires_in(expiry).map_err(|error| ApiError::Internal(error.into()))?;
    // The key is built from the caller's org: a token of another org cannot name it.
    let object_key = format!("orgs/{}/files/{}", caller.org_id, file.id);
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file.name.replace(['"', '\\'], "_")
    );
    let presigned = state
        .aws
        .s3
        .get_object()
        .bucket(&state.settings.storage.bucket)
        .key(&object_key)
        .response_content_type(&file.content_type)
        .response_content_disposition(disposition)
        .presigned(presigning)
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("presign failed: {error}")))?;
    Ok(Download {
        method: "GET",
        url: presigned.uri().to_string(),
        expires_at: Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_default(),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FilePage {
    pub files: Vec<FileView>,
    pub next_cursor: Option<Uuid>,
}

/// The caller's files, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(super::ListQuery),
    responses((status = 200, description = "A page of files", body = FilePage)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<super::ListQuery>,
) -> Result<ApiJson<FilePage>, ApiError> {
    let limit = super::list_limit(query.limit, query.status.as_deref(), &FileStatus::names())?;
    // Ids are UUIDv7, so id order is creation order: a stable keyset cursor.
    let statement = format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE org_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4"
    );
    let mut files: Vec<FileView> = sqlx::query_as(&statement)
        .bind(caller.org_id)
        .bind(&query.status)
        .bind(query.cursor)
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    let next_cursor = super::next_page(&mut files, limit, |file| file.id);
    Ok(ApiJson(FilePage { files, next_cursor }))
}

/// Deletes the file, its object and its chunks.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", params(("id" = Uuid, Path, description = "The file's id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let object_key: Option<String> =
        sqlx::query_scalar("SELECT object_key FROM files WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(caller.org_id)
            .fetch_optional(&state.pool)
            .await?;
    let object_key = object_key.ok_or(ApiError::NotFound("file"))?;
    // The object first: if that fails the row stays, and the caller can try again.
    state
        .aws
        .s3
        .delete_object()
        .bucket(&state.settings.storage.bucket)
        .key(&object_key)
        .send()
        .await
        .map_err(|error| {
            ApiError::unavailable(
                Dependency::Storage,
                format!("s3 delete_object: {}", describe_sdk_error(&error)),
            )
        })?;
    // Chunks go with the row; a worker still on it loses its fence.
    let mut connection = state.pool.acquire().await?;
    files::delete(&mut connection, id, caller.org_id).await?;
    tracing::info!(file_id = %id, "file deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Processes a finished file again (its chunks keep serving until the new ones are stored).
#[utoipa::path(post, path = "/v1/files/{id}/reprocess", tag = "files", params(("id" = Uuid, Path, description = "The file's id")),
    responses((status = 202, description = "Queued again", body = FileView),
              (status = 409, description = "`not_reprocessable`: the file is not finished", body = crate::error::ErrorBody)))]
pub async fn reprocess(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<FileView>), ApiError> {
    let file = load_file(&state, &caller, id).await?;
    let reprocessable = FileStatus::from_name(&file.status)
        .is_some_and(|status| FileStatus::REPROCESSABLE.contains(&status));
    if !reprocessable {
        return Err(ApiError::conflict(
            "not_reprocessable",
            format!("a file in status {} cannot be reprocessed now", file.status),
        ));
    }
    let mut transaction = state.pool.begin().await?;
    if !files::reprocess(&mut transaction, id, caller.org_id, &caller.subject).await? {
        return Err(ApiError::conflict(
            "not_reprocessable",
            "the file changed status; try again",
        ));
    }
    transaction.commit().await?;
    tracing::info!(file_id = %id, "file reprocess enqueued");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_file(&state, &caller, id).await?),
    ))
}
