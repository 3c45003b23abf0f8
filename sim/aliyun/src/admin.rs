//! The simulator's own admin surface on the ECS listener, at paths real
//! Aliyun never serves (it answers only `/`): see the instances, change the
//! load balancers, change the faults while a demo runs.
//!
//! ```text
//! curl http://127.21.0.1:8701/_sim/instances
//! curl http://127.21.0.1:8701/_sim/load-balancers
//! curl -X PUT -H 'Content-Type: application/json' \
//!      -d '{"throttle_rate": 0.3}' http://127.21.0.1:8701/_sim/faults
//! ```

use axum::{Json, Router, extract::State, routing::get};

use crate::{
    balancers::LoadBalancerView, cloud::lock, faults::Faults, gateway::Endpoint,
    world::InstanceView,
};

pub(crate) fn routes() -> Router<Endpoint> {
    Router::new()
        .route("/_sim/instances", get(instances))
        .route("/_sim/load-balancers", get(load_balancers))
        .route("/_sim/faults", get(faults).put(set_faults))
}

async fn instances(State(endpoint): State<Endpoint>) -> Json<Vec<InstanceView>> {
    Json(endpoint.cloud.views())
}

async fn load_balancers(State(endpoint): State<Endpoint>) -> Json<Vec<LoadBalancerView>> {
    Json(endpoint.cloud.balancer_views())
}

async fn faults(State(endpoint): State<Endpoint>) -> Json<Faults> {
    Json(lock(&endpoint.cloud.faults).faults())
}

async fn set_faults(State(endpoint): State<Endpoint>, Json(faults): Json<Faults>) -> Json<Faults> {
    tracing::info!("faults now {faults:?}");
    lock(&endpoint.cloud.faults).set(faults.clone());
    Json(faults)
}
