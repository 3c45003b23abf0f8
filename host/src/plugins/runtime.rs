//! The wasmtime engine: compiling components, checking them against the
//! contract, and running each call in a fresh, limited store.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    component::{Component, HasSelf, Instance, InstancePre, Linker, types::ComponentItem},
};

use super::{
    Error, Failure, Grants, World,
    bindings::{
        dcp::plugin::{context, http, log, secrets, ssh, types},
        exports::dcp::plugin::{balancer, cloud, command, load_balancers},
    },
    footprint::{Footprint, MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES},
    imports::{CallInfo, HostState, unix_ms_after},
};

/// How often the epoch ticks; a running plugin yields to other tasks at
/// least this often.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Component instances the pooling allocator keeps slots for: also how many
/// plugin calls run at once (more wait for a slot).
const POOL_INSTANCES: u32 = 128;

/// Linear memories the pooling allocator keeps slots for. Each slot reserves
/// address space for a whole memory, so there are fewer than
/// `POOL_INSTANCES * MAX_MEMORIES`: a call also waits for as many of these
/// as its component has memories, so no mix of components can drain them.
const POOL_MEMORIES: u32 = 192;

/// Calls at once with the on-demand allocator (each maps its own memory).
const ON_DEMAND_CALLS: usize = 512;

/// Linear memory a pooled slot keeps mapped after a call, when the kernel can
/// tell which pages the call wrote (`PAGEMAP_SCAN`, Linux 6.7+): up to this
/// much of what it wrote is copied back from the module's image (or zeroed)
/// in place, the rest released. A small call then costs no `madvise` on the
/// way out and no page faults on the way in — this halves a call (see
/// docs/benchmarks.md). The next call still sees exactly the initial memory.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;

/// The same for tables (a component's shim tables of lowered imports).
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Whether pooled slots are reset page by page (see [`KEEP_RESIDENT_MEMORY`]).
/// Without `PAGEMAP_SCAN`, keeping memory resident would mean rewriting all
/// of it after every call, which is slower than releasing it.
fn reset_by_page() -> bool {
    PoolingAllocationConfig::is_pagemap_scan_available()
}

/// Compiles and runs plugins. One per process; cheap to share.
pub struct Runtime {
    engine: Engine,
    linkers: HashMap<World, Linker<HostState>>,
    pooling: bool,
    /// One permit per call in flight. Without it, a burst beyond the pool's
    /// slots (a 1000-node expand) would fail to instantiate instead of waiting.
    slots: Arc<tokio::sync::Semaphore>,
    /// One permit per pooled memory slot; a call holds one per memory of its
    /// component. `None` with the on-demand allocator.
    memory_slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// An engine with the pooling allocator when the machine allows it (it
    /// reserves a lot of address space), the on-demand allocator otherwise,
    /// and a thread ticking the epoch.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Self::build(true)
    }

    /// An engine with the on-demand allocator only: for compiling under a
    /// tight address-space limit (`dcp check-plugin`).
    pub fn on_demand() -> anyhow::Result<Arc<Self>> {
        Self::build(false)
    }

    fn build(try_pooling: bool) -> anyhow::Result<Arc<Self>> {
        let pooled = if try_pooling {
            Engine::new(&config(true))
        } else {
            Err(wasmtime::format_err!("not asked for"))
        };
        let (engine, pooling) = match pooled {
            Ok(engine) => (engine, true),
            Err(e) => {
                if try_pooling {
                    tracing::warn!(
                        "pooling allocator unavailable ({e}); using on-demand allocation"
                    );
                }
                (
                    Engine::new(&config(false)).map_err(|e| anyhow::anyhow!("{e}"))?,
                    false,
                )
            }
        };
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("dcp-plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linkers = HashMap::new();
        for world in World::ALL {
            linkers.insert(
                world,
                linker(&engine, world).map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
        let slots = if pooling {
            POOL_INSTANCES as usize
        } else {
            ON_DEMAND_CALLS
        };
        Ok(Arc::new(Self {
            engine,
            linkers,
            pooling,
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            memory_slots: pooling
                .then(|| Arc::new(tokio::sync::Semaphore::new(POOL_MEMORIES as usize))),
        }))
    }

    /// Whether the pooling allocator is in use.
    #[must_use]
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Whether pooled slots are reset page by page after each call, keeping
    /// their memory mapped (Linux 6.7+); otherwise it is released.
    #[must_use]
    pub fn resets_by_page(&self) -> bool {
        self.pooling && reset_by_page()
    }

    /// Compiles `wasm` and checks it is a component of one of DCP's worlds
    /// that imports nothing beyond it and creates no more instances,
    /// memories and tables than a plugin may.
    pub fn load(self: &Arc<Self>, name: &str, version: &str, wasm: &[u8]) -> Result<Plugin, Error> {
        let incompatible = |message: String| Error {
            plugin: name.into(),
            version: version.into(),
            call: "load",
            failure: Failure::Incompatible(message),
        };
        if wasm.starts_with(b"\0asm\x01\0\0\0") {
            return Err(incompatible(
                "this is a core WebAssembly module, not a component; build it for wasm32-wasip2"
                    .into(),
            ));
        }
        // Counted before compiling: cheap, and the same with either allocator.
        let footprint = Footprint::of(wasm)
            .and_then(Footprint::check)
            .map_err(incompatible)?;
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| incompatible(format!("not a valid component: {e}")))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let world = World::ALL
            .into_iter()
            .find(|w| exports.iter().any(|e| e == w.export()))
            .ok_or_else(|| {
                incompatible(format!(
                    "it exports {exports:?}, but DCP supports {} worlds {} (exporting {})",
                    World::PACKAGE,
                    World::ALL.map(World::name).join(", "),
                    World::ALL.map(World::export).join(", ")
                ))
            })?;
        for (import, item) in ty.imports(&self.engine) {
            let allowed = import.starts_with("wasi:") || world.imports().contains(&import);
            if !allowed
                || !matches!(
                    item.ty,
                    ComponentItem::ComponentInstance(_) | ComponentItem::Type(_)
                )
            {
                return Err(incompatible(format!(
                    "it imports {import}, which the {world} world of {} does not offer (it offers {} and WASI)",
                    World::PACKAGE,
                    world.imports().join(", ")
                )));
            }
        }
        let linker = &self.linkers[&world];
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| incompatible(format!("{e:#}")))?;
        let exports = match world {
            World::CloudProvider => Exports::Cloud(Box::new(CloudExports {
                cloud: cloud::GuestIndices::new(&pre)
                    .map_err(|e| incompatible(format!("{e:#}")))?,
                // Optional: a cloud whose accounts hold load balancers offers
                // it beside `cloud` (world `cloud-provider-with-load-balancers`).
                load_balancers: exports
                    .iter()
                    .any(|e| e == LOAD_BALANCERS)
                    .then(|| load_balancers::GuestIndices::new(&pre))
                    .transpose()
                    .map_err(|e| incompatible(format!("{e:#}")))?,
            })),
            World::LoadBalancer => Exports::Balancer(
                balancer::GuestIndices::new(&pre).map_err(|e| incompatible(format!("{e:#}")))?,
            ),
            World::RemoteCommand => Exports::Command(
                command::GuestIndices::new(&pre).map_err(|e| incompatible(format!("{e:#}")))?,
            ),
        };
        Ok(Plugin {
            runtime: Arc::clone(self),
            name: name.into(),
            version: version.into(),
            world,
            pre,
            exports,
            memories: u32::try_from(footprint.memories).unwrap_or(MAX_MEMORIES),
            stats: Arc::default(),
        })
    }
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if pooling {
        // Each memory slot reserves address space (not memory) for a whole
        // linear memory; these sizes keep one engine under a terabyte of it.
        // Core instances and tables are cheap: there are enough for every
        // call to use its component's whole share; memories are gated by
        // `Runtime::memory_slots` instead.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * MAX_CORE_INSTANCES)
            .max_core_instances_per_component(MAX_CORE_INSTANCES)
            .total_memories(POOL_MEMORIES)
            .max_memories_per_component(MAX_MEMORIES)
            .max_memories_per_module(MAX_MEMORIES)
            .total_tables(POOL_INSTANCES * MAX_TABLES)
            .max_tables_per_component(MAX_TABLES)
            .max_tables_per_module(MAX_TABLES)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(1 << 30);
        if reset_by_page() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A linker offering WASI and exactly the host interfaces of `world`.
fn linker(engine: &Engine, world: World) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    context::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    if world != World::RemoteCommand {
        http::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        secrets::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    }
    if world != World::CloudProvider {
        ssh::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    }
    Ok(linker)
}

/// The optional interface of a cloud provider that manages its accounts'
/// load balancers, fully qualified.
pub(crate) const LOAD_BALANCERS: &str = "dcp:plugin/load-balancers@0.1.0";

/// A cloud provider's exports.
#[derive(Clone)]
struct CloudExports {
    cloud: cloud::GuestIndices,
    /// None: the provider does not manage load balancers.
    load_balancers: Option<load_balancers::GuestIndices>,
}

/// Where a world's exported functions are, found once at load.
#[derive(Clone)]
enum Exports {
    // Boxed: the cloud world's indices are several times the others'.
    Cloud(Box<CloudExports>),
    Balancer(balancer::GuestIndices),
    Command(command::GuestIndices),
}

/// A compiled, checked plugin version, ready to be called. Calls in flight
/// keep the `Plugin` they started with, so replacing it never disturbs them.
pub struct Plugin {
    runtime: Arc<Runtime>,
    /// The plugin's name.
    pub name: Arc<str>,
    /// The plugin's version.
    pub version: Arc<str>,
    /// The world it targets.
    pub world: World,
    pre: InstancePre<HostState>,
    exports: Exports,
    /// Linear memories one instance of it creates (pooled slots it takes).
    memories: u32,
    stats: Arc<Mutex<Stats>>,
}

/// Calls, failures and recent latencies of one plugin version since start.
#[derive(Debug, Default)]
struct Stats {
    calls: u64,
    errors: u64,
    recent: VecDeque<f64>,
}

/// How many recent call latencies the percentiles are taken over.
const RECENT_CALLS: usize = 1024;

/// A plugin version's call statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Calls made since start.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Median latency of recent calls, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency of recent calls, in milliseconds.
    pub p99_ms: Option<f64>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Plugin {
    /// Calls, failures and latency percentiles since start.
    #[must_use]
    pub fn stats(&self) -> CallStats {
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut sorted: Vec<f64> = stats.recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(i).copied()
        };
        CallStats {
            calls: stats.calls,
            errors: stats.errors,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        }
    }

    fn record(&self, started: Instant, ok: bool) {
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stats.calls += 1;
        if !ok {
            stats.errors += 1;
        }
        if stats.recent.len() == RECENT_CALLS {
            stats.recent.pop_front();
        }
        stats
            .recent
            .push_back(started.elapsed().as_secs_f64() * 1000.0);
    }

    /// The cloud-provider exports; `Incompatible` for other worlds.
    pub(crate) fn cloud(&self, call: &'static str) -> Result<cloud::GuestIndices, Error> {
        match &self.exports {
            Exports::Cloud(exports) => Ok(exports.cloud.clone()),
            _ => Err(self.wrong_world(call, World::CloudProvider)),
        }
    }

    /// Whether this is a cloud provider that manages its accounts' load
    /// balancers.
    #[must_use]
    pub fn manages_load_balancers(&self) -> bool {
        matches!(&self.exports, Exports::Cloud(exports) if exports.load_balancers.is_some())
    }

    /// The load-balancers exports of a cloud provider; `Incompatible` for a
    /// provider without them and for other worlds.
    pub(crate) fn load_balancers(
        &self,
        call: &'static str,
    ) -> Result<load_balancers::GuestIndices, Error> {
        match &self.exports {
            Exports::Cloud(exports) => exports.load_balancers.clone().ok_or_else(|| {
                self.error(
                    call,
                    Failure::Incompatible(format!(
                        "this cloud provider does not manage load balancers (it does not export {LOAD_BALANCERS})"
                    )),
                )
            }),
            _ => Err(self.wrong_world(call, World::CloudProvider)),
        }
    }

    /// The load-balancer exports; `Incompatible` for other worlds.
    pub(crate) fn balancer(&self, call: &'static str) -> Result<balancer::GuestIndices, Error> {
        match &self.exports {
            Exports::Balancer(indices) => Ok(indices.clone()),
            _ => Err(self.wrong_world(call, World::LoadBalancer)),
        }
    }

    /// The remote-command exports; `Incompatible` for other worlds.
    pub(crate) fn command(&self, call: &'static str) -> Result<command::GuestIndices, Error> {
        match &self.exports {
            Exports::Command(indices) => Ok(indices.clone()),
            _ => Err(self.wrong_world(call, World::RemoteCommand)),
        }
    }

    fn wrong_world(&self, call: &'static str, wanted: World) -> Error {
        self.error(
            call,
            Failure::Incompatible(format!(
                "a {} plugin cannot serve as a {wanted} plugin",
                self.world
            )),
        )
    }

    pub(crate) fn error(&self, call: &'static str, failure: Failure) -> Error {
        Error {
            plugin: Arc::clone(&self.name),
            version: Arc::clone(&self.version),
            call,
            failure,
        }
    }

    /// Runs one call: a fresh store with `grants`' limits, instantiation,
    /// then `body`, all under one wall-clock deadline. `body` takes the store
    /// and gives it back with the guest's answer.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        call: &'static str,
        grants: Arc<Grants>,
        body: impl FnOnce(Store<HostState>, Instance) -> GuestFuture<T> + Send + 'static,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let trial = grants.trial;
        let result = self.call_inner(call, grants, body).await;
        self.record(started, result.is_ok() || trial);
        result
    }

    async fn call_inner<T: Send + 'static>(
        &self,
        call: &'static str,
        grants: Arc<Grants>,
        body: impl FnOnce(Store<HostState>, Instance) -> GuestFuture<T> + Send + 'static,
    ) -> Result<T, Error> {
        let limits = grants.limits;
        // Waiting for a slot does not count against the call's own time limit.
        let _slot = Arc::clone(&self.runtime.slots)
            .acquire_owned()
            .await
            .map_err(|_| self.error(call, Failure::Timeout(limits.timeout)))?;
        let _memory_slots = match &self.runtime.memory_slots {
            Some(memory_slots) => Some(
                Arc::clone(memory_slots)
                    .acquire_many_owned(self.memories)
                    .await
                    .map_err(|_| self.error(call, Failure::Timeout(limits.timeout)))?,
            ),
            None => None,
        };
        let info = CallInfo {
            plugin: format!("{}@{}", self.name, self.version),
            call,
            call_id: uuid::Uuid::now_v7().to_string(),
            deadline: tokio::time::Instant::now() + limits.timeout,
            deadline_unix_ms: unix_ms_after(limits.timeout),
        };
        let mut store = Store::new(&self.runtime.engine, HostState::new(info, grants));
        store.limiter(|state| &mut state.meter);
        // Yield to tokio at every tick: a spinning plugin then shares the
        // thread, and the timeout below can stop it between ticks.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let pre = self.pre.clone();
        let run = async move {
            match pre.instantiate_async(&mut store).await {
                Ok(instance) => body(store, instance).await,
                Err(e) => (store, Err(e)),
            }
        };
        let (store, result) = tokio::time::timeout(limits.timeout, run)
            .await
            .map_err(|_| self.error(call, Failure::Timeout(limits.timeout)))?;
        let state = store.data();
        if state.logs_dropped > 0 {
            tracing::warn!(plugin = %self.name, call, dropped = state.logs_dropped, "plugin log lines over the limit were dropped");
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            // A plugin refused a capability usually reports it as its own
            // error; say what the host refused, which is the real cause.
            Ok(Err(_)) if state.denied.is_some() => Err(self.error(
                call,
                Failure::Denied(state.denied.clone().unwrap_or_default()),
            )),
            Ok(Err(plugin_error)) => Err(self.error(call, Failure::Plugin(Box::new(plugin_error)))),
            Err(e) => Err(self.error(call, classify(&e, state))),
        }
    }
}

/// Calls one export of a plugin bound to grants: `$self` has `plugin` and
/// `grants` fields; `$world` names the accessor of the world's exports. Loads
/// the guest from a fresh instance and runs `$call` with the store as
/// `$store` and the guest as `$guest`.
macro_rules! guest_call {
    ($self:ident, $world:ident, $name:literal, |$guest:ident, $store:ident| $call:expr) => {{
        let indices = $self.plugin.$world($name)?;
        $self
            .plugin
            .call(
                $name,
                std::sync::Arc::clone(&$self.grants),
                move |mut $store, instance| {
                    Box::pin(async move {
                        let result = match indices.load(&mut $store, &instance) {
                            Ok($guest) => $call.await,
                            Err(e) => Err(e),
                        };
                        ($store, result)
                    })
                },
            )
            .await
    }};
}
pub(crate) use guest_call;

/// What a guest call gives back: the store, and the guest's answer.
pub(crate) type GuestFuture<T> = BoxFuture<(
    Store<HostState>,
    wasmtime::Result<Result<T, super::PluginError>>,
)>;

/// Tells what a failed call ran into, from the error and what the host saw.
fn classify(err: &wasmtime::Error, state: &HostState) -> Failure {
    if state.meter.hit {
        return Failure::OutOfMemory {
            limit: state.meter.limit(),
        };
    }
    let (stderr, _) = state.stderr.contents();
    let text = format!("{err:?}");
    if text.contains("concurrent instance limit") || text.contains("maximum concurrent") {
        return Failure::Host("too many plugin calls at once; try again".into());
    }
    let mut message = err
        .downcast_ref::<wasmtime::Trap>()
        .map_or_else(|| format!("{err:#}"), |trap| trap.to_string());
    // Rust's panic report is "thread … panicked at file:line:" then the message.
    let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked at"));
    if let Some(at) = lines.next() {
        let what = lines.next().unwrap_or_default();
        message = format!("{message}; {} {}", at.trim(), what.trim());
    } else if !stderr.trim().is_empty() {
        let tail: String = stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        message = format!("{message}; stderr: {}", tail.trim());
    }
    Failure::Trap(message)
}
