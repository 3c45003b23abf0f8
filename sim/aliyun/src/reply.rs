//! What goes back to the caller: a success body or a cloud error, as JSON or
//! (the gateway's default) XML, always with a fresh request id.

use axum::{
    http::{HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{params::Params, xml};

/// A cloud error as Aliyun answers it: an HTTP status, a `Code` a driver
/// matches on and a human `Message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A parameter the API declares required is absent or empty. The gateway
    /// checks these before the action runs and names the parameter in the
    /// code (`MissingRegionId`, `MissingInstanceId`; reference §1.5).
    pub(crate) fn missing(name: &str) -> Self {
        Self::new(
            400,
            &format!("Missing{name}"),
            format!("{name} is mandatory for this action."),
        )
    }

    /// A parameter the API declares optional but this request needs (e.g.
    /// RunInstances without a launch template needs `ImageId`): the action
    /// itself refuses, with the generic code (ECS error tables).
    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    /// A value that does not parse or is out of range.
    pub(crate) fn invalid(name: &str) -> Self {
        Self::invalid_as("InvalidParameter", name)
    }

    /// Like [`Self::invalid`] with an action-specific code.
    pub(crate) fn invalid_as(code: &str, name: &str) -> Self {
        Self::new(
            400,
            code,
            format!("The specified parameter \"{name}\" is not valid."),
        )
    }

    pub(crate) fn api_not_found() -> Self {
        Self::new(
            404,
            "InvalidApi.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }

    pub(crate) fn instance_not_found() -> Self {
        Self::new(
            404,
            "InvalidInstanceId.NotFound",
            "The specified InstanceId does not exist.",
        )
    }

    pub(crate) fn incorrect_status() -> Self {
        Self::new(
            403,
            "IncorrectInstanceStatus",
            "The current status of the resource does not support this operation.",
        )
    }

    pub(crate) fn region_not_found() -> Self {
        Self::new(
            404,
            "InvalidRegionId.NotFound",
            "The specified RegionId does not exist.",
        )
    }
}

/// The answer's encoding, from `Format` (case-insensitive: Tea sends
/// `json`). Anything but JSON gets XML, the gateway's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Xml,
}

impl Format {
    pub(crate) fn of(params: &Params) -> Self {
        match params.get("Format") {
            Some(f) if f.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Xml,
        }
    }
}

/// A fresh request id, shaped like Aliyun's (an uppercase UUID).
pub(crate) fn request_id() -> String {
    uuid::Uuid::now_v7().to_string().to_ascii_uppercase()
}

/// A success: `body` (an object) with `RequestId` added, rooted at
/// `<{Action}Response>` in XML.
pub(crate) fn success(format: Format, action: &str, request_id: &str, body: Value) -> Response {
    let mut body = match body {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("RequestId".to_owned(), Value::String(request_id.to_owned()));
    render(
        format,
        StatusCode::OK,
        &format!("{action}Response"),
        request_id,
        &Value::Object(body),
    )
}

/// A failure in Aliyun's error shape, with its real HTTP status.
pub(crate) fn failure(
    format: Format,
    host_id: &str,
    product: &str,
    request_id: &str,
    error: &ApiError,
) -> Response {
    let body = json!({
        "RequestId": request_id,
        "HostId": host_id,
        "Code": error.code,
        "Message": error.message,
        "Recommend": format!(
            "https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={request_id}",
            error.code
        ),
    });
    render(format, error.status, "Error", request_id, &body)
}

fn render(
    format: Format,
    status: StatusCode,
    root: &str,
    request_id: &str,
    body: &Value,
) -> Response {
    let (content_type, text) = match format {
        Format::Json => ("application/json;charset=utf-8", body.to_string()),
        Format::Xml => ("text/xml;charset=utf-8", xml::document(root, body)),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                HeaderName::from_static("x-acs-request-id"),
                request_id.to_owned(),
            ),
        ],
        text,
    )
        .into_response()
}

/// Seconds since the epoch as ECS spells instance times: UTC without
/// seconds, `2024-01-02T03:04Z` (DescribeInstances' `CreationTime`).
pub(crate) fn minutes(unix_secs: i64) -> String {
    let full = aliyun_rpc::timestamp(u64::try_from(unix_secs).unwrap_or(0));
    format!("{}Z", &full[..16])
}

/// Seconds since the epoch as `2024-01-02T03:04:05Z`.
pub(crate) fn seconds(unix_secs: i64) -> String {
    aliyun_rpc::timestamp(u64::try_from(unix_secs).unwrap_or(0))
}
