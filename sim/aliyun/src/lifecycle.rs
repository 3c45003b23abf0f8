//! The asynchronous instance state machine (reference §5.5), on real time:
//!
//! ```text
//! RunInstances   Pending ─pending (+ hold)→ Starting ─starting→ Running
//! StopInstance   Running → Stopping ─stopping→ Stopped
//! StartInstance  Stopped → Starting ─starting→ Running
//! DeleteInstance Stopped (or Running with Force) ─deleting→ gone
//! ```
//!
//! Each transition is a task that sleeps, then applies its step only if no
//! API call changed the instance meanwhile (its generation is unchanged).
//! In fleet mode an instance's `sshd` runs exactly while it is `Running`:
//! started (and listening) before the status says so, killed as soon as the
//! instance leaves it.

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    cloud::{Cloud, lock},
    fleet::SshdPlan,
    world::{Instance, InstanceStatus},
};

impl Cloud {
    /// Schedules a new instance's boot: Pending → Starting → Running.
    pub(crate) fn launch(self: &Arc<Self>, instance: &Instance) {
        let cloud = Arc::clone(self);
        let (id, generation) = (instance.id.clone(), instance.generation);
        self.background(async move { cloud.boot(id, generation, true).await });
    }

    /// StartInstance on a Stopped instance: Starting → Running.
    pub(crate) fn begin_start(self: &Arc<Self>, instance: &mut Instance) {
        instance.status = InstanceStatus::Starting;
        instance.generation += 1;
        let cloud = Arc::clone(self);
        let (id, generation) = (instance.id.clone(), instance.generation);
        self.background(async move { cloud.boot(id, generation, false).await });
    }

    /// StopInstance on a Running instance: Stopping → Stopped.
    pub(crate) fn begin_stop(self: &Arc<Self>, instance: &mut Instance) {
        instance.status = InstanceStatus::Stopping;
        instance.generation += 1;
        self.stop_sshd(&instance.id);
        let cloud = Arc::clone(self);
        let (id, generation) = (instance.id.clone(), instance.generation);
        self.background(async move {
            if cloud.sleep(cloud.delays.stopping).await {
                cloud.step(
                    &id,
                    generation,
                    InstanceStatus::Stopping,
                    InstanceStatus::Stopped,
                );
            }
        });
    }

    /// DeleteInstance: a running instance goes down at once (Stopping), and
    /// after the delete delay the instance is gone from every answer.
    pub(crate) fn begin_delete(self: &Arc<Self>, instance: &mut Instance) {
        instance.deleting = true;
        if instance.status == InstanceStatus::Running {
            instance.status = InstanceStatus::Stopping;
        }
        instance.generation += 1;
        self.stop_sshd(&instance.id);
        let cloud = Arc::clone(self);
        let (id, generation) = (instance.id.clone(), instance.generation);
        self.background(async move {
            if cloud.sleep(cloud.delays.deleting).await {
                lock(&cloud.world)
                    .instances
                    .retain(|i| !(i.id == id && i.generation == generation));
            }
        });
    }

    /// A public address was allocated to a running instance: its `sshd`
    /// starts over to listen there too.
    pub(crate) fn relisten(self: &Arc<Self>, instance: &Instance) {
        let Some(plan) = Self::plan(instance) else {
            return;
        };
        if self.fleet.is_none() {
            return;
        }
        let cloud = Arc::clone(self);
        let (id, generation) = (instance.id.clone(), instance.generation);
        self.background(async move {
            cloud.run_sshd(&plan).await;
            let still_running = lock(&cloud.world)
                .instance(&id)
                .is_some_and(|i| i.generation == generation && i.status == InstanceStatus::Running);
            if !still_running {
                cloud.stop_sshd(&id);
            }
        });
    }

    async fn boot(self: Arc<Self>, id: String, generation: u64, pending: bool) {
        if pending {
            if !self.sleep(self.delays.pending).await || !self.held_pending().await {
                return;
            }
            if !self.step(
                &id,
                generation,
                InstanceStatus::Pending,
                InstanceStatus::Starting,
            ) {
                return;
            }
        }
        if !self.sleep(self.delays.starting).await {
            return;
        }
        let plan = {
            let world = lock(&self.world);
            match world.instance(&id) {
                Some(i) if i.generation == generation && i.status == InstanceStatus::Starting => {
                    Self::plan(i)
                }
                _ => return,
            }
        };
        if let Some(plan) = &plan {
            self.run_sshd(plan).await;
        }
        let now = self.clock.now();
        let running = {
            let mut world = lock(&self.world);
            match world.instance_mut(&id) {
                Some(i) if i.generation == generation && i.status == InstanceStatus::Starting => {
                    i.status = InstanceStatus::Running;
                    i.has_run = true;
                    i.started_at = Some(now);
                    true
                }
                _ => false,
            }
        };
        if !running && plan.is_some() {
            self.stop_sshd(&id);
        }
    }

    /// What the instance's `sshd` needs, if it gets one.
    fn plan(instance: &Instance) -> Option<SshdPlan> {
        instance.in_fleet.then(|| SshdPlan {
            instance: instance.id.clone(),
            addresses: instance.addresses(),
            authorized_key: instance.authorized_key.clone(),
        })
    }

    async fn run_sshd(&self, plan: &SshdPlan) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        // The cloud API still reports Running: a machine whose sshd is broken
        // looks like that from outside too, and the log says why.
        if let Err(e) = fleet.start(plan).await {
            tracing::error!("{e}");
        }
    }

    fn stop_sshd(&self, id: &str) {
        if let Some(fleet) = &self.fleet {
            fleet.stop(id);
        }
    }

    /// Moves instance `id` from `from` to `to` unless an API call changed
    /// it since `generation`; answers whether it moved.
    fn step(&self, id: &str, generation: u64, from: InstanceStatus, to: InstanceStatus) -> bool {
        let mut world = lock(&self.world);
        match world.instance_mut(id) {
            Some(i) if i.generation == generation && i.status == from => {
                i.status = to;
                true
            }
            _ => false,
        }
    }

    /// Waits while new instances are held `Pending`; false on shutdown.
    async fn held_pending(&self) -> bool {
        let mut hold = self.hold_pending.subscribe();
        tokio::select! {
            () = self.closing.cancelled() => false,
            released = hold.wait_for(|held| !held) => released.is_ok(),
        }
    }

    /// Sleeps `delay` unless the simulator shuts down first (then false).
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.closing.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    pub(crate) fn background(&self, work: impl Future<Output = ()> + Send + 'static) {
        let closing = self.closing.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = closing.cancelled() => {}
                () = work => {}
            }
        });
    }
}
