//! `/api/v1/session` (log in, who am I, log out) and the authentication
//! middleware guarding every other `/api/v1` route.

use std::net::IpAddr;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use dcp_api_types::{ErrorBody, LoginRequest, Session, User};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Error, Result,
    extract::{ClientAddr, Json},
};
use crate::{
    auth::{self, CSRF_COOKIE, CSRF_HEADER, Credentials, Principal, SESSION_COOKIE},
    config::Config,
};

pub(super) fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login, current_session, logout))
}

fn to_api(principal: &Principal) -> Session {
    Session {
        user: User {
            id: principal.user.id,
            username: principal.user.username.clone(),
            role: principal.user.role.clone(),
        },
        csrf_token: principal.csrf_token.clone(),
    }
}

/// The value of cookie `name`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The token of an `Authorization: Bearer <token>` header, if sent.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn credentials<'a>(headers: &'a HeaderMap, method: &Method) -> Credentials<'a> {
    if let Some(token) = bearer(headers) {
        return Credentials::Bearer(token);
    }
    match cookie(headers, SESSION_COOKIE) {
        Some(secret) if !secret.is_empty() => Credentials::Session {
            secret,
            csrf_header: headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()),
            writes: !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
        },
        _ => Credentials::None,
    }
}

/// Lets a request through only with valid credentials; handlers find the
/// caller as an `Extension<Principal>`.
pub(super) async fn require_auth(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response> {
    let principal = state
        .auth
        .authenticate(credentials(req.headers(), req.method()))
        .await?;
    tracing::debug!(user = %principal.user.username, "authenticated");
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Whether the session cookies get `Secure`: always with `secure_cookies`;
/// otherwise when the connection comes from one of `trusted_proxies` and
/// it says the client used HTTPS (`X-Forwarded-Proto: https`). Any client
/// can send that header, so from anyone else it is ignored.
fn secure_cookies(config: &Config, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
    if config.secure_cookies {
        return true;
    }
    let trusted = peer.is_some_and(|ip| config.trusts(ip));
    // A chain of proxies appends; the first value is the client's own scheme.
    trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: u64, http_only: bool, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; SameSite=Lax; Max-Age={max_age}");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Log in: sets the `dcp_session` (HTTP-only) and `dcp_csrf` cookies.
#[utoipa::path(
    post, path = "/session", tag = "session",
    request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Logged in; cookies set", body = Session),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this user name or from this \
            address (each further one doubles the lock-out; a right password is refused too \
            until it ends), or too many logins at once",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a login may succeed"))),
    )
)]
async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    request_headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> Result<impl IntoResponse> {
    let session = state
        .auth
        .login(&req.username, &req.password, addr.client)
        .await?;
    let secure = secure_cookies(&state.config, addr.peer, &request_headers);
    let ttl = session.ttl.as_secs();
    let mut headers = HeaderMap::new();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &session.secret, ttl, true, secure),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(CSRF_COOKIE, &session.csrf_token, ttl, false, secure),
    );
    tracing::info!(user = %session.user.username, "logged in");
    let body = Session {
        user: User {
            id: session.user.id,
            username: session.user.username,
            role: session.user.role,
        },
        csrf_token: Some(session.csrf_token),
    };
    Ok((headers, Json(body)))
}

/// Who is calling, and the CSRF token of their session.
#[utoipa::path(
    get, path = "/session", tag = "session",
    responses(
        (status = 200, description = "The caller", body = Session),
        (status = 401, description = "Not logged in", body = ErrorBody),
    )
)]
async fn current_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Session>> {
    let principal = state
        .auth
        .authenticate(credentials(&headers, &Method::GET))
        .await?;
    Ok(Json(to_api(&principal)))
}

/// Log out: ends the session and clears the cookies. Needs the CSRF header
/// while the session is live, so another site cannot log a user out.
#[utoipa::path(
    delete, path = "/session", tag = "session",
    security(()),
    responses(
        (status = 204, description = "Logged out"),
        (status = 403, description = "Live session, but no matching X-CSRF-Token", body = ErrorBody),
    )
)]
async fn logout(
    State(state): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    if let creds @ Credentials::Session { secret, .. } = credentials(&headers, &Method::DELETE) {
        match state.auth.authenticate(creds).await {
            Ok(_) => state.auth.logout(secret).await?,
            // A dead session has nothing left to end; just clear the cookies.
            Err(auth::Error::SessionExpired) => {}
            Err(e) => return Err(Error::from(e)),
        }
    }
    let secure = secure_cookies(&state.config, addr.peer, &headers);
    let mut out = HeaderMap::new();
    out.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, true, secure),
    );
    out.append(
        header::SET_COOKIE,
        set_cookie(CSRF_COOKIE, "", 0, false, secure),
    );
    Ok((StatusCode::NO_CONTENT, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; dcp_session=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, "dcp_session"), Some("xyz"));
        assert_eq!(cookie(&headers, "dcp_csrf"), None);
    }

    #[test]
    fn bearer_tokens_win_over_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("dcp_session=xyz"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer dcp_abc"),
        );
        assert!(matches!(
            credentials(&headers, &Method::POST),
            Credentials::Bearer("dcp_abc")
        ));
        headers.remove(header::AUTHORIZATION);
        assert!(matches!(
            credentials(&headers, &Method::POST),
            Credentials::Session {
                writes: true,
                csrf_header: None,
                ..
            }
        ));
        assert!(matches!(
            credentials(&headers, &Method::GET),
            Credentials::Session { writes: false, .. }
        ));
    }
}
