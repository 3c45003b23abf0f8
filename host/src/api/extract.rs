//! Extractors whose rejections are [`Error`]s, so a bad body, query or path
//! gets the same JSON error shape as every other failure — naming the field.

use std::net::IpAddr;

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use dcp_api_types::{Page, PageQuery};
use serde::{Serialize, de::DeserializeOwned};

use super::{AppState, error::Error};
use crate::{config::Config, store::Window};

/// A JSON body. Not JSON → 415; too large → 413; not well-formed → 400;
/// a field missing or of the wrong type → 422 naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge
            } else {
                Error::MalformedJson(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Deserialises a JSON body, telling syntax errors (400) from field errors (422).
/// Every body is an object: serde would read a struct from an array of its
/// fields' values in order (`[1, 2]`), which no client means.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(Error::validation(
            "body",
            "must be a JSON object of the documented fields, not an array",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let field = missing_field(&message)
                    .map(|f| join_path(&path, f))
                    .unwrap_or(path);
                Error::validation(
                    if field == "." { "body".into() } else { field },
                    strip_position(&message),
                )
            }
            _ => Error::MalformedJson(inner.to_string()),
        }
    })
}

/// serde reports a missing field at its parent's path, naming it only in the message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn join_path(parent: &str, field: &str) -> String {
    if parent == "." {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// "invalid type: … at line 1 column 9" → "invalid type: …"; the field already says where.
fn strip_position(message: &str) -> String {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
        .to_owned()
}

/// Query parameters; a value not of its type → 400 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| Error::InvalidParameter {
                field: err.path().to_string(),
                message: err.into_inner().to_string(),
            })
    }
}

/// Path parameters; a value not of its type → 400 naming the parameter.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// The `{id}` of a resource path; a struct, so a bad value is reported under `id`.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Id {
    /// The resource's id.
    pub id: i64,
}

/// Who is on the other end: the connection's `peer` and the `client`
/// behind it (`None` when the app is driven without a socket, as tests do).
/// They differ only when the peer is one of `trusted_proxies`: then the
/// client is the nearest address in `X-Forwarded-For` that is not a trusted
/// proxy. Each proxy appends the address it saw, so entries left of that
/// one may be made up by the client and are not believed.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    /// The address the connection comes from.
    pub peer: Option<IpAddr>,
    /// The client's own address, as far as trusted proxies vouch for it.
    pub client: Option<IpAddr>,
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let client = peer.map(|peer| forwarded_client(peer, &parts.headers, &state.config));
        Ok(Self { peer, client })
    }
}

/// The client behind `peer` by `X-Forwarded-For`, read from the right while
/// the hops are trusted proxies. A value that is not an address stops the
/// walk at the last trusted hop: the clients behind it share its address.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, config: &Config) -> IpAddr {
    let mut client = peer;
    if !config.trusts(peer) {
        return client;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("?").rsplit(','));
    for hop in hops {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            return client;
        };
        client = ip;
        if !config.trusts(ip) {
            break;
        }
    }
    client
}

/// Checks paging parameters and turns them into a store window.
pub(crate) fn window(query: PageQuery) -> Result<Window, Error> {
    if query.page == 0 {
        return Err(Error::validation("page", "must be at least 1"));
    }
    if !(1..=PageQuery::MAX_PER_PAGE).contains(&query.per_page) {
        return Err(Error::validation(
            "per_page",
            format!("must be between 1 and {}", PageQuery::MAX_PER_PAGE),
        ));
    }
    Ok(Window {
        limit: query.per_page,
        offset: u64::from(query.page - 1) * u64::from(query.per_page),
    })
}

/// Wraps one window of items as a [`Page`].
pub(crate) fn page<T>(items: Vec<T>, total: u64, query: PageQuery) -> Page<T> {
    Page {
        items,
        total,
        page: query.page,
        per_page: query.per_page,
    }
}

/// One page of a list that is small and bounded by nature, so it is held
/// whole in memory rather than read from the store by window; cut exactly
/// as the store cuts a window.
pub(crate) fn page_of<T>(all: Vec<T>, query: PageQuery) -> Result<Page<T>, Error> {
    let window = window(query)?;
    let total = u64::try_from(all.len()).unwrap_or(u64::MAX);
    Ok(page(window.cut(all), total, query))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        ports: Vec<u16>,
    }

    #[test]
    fn a_body_is_an_object_never_an_array_of_its_fields() {
        let tuple = parse_json::<Body>(br#" ["web", [80]]"#);
        assert!(
            matches!(tuple, Err(Error::Validation { ref field, .. }) if field == "body"),
            "{tuple:?}"
        );
        assert!(parse_json::<Body>(br#"{"name": "web", "ports": [80]}"#).is_ok());
    }

    fn field_of(json: &str) -> (u16, Option<String>) {
        match parse_json::<Body>(json.as_bytes()) {
            Err(Error::Validation { field, .. }) => (422, Some(field)),
            Err(Error::MalformedJson(_)) => (400, None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of(r#"{"ports": []}"#), (422, Some("name".into())));
        assert_eq!(
            field_of(r#"{"name": 5, "ports": []}"#),
            (422, Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "a", "ports": [80, "x"]}"#),
            (422, Some("ports[1]".into()))
        );
        assert_eq!(field_of(r#"{"name": "a", "#), (400, None));
        assert_eq!(field_of("not json"), (400, None));
    }

    #[test]
    fn paging_is_bounded() {
        let q = |page, per_page| window(PageQuery { page, per_page });
        assert_eq!(
            q(3, 20).unwrap(),
            Window {
                limit: 20,
                offset: 40
            }
        );
        assert!(matches!(q(0, 20), Err(Error::Validation { field, .. }) if field == "page"));
        assert!(
            matches!(q(1, 100_000), Err(Error::Validation { field, .. }) if field == "per_page")
        );
        assert!(matches!(q(1, 0), Err(Error::Validation { field, .. }) if field == "per_page"));
    }

    #[test]
    fn bounded_lists_are_cut_like_store_windows() {
        let q = |page, per_page| PageQuery { page, per_page };
        let cut = page_of((1..=5).collect(), q(2, 2)).unwrap();
        assert_eq!((cut.items, cut.total, cut.page), (vec![3, 4], 5, 2));
        assert!(page_of(vec![1], q(9, 2)).unwrap().items.is_empty());
        assert!(
            matches!(page_of(vec![1], q(0, 2)), Err(Error::Validation { field, .. }) if field == "page")
        );
    }
}
