//! Files: create (presigned upload), confirm (enqueue via the outbox), show, list (with
//! the same filters as search), update metadata, delete and reprocess. Every query is
//! scoped by the caller's org.
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
use shared::file_filter::{FileFilter, FilterInput};
use shared::files::{self, FileStatus, NewFile};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Dependency};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Every column a file view shows, in one place for all queries.
const FILE_COLUMNS: &str = "id, name, content_type, size_bytes, status, stage, attempts, error_class, error_code, error_message, \
     detected_type, pages, chunk_count, embedding_model, extraction_engine, extractor_version, stage_durations_ms, \
     metadata, created_at, updated_at, queued_at, started_at, finished_at";

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
    /// The user's metadata (an object; `{}` when none was given).
    pub metadata: Value,
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
    /// A JSON object of the user's own, within `shared::metadata`'s limits.
    pub metadata: Option<Value>,
}

fn checked_metadata(metadata: Value) -> Result<Value, ApiError> {
    shared::metadata::validate(metadata)
        .map_err(|error| ApiError::bad_request("invalid_metadata", error.to_string()))
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
    let metadata = checked_metadata(
        request
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
    )?;
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
            metadata: &metadata,
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

/// `GET /v1/files`: the keyset-paged list and the filters search takes. Lists go in a
/// query string as comma-separated values, the metadata filter as a JSON object.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileListQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    pub file_ids: Option<String>,
    pub content_type: Option<String>,
    pub name_prefix: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub metadata: Option<String>,
}

impl FileListQuery {
    fn filter(&self) -> Result<FileFilter, ApiError> {
        let invalid = |message: String| ApiError::bad_request("invalid_filter", message);
        let file_ids = match &self.file_ids {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|id| id.trim().parse::<Uuid>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| invalid("file_ids must be comma-separated UUIDs".into()))?,
            ),
        };
        let metadata = match &self.metadata {
            None => None,
            Some(json) => Some(
                serde_json::from_str::<Value>(json)
                    .map_err(|error| invalid(format!("metadata must be a JSON object: {error}")))?,
            ),
        };
        FileFilter::try_from(FilterInput {
            file_ids,
            content_types: self
                .content_type
                .as_ref()
                .map(|list| list.split(',').map(str::to_string).collect()),
            name_prefix: self.name_prefix.clone(),
            created_after: self.created_after,
            created_before: self.created_before,
            metadata,
        })
        .map_err(|error| invalid(error.to_string()))
    }
}

/// The caller's files, newest first, a page at a time, with the filters search takes.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(FileListQuery),
    responses((status = 200, description = "A page of files", body = FilePage)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<FileListQuery>,
) -> Result<ApiJson<FilePage>, ApiError> {
    let limit = super::list_limit(query.limit, query.status.as_deref(), &FileStatus::names())?;
    let filter = query.filter()?;
    let mut statement = sqlx::QueryBuilder::new(format!(
        "SELECT {FILE_COLUMNS} FROM files f WHERE f.org_id = "
    ));
    statement.push_bind(caller.org_id);
    if let Some(status) = &query.status {
        statement.push(" AND f.status = ").push_bind(status.clone());
    }
    // Ids are UUIDv7, so id order is creation order: a stable keyset cursor.
    if let Some(cursor) = query.cursor {
        statement.push(" AND f.id < ").push_bind(cursor);
    }
    filter.push_conditions(&mut statement);
    statement
        .push(" ORDER BY f.id DESC LIMIT ")
        .push_bind(limit + 1);
    let mut files: Vec<FileView> = statement.build_query_as().fetch_all(&state.pool).await?;
    let next_cursor = super::next_page(&mut files, limit, |file| file.id);
    Ok(ApiJson(FilePage { files, next_cursor }))
}

/// `PATCH /v1/files/{id}` `{"metadata": {...}}`: a JSON merge patch (RFC 7396) of the
/// file's metadata (`null` removes a key; `"metadata": null` clears it all). The result
/// must pass the same limits as at create time.
#[utoipa::path(patch, path = "/v1/files/{id}", tag = "files", params(("id" = Uuid, Path, description = "The file's id")),
    request_body(content = Object, description = "`{\"metadata\": {...}}`: a JSON merge patch of the metadata, or `null` to clear it"),
    responses((status = 200, description = "The file with its new metadata", body = FileView)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<serde_json::Map<String, Value>>,
) -> Result<ApiJson<FileView>, ApiError> {
    if let Some(unknown) = request.keys().find(|key| key.as_str() != "metadata") {
        return Err(ApiError::invalid(format!(
            "unknown field {unknown:?}: only metadata can be changed"
        )));
    }
    let Some(patch) = request.get("metadata") else {
        return Err(ApiError::invalid(
            "nothing to change: send {\"metadata\": {...}}",
        ));
    };
    if !(patch.is_object() || patch.is_null()) {
        return Err(ApiError::bad_request(
            "invalid_metadata",
            "metadata must be a JSON object (a merge patch) or null",
        ));
    }
    let mut transaction = state.pool.begin().await?;
    // The row lock makes two concurrent patches apply one after the other.
    let current: Option<Value> =
        sqlx::query_scalar("SELECT metadata FROM files WHERE id = $1 AND org_id = $2 FOR UPDATE")
            .bind(id)
            .bind(caller.org_id)
            .fetch_optional(&mut *transaction)
            .await?;
    let mut metadata = current.ok_or(ApiError::NotFound("file"))?;
    if patch.is_null() {
        metadata = Value::Object(Default::default());
    } else {
        shared::metadata::merge_patch(&mut metadata, patch);
    }
    let metadata = checked_metadata(metadata)?;
    sqlx::query("UPDATE files SET metadata = $3, updated_at = now() WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(caller.org_id)
        .bind(&metadata)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    tracing::info!(file_id = %id, "file metadata updated");
    Ok(ApiJson(load_file(&state, &caller, id).await?))
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
