//! The simulated cloud as the endpoints share it: the world, the gateway's
//! keys and clock, the fault and quirk generators, call counts and the fleet.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Auth, Clock},
    faults::Injector,
    fleet::Fleet,
    options::Delays,
    quirks::Quirks,
    traffic::Plane,
    world::{InstanceView, World},
};

/// Locks `mutex`, recovering from a panic elsewhere: the simulator's state
/// is plain data, still usable after a test thread failed while holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the endpoints and the background transitions share.
#[derive(Debug)]
pub(crate) struct Cloud {
    pub(crate) world: Mutex<World>,
    pub(crate) auth: Auth,
    pub(crate) clock: Clock,
    pub(crate) faults: Mutex<Injector>,
    pub(crate) quirks: Mutex<Quirks>,
    pub(crate) calls: Mutex<HashMap<String, usize>>,
    pub(crate) delays: Delays,
    /// While true, new instances stay `Pending` past their pending delay
    /// (a zone short of capacity keeps them there for minutes).
    pub(crate) hold_pending: tokio::sync::watch::Sender<bool>,
    pub(crate) fleet: Option<Fleet>,
    /// The load balancers' listeners that listen now.
    pub(crate) traffic: Plane,
    /// Cancelled at shutdown: pending transitions stop where they are.
    pub(crate) closing: CancellationToken,
    /// `host:port` of the ECS endpoint, for DescribeRegions'
    /// `RegionEndpoint` — pointing at the real cloud would be a trap.
    pub(crate) ecs_host: String,
}

impl Cloud {
    /// Counts a request that passed authentication.
    pub(crate) fn count_call(&self, action: &str) {
        *lock(&self.calls).entry(action.to_owned()).or_default() += 1;
    }

    /// Every instance the API still reports (one being deleted counts until
    /// its delete delay is over), in creation order.
    pub(crate) fn views(&self) -> Vec<InstanceView> {
        lock(&self.world)
            .instances
            .iter()
            .map(|i| i.view())
            .collect()
    }
}
