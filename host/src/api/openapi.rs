//! The answers every operation of a shape can give, added to the OpenAPI
//! document by construction.
//!
//! A handler's `#[utoipa::path]` documents what is its own to say: its
//! success, what its 404 or 409 means, the domain rules behind its 422s.
//! What the extractors ([`super::extract`]), the authentication layer and
//! the error mapping answer is decided by the operation's shape — does it
//! take an id in its path, a query, a body; is it signed in — so it is
//! added here from that shape, and a new handler cannot forget it. A status
//! the handler documents itself keeps the handler's description.
//!
//! `tests/tests/openapi.rs` walks every operation with valid and invalid
//! inputs and fails on any answer the document does not list.

use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
    path::{Operation, ParameterIn},
};

/// A shared response: the status, the component's name, and when it happens.
struct Common {
    status: u16,
    name: &'static str,
    description: &'static str,
    /// Whether an operation of this shape can answer it.
    applies: fn(&Shape) -> bool,
}

/// What about an operation decides its common answers.
#[allow(clippy::struct_excessive_bools)]
struct Shape {
    path_params: bool,
    query_params: bool,
    paged: bool,
    body: bool,
    signed_in: bool,
    writes: bool,
}

const COMMON: [Common; 9] = [
    Common {
        status: 400,
        name: "BadRequest",
        description: "A path or query parameter is not of its type (`invalid_parameter`, \
                      `field` names it), or the body is not well-formed (`malformed_json`)",
        applies: |s| s.path_params || s.query_params || s.body,
    },
    Common {
        status: 401,
        name: "Unauthorized",
        description: "No valid token or session (`unauthorized`)",
        applies: |s| s.signed_in,
    },
    Common {
        status: 403,
        name: "Forbidden",
        description: "A session-cookie write without the matching `X-CSRF-Token` (`forbidden`)",
        applies: |s| s.signed_in && s.writes,
    },
    Common {
        status: 404,
        name: "NotFound",
        description: "No such resource (`not_found`)",
        applies: |s| s.path_params,
    },
    Common {
        status: 413,
        name: "PayloadTooLarge",
        description: "The body is larger than the server accepts (`payload_too_large`)",
        applies: |s| s.body,
    },
    Common {
        status: 415,
        name: "UnsupportedMediaType",
        description: "The body is not of the documented content type (`unsupported_media_type`)",
        applies: |s| s.body,
    },
    Common {
        status: 422,
        name: "ValidationFailed",
        description: "A body field is missing, of the wrong type or breaks a rule, or paging is \
                      out of range (`validation_failed`; `field` names it)",
        applies: |s| s.body || s.paged,
    },
    Common {
        status: 500,
        name: "Internal",
        description: "The server failed (`internal`); the log has details under the request id",
        applies: |_| true,
    },
    Common {
        status: 503,
        name: "Unavailable",
        description: "The database is unreachable or the server is shutting down (`unavailable`); \
                      try again",
        applies: |_| true,
    },
];

/// Adds the shared responses to the components and references them from
/// every operation whose shape can answer them.
pub(super) fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for common in &COMMON {
        components.responses.insert(
            common.name.to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(common.description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            ),
        );
    }
    for item in doc.paths.paths.values_mut() {
        let operations = [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.options, false),
            (&mut item.put, true),
            (&mut item.post, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
        ];
        for (operation, writes) in operations {
            if let Some(operation) = operation {
                let shape = shape(operation, writes);
                for common in COMMON.iter().filter(|c| (c.applies)(&shape)) {
                    operation
                        .responses
                        .responses
                        .entry(common.status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(common.name)));
                }
            }
        }
    }
}

fn shape(operation: &Operation, writes: bool) -> Shape {
    let params = operation.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    // `security(())` on a public operation lists one empty requirement.
    let public = operation.security.as_ref().is_some_and(|requirements| {
        requirements
            .iter()
            .any(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
    });
    Shape {
        path_params: has(ParameterIn::Path),
        query_params: has(ParameterIn::Query),
        paged: params
            .iter()
            .any(|p| p.parameter_in == ParameterIn::Query && p.name == "page"),
        body: operation.request_body.is_some(),
        signed_in: !public,
        writes,
    }
}
