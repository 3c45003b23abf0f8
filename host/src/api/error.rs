//! `api::Error` and its mapping to HTTP: the one place where a failure
//! becomes a status code and the JSON error shape.

use axum::{
    Json,
    extract::{Request, multipart::MultipartError, rejection::PathRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use dcp_api_types::{ErrorBody, ErrorCode, ErrorDetail, FieldError};

use crate::{
    auth, containers, discovery, engine, images, machines, plugins::registry, remote, store,
    telemetry::RequestIds,
};

/// The result type of handlers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule (422).
    #[error("{field}: {message}")]
    Validation {
        /// The offending field, e.g. `name` or `items[0].port`.
        field: String,
        /// What rule it breaks.
        message: String,
        /// Other fields checked with it that break a rule (field, message).
        also: Vec<(String, String)>,
    },
    /// The body is not well-formed JSON (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A path or query parameter is not of its type (400).
    #[error("{field}: {message}")]
    InvalidParameter {
        /// The parameter's name.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The body is not JSON (415).
    #[error("expected a body of type application/json")]
    UnsupportedMediaType,
    /// The body is larger than the configured limit (413).
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    /// The body did not arrive within the body timeout (408; the
    /// connection is closed).
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// A field's value is held by something else (409), e.g. a machine that
    /// is a node of another pool.
    #[error("{field}: {message}")]
    Conflict {
        /// The offending field, e.g. `machine_ids[0]`.
        field: String,
        /// What holds it.
        message: String,
    },
    /// Authentication failed (401), CSRF failed (403), or auth broke (5xx).
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// A dependency is unreachable (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too much work is waiting to take more now (503, `Retry-After`); the
    /// message says which, for the client.
    #[error("{0}")]
    Busy(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The plugin registry refused.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// The remote-commands module refused.
    #[error(transparent)]
    Remote(#[from] remote::Error),
    /// The machines module refused, or the cloud failed.
    #[error(transparent)]
    Machines(#[from] machines::Error),
    /// The task engine refused.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// An app key may not make this call: unknown or revoked (401), or
    /// without the interface's privilege (403).
    #[error(transparent)]
    AppKey(#[from] discovery::Refusal),
    /// The image market refused, or its registry failed.
    #[error(transparent)]
    Images(#[from] images::Error),
}

impl From<containers::Error> for Error {
    fn from(e: containers::Error) -> Self {
        match e {
            // Its fields are query parameters.
            containers::Error::Invalid(invalid) => Self::InvalidParameter {
                field: invalid.field.into_owned(),
                message: invalid.message,
            },
            containers::Error::Store(e) => e.into(),
            containers::Error::Remote(e) => e.into(),
            containers::Error::Missing(why) => Self::NotFound(why),
        }
    }
}

impl Error {
    /// A validation error on `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
            also: Vec::new(),
        }
    }

    /// Whether a 5xx's message is for the client: a cloud's refusal, or a
    /// module saying "not now" (shutting down, a plugin not active). Store
    /// and server failures stay in the log.
    fn tells_client(&self) -> bool {
        matches!(
            self,
            Self::Machines(machines::Error::Cloud(_) | machines::Error::Unavailable(_))
                | Self::Remote(remote::Error::Unavailable(_) | remote::Error::Unreachable(_))
                | Self::Busy(_)
                | Self::Images(
                    images::Error::NotConfigured
                        | images::Error::Down(_)
                        | images::Error::Registry(_)
                        | images::Error::Queue(_)
                )
        )
    }

    fn detail(&self) -> ErrorDetail {
        let (code, field) = match self {
            Self::Validation { field, .. } => (ErrorCode::ValidationFailed, Some(field.clone())),
            Self::MalformedJson(_) => (ErrorCode::MalformedJson, None),
            Self::InvalidParameter { field, .. } => {
                (ErrorCode::InvalidParameter, Some(field.clone()))
            }
            Self::UnsupportedMediaType => (ErrorCode::UnsupportedMediaType, None),
            Self::PayloadTooLarge => (ErrorCode::PayloadTooLarge, None),
            Self::BodyTimeout(_) => (ErrorCode::RequestTimeout, None),
            Self::NotFound(_) => (ErrorCode::NotFound, None),
            Self::Conflict { field, .. } => (ErrorCode::Conflict, Some(field.clone())),
            Self::Unavailable(_) | Self::Busy(_) => (ErrorCode::Unavailable, None),
            Self::Auth(e) => match e {
                auth::Error::Missing
                | auth::Error::InvalidToken
                | auth::Error::SessionExpired
                | auth::Error::BadLogin => (ErrorCode::Unauthorized, None),
                auth::Error::CsrfMismatch | auth::Error::Forbidden(_) => {
                    (ErrorCode::Forbidden, None)
                }
                auth::Error::LockedOut { .. } | auth::Error::Busy => {
                    (ErrorCode::TooManyRequests, None)
                }
                auth::Error::NoSuchUser => (ErrorCode::NotFound, None),
                auth::Error::Store(e) => return store_detail(e),
                auth::Error::Hash(_) => (ErrorCode::Internal, None),
            },
            Self::AppKey(discovery::Refusal::Lacks { .. }) => (ErrorCode::Forbidden, None),
            Self::AppKey(_) => (ErrorCode::Unauthorized, None),
            Self::Store(e) => return store_detail(e),
            Self::Registry(e) => match e {
                registry::Error::Invalid(invalid) => {
                    (ErrorCode::ValidationFailed, Some(invalid.field.to_string()))
                }
                registry::Error::Conflict(_) => (ErrorCode::Conflict, None),
                registry::Error::Store(e) => return store_detail(e),
                registry::Error::Io(_) => (ErrorCode::Internal, None),
            },
            Self::Remote(e) => match e {
                remote::Error::Invalid(invalid) => {
                    (ErrorCode::ValidationFailed, Some(invalid.field.to_string()))
                }
                remote::Error::Store(e) => return store_detail(e),
                remote::Error::Conflict(_) => (ErrorCode::Conflict, None),
                remote::Error::Unavailable(_) => (ErrorCode::Unavailable, None),
                remote::Error::Unreachable(_) => (ErrorCode::Upstream, None),
            },
            Self::Machines(e) => match e {
                machines::Error::Invalid(invalid) => {
                    (ErrorCode::ValidationFailed, Some(invalid.field.to_string()))
                }
                machines::Error::Store(e) => return store_detail(e),
                machines::Error::Conflict(_) => (ErrorCode::Conflict, None),
                machines::Error::Cloud(_) => (ErrorCode::Upstream, None),
                machines::Error::Unavailable(_) => (ErrorCode::Unavailable, None),
                machines::Error::Vault(_) => (ErrorCode::Internal, None),
                machines::Error::Missing(_) => (ErrorCode::NotFound, None),
            },
            Self::Images(e) => match e {
                images::Error::Invalid(invalid) => {
                    (ErrorCode::ValidationFailed, Some(invalid.field.to_string()))
                }
                images::Error::NotConfigured | images::Error::Down(_) => {
                    (ErrorCode::Unavailable, None)
                }
                images::Error::NotFound(_) => (ErrorCode::NotFound, None),
                images::Error::Registry(_) => (ErrorCode::Upstream, None),
                images::Error::Busy(_) => (ErrorCode::Conflict, None),
                images::Error::Queue(_) => (ErrorCode::Unavailable, None),
                images::Error::Store(e) => return store_detail(e),
            },
            Self::Engine(e) => match e {
                engine::Error::Invalid(invalid) => {
                    (ErrorCode::ValidationFailed, Some(invalid.field.to_string()))
                }
                engine::Error::Store(e) => return store_detail(e),
                engine::Error::Conflict(_) => (ErrorCode::Conflict, None),
            },
        };
        let also = match self {
            Self::Validation { also, .. } => also
                .iter()
                .map(|(field, message)| FieldError {
                    field: field.clone(),
                    message: message.clone(),
                })
                .collect(),
            Self::Machines(machines::Error::Invalid(invalid))
            | Self::Engine(engine::Error::Invalid(invalid))
            | Self::Remote(remote::Error::Invalid(invalid))
            | Self::Registry(registry::Error::Invalid(invalid)) => invalid
                .also
                .iter()
                .map(|i| FieldError {
                    field: i.field.to_string(),
                    message: i.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        ErrorDetail {
            code,
            message: self.to_string(),
            field,
            request_id: None,
            also,
        }
    }
}

fn store_detail(err: &store::Error) -> ErrorDetail {
    let (code, field) = match err {
        store::Error::NotFound { .. } => (ErrorCode::NotFound, None),
        store::Error::Conflict { field, .. } | store::Error::Claimed { field, .. } => {
            (ErrorCode::Conflict, Some((*field).to_owned()))
        }
        store::Error::InUse { .. } => (ErrorCode::Conflict, None),
        store::Error::Unavailable(_) => (ErrorCode::Unavailable, None),
        store::Error::UnsupportedUrl(_)
        | store::Error::Migrate(_)
        | store::Error::Database(_)
        | store::Error::Corrupt { .. } => (ErrorCode::Internal, None),
    };
    ErrorDetail {
        code,
        message: err.to_string(),
        field,
        request_id: None,
        also: Vec::new(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut detail = self.detail();
        if detail.code.status() >= 500 && !self.tells_client() {
            // The details stay in the log (under the request's span and id);
            // the client gets a message that leaks nothing.
            tracing::error!(error = %self, "request failed");
            detail.message = match detail.code {
                ErrorCode::Unavailable => "the database is unavailable; try again shortly".into(),
                _ => {
                    "internal server error; the server log has details under this request id".into()
                }
            };
        }
        let mut res = error_response(detail);
        match &self {
            Self::Auth(auth::Error::LockedOut { retry_after }) => {
                // Whole seconds, rounded up, so a client waiting that long
                // finds the lock-out over.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Self::Auth(auth::Error::Busy)
            | Self::Busy(_)
            | Self::Images(images::Error::Queue(_)) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of the body may still be dripping in; the
            // connection cannot be reused.
            Self::BodyTimeout(_) => {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }
}

/// Turns path-parameter rejections into [`Error::InvalidParameter`] naming the parameter.
impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        let (field, message) = match &rejection {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::ParseErrorAtKey {
                    key, expected_type, ..
                } => (key.clone(), format!("must be a valid {expected_type}")),
                other => ("path".to_owned(), other.to_string()),
            },
            other => ("path".to_owned(), other.body_text()),
        };
        Self::InvalidParameter { field, message }
    }
}

/// A multipart body that cannot be read: too large (413) or malformed (400).
impl From<MultipartError> for Error {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::InvalidParameter {
                field: "body".into(),
                message: format!("not a readable multipart body: {e}"),
            }
        }
    }
}

fn error_response(detail: ErrorDetail) -> Response {
    let status =
        StatusCode::from_u16(detail.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (
        status,
        Json(ErrorBody {
            error: detail.clone(),
        }),
    )
        .into_response();
    res.extensions_mut().insert(detail);
    res
}

/// Gives every error response the one JSON shape, with the request id.
///
/// Errors raised by DCP's handlers carry their [`ErrorDetail`]; errors made
/// elsewhere (405 from the router, a panic caught by a layer) get a detail
/// derived from their status.
pub async fn normalize(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestIds>()
        .map(|ids| ids.request_id.clone());
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let mut detail = match res.extensions().get::<ErrorDetail>() {
        Some(detail) => detail.clone(),
        None if is_json(&res) => return res,
        None => detail_for_status(status),
    };
    detail.request_id = request_id;
    let (mut parts, _) = res.into_parts();
    let fresh = error_response(detail);
    // Keep headers such as `Allow` on a 405 and extensions such as the
    // matched route; the body and its type are ours.
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &fresh_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.extensions.extend(fresh_parts.extensions);
    Response::from_parts(parts, body)
}

fn is_json(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn detail_for_status(status: StatusCode) -> ErrorDetail {
    let (code, message) = match status.as_u16() {
        404 => (ErrorCode::NotFound, "no such route"),
        405 => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        413 => (
            ErrorCode::PayloadTooLarge,
            "request body is larger than the limit",
        ),
        415 => (
            ErrorCode::UnsupportedMediaType,
            "expected a body of type application/json",
        ),
        401 => (ErrorCode::Unauthorized, "authentication required"),
        403 => (ErrorCode::Forbidden, "forbidden"),
        400..=499 => (ErrorCode::InvalidParameter, "bad request"),
        503 => (ErrorCode::Unavailable, "service unavailable"),
        _ => (
            ErrorCode::Internal,
            "internal server error; the server log has details under this request id",
        ),
    };
    ErrorDetail {
        code,
        message: message.to_owned(),
        field: None,
        request_id: None,
        also: Vec::new(),
    }
}

/// The fallback for unknown routes under `/api`.
pub async fn no_route() -> Error {
    Error::NotFound("no such API route".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn message(res: Response) -> String {
        use http_body_util::BodyExt as _;
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        body["error"]["message"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_busy_answer_says_why_and_when_to_retry() {
        let res = Error::Busy("too many alterations are waiting".into()).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(message(res).await, "too many alterations are waiting");
        // A dependency's failure stays in the log.
        let hidden = Error::Unavailable("connection refused by db.internal".into()).into_response();
        assert_eq!(hidden.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!message(hidden).await.contains("db.internal"));
    }
}
