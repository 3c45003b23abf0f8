//! The RPC gateway in front of each product: merges query and form
//! parameters, routes `Action`/`Version` to the product, authenticates,
//! injects faults, runs the action and renders the answer — in the order
//! Aliyun's gateway does, so errors come out as they would.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, Method, Uri, header},
    response::Response,
    routing::get,
};
use serde_json::Value;

use crate::{
    admin,
    cloud::{Cloud, lock},
    ecs,
    faults::Aftermath,
    params::Params,
    reply::{self, ApiError, Format},
    slb,
    transport::Severer,
    vpc,
};

/// An Aliyun product, served on its own address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Product {
    Ecs,
    Vpc,
    Slb,
}

impl Product {
    fn version(self) -> &'static str {
        match self {
            Self::Ecs => "2014-05-26",
            Self::Vpc => "2016-04-28",
            Self::Slb => "2014-05-15",
        }
    }

    fn actions(self) -> &'static [&'static str] {
        match self {
            Self::Ecs => ecs::ACTIONS,
            Self::Vpc => vpc::ACTIONS,
            Self::Slb => slb::ACTIONS,
        }
    }

    /// `HostId` of its errors: the real product host, as Aliyun names it.
    fn host_id(self) -> &'static str {
        match self {
            Self::Ecs => "ecs.aliyuncs.com",
            Self::Vpc => "vpc.aliyuncs.com",
            Self::Slb => "slb.aliyuncs.com",
        }
    }

    /// The product's name in Aliyun's troubleshooting links.
    fn name(self) -> &'static str {
        match self {
            Self::Ecs => "Ecs",
            Self::Vpc => "Vpc",
            Self::Slb => "Slb",
        }
    }
}

/// The state of one product's router.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) cloud: Arc<Cloud>,
    product: Product,
}

/// The product's router: the RPC API at `/` (GET or POST), plus the
/// simulator's admin paths on the ECS endpoint.
pub(crate) fn router(cloud: Arc<Cloud>, product: Product) -> Router {
    let mut router = Router::new().route("/", get(rpc).post(rpc));
    if product == Product::Ecs {
        router = router.merge(admin::routes());
    }
    router
        .fallback(unknown_path)
        .with_state(Endpoint { cloud, product })
}

async fn rpc(
    State(endpoint): State<Endpoint>,
    ConnectInfo(severer): ConnectInfo<Severer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parameters(uri.query(), &headers, &body);
    let format = Format::of(&params);
    let request_id = reply::request_id();
    let (result, aftermath) = endpoint.call(method.as_str(), &params);
    if aftermath.drop_reply {
        tracing::info!(
            "dropping the reply to {} after its effect",
            params.get("Action").unwrap_or_default()
        );
        severer.sever();
    }
    if let Some(delay) = aftermath.delay {
        tokio::time::sleep(delay).await;
    }
    match result {
        Ok(body) => reply::success(
            format,
            params.get("Action").unwrap_or_default(),
            &request_id,
            body,
        ),
        Err(error) => {
            tracing::debug!("{}: {} {}", request_id, error.code, error.message);
            endpoint.failure(format, &request_id, &error)
        }
    }
}

/// Query and form body merged; the body is read only when it is declared as
/// a form, as the real gateway does.
fn parameters(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Params {
    let mut pairs = query.map(aliyun_rpc::parse_pairs).unwrap_or_default();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if is_form {
        pairs.extend(aliyun_rpc::parse_pairs(&String::from_utf8_lossy(body)));
    }
    Params::from_pairs(pairs)
}

impl Endpoint {
    /// The action's result and what then happens to its reply.
    fn call(&self, method: &str, params: &Params) -> (Result<Value, ApiError>, Aftermath) {
        let mut aftermath = Aftermath::default();
        let result = self.admit(method, params).and_then(|(key_id, action)| {
            self.cloud.count_call(action);
            // Throttling and server errors come before any side effect.
            lock(&self.cloud.faults).before()?;
            let mut result = match self.product {
                Product::Ecs => ecs::handle(&self.cloud, &key_id, action, params),
                Product::Vpc => vpc::handle(&self.cloud, action, params),
                Product::Slb => slb::handle(&self.cloud, &key_id, action, params),
            };
            aftermath = lock(&self.cloud.faults).after(action);
            if let Ok(body) = &mut result {
                lock(&self.cloud.quirks).apply(body);
            }
            result
        });
        (result, aftermath)
    }

    /// Routes and authenticates: answers the caller's key id and the action.
    fn admit<'p>(&self, method: &str, params: &'p Params) -> Result<(String, &'p str), ApiError> {
        let action = params.required("Action")?;
        let version = params.required("Version")?;
        if version != self.product.version() || !self.product.actions().contains(&action) {
            return Err(ApiError::api_not_found());
        }
        let key_id = self
            .cloud
            .auth
            .authenticate(&self.cloud.clock, method, params)?;
        Ok((key_id, action))
    }

    fn failure(&self, format: Format, request_id: &str, error: &ApiError) -> Response {
        reply::failure(
            format,
            self.product.host_id(),
            self.product.name(),
            request_id,
            error,
        )
    }
}

/// Any path but `/` (and the admin paths): Aliyun serves nothing there.
async fn unknown_path(State(endpoint): State<Endpoint>, uri: Uri) -> Response {
    let params = parameters(uri.query(), &HeaderMap::new(), &[]);
    endpoint.failure(
        Format::of(&params),
        &reply::request_id(),
        &ApiError::api_not_found(),
    )
}
