//! The handle tests and the binary hold: starts the endpoints, exposes the
//! knobs (faults, clock) and what happened (instances, call counts), and
//! cleans up — every fleet `sshd` dies with it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    Error,
    auth::{Auth, Clock},
    balancers::LoadBalancerView,
    catalog,
    cloud::{Cloud, lock},
    faults::{Faults, Injector},
    fleet::Fleet,
    gateway::{self, Product},
    options::Options,
    quirks::Quirks,
    traffic::Plane,
    transport::{SeverableListener, Severer},
    world::{Disk, Instance, InstanceStatus, InstanceView, World},
};

/// A running simulator: ECS, VPC and SLB endpoints on their own addresses.
///
/// Dropping it stops serving and kills every fleet `sshd`; [`Self::shutdown`]
/// does the same and also waits for them to exit.
#[derive(Debug)]
pub struct Simulator {
    cloud: Arc<Cloud>,
    ecs_addr: SocketAddr,
    vpc_addr: SocketAddr,
    slb_addr: SocketAddr,
    servers: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds the endpoints and starts serving. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// An address cannot be bound, or fleet mode cannot be set up (no
    /// `/usr/sbin/sshd`, its directories cannot be created).
    pub async fn start(options: Options) -> Result<Self, Error> {
        let fleet = options
            .fleet
            .as_ref()
            .map(|f| Fleet::new(&f.dir))
            .transpose()?;
        let ecs = bind(options.ecs_addr).await?;
        let vpc = bind(options.vpc_addr).await?;
        let slb = bind(options.slb_addr).await?;
        let ecs_addr = local_addr(&ecs, options.ecs_addr)?;
        let vpc_addr = local_addr(&vpc, options.vpc_addr)?;
        let slb_addr = local_addr(&slb, options.slb_addr)?;
        let cloud = Arc::new(Cloud {
            world: Mutex::new(World::default()),
            auth: Auth::new(&options.accounts),
            clock: Clock::default(),
            faults: Mutex::new(Injector::new(options.seed)),
            quirks: Mutex::new(Quirks::new(options.quirks, options.seed)),
            calls: Mutex::new(HashMap::new()),
            delays: options.delays,
            hold_pending: tokio::sync::watch::Sender::new(false),
            fleet,
            traffic: Plane::default(),
            closing: CancellationToken::new(),
            ecs_host: ecs_addr.to_string(),
        });
        seed_instances(&cloud, options.extra_instances)?;
        let servers = vec![
            serve(
                ecs,
                gateway::router(Arc::clone(&cloud), Product::Ecs),
                &cloud.closing,
            ),
            serve(
                vpc,
                gateway::router(Arc::clone(&cloud), Product::Vpc),
                &cloud.closing,
            ),
            serve(
                slb,
                gateway::router(Arc::clone(&cloud), Product::Slb),
                &cloud.closing,
            ),
        ];
        tracing::info!("aliyun-sim: ECS on {ecs_addr}, VPC on {vpc_addr}, SLB on {slb_addr}");
        Ok(Self {
            cloud,
            ecs_addr,
            vpc_addr,
            slb_addr,
            servers,
        })
    }

    /// The ECS endpoint, e.g. `http://127.21.0.1:8701`.
    #[must_use]
    pub fn ecs_endpoint(&self) -> String {
        format!("http://{}", self.ecs_addr)
    }

    /// The VPC endpoint, e.g. `http://127.21.0.2:8702`.
    #[must_use]
    pub fn vpc_endpoint(&self) -> String {
        format!("http://{}", self.vpc_addr)
    }

    /// The SLB endpoint, e.g. `http://127.21.0.3:8703`.
    #[must_use]
    pub fn slb_endpoint(&self) -> String {
        format!("http://{}", self.slb_addr)
    }

    /// The address the ECS endpoint listens on.
    #[must_use]
    pub fn ecs_addr(&self) -> SocketAddr {
        self.ecs_addr
    }

    /// The address the VPC endpoint listens on.
    #[must_use]
    pub fn vpc_addr(&self) -> SocketAddr {
        self.vpc_addr
    }

    /// Replaces the injected faults (the generator keeps its seeded state).
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.cloud.faults).set(faults);
    }

    /// The injected faults.
    #[must_use]
    pub fn faults(&self) -> Faults {
        lock(&self.cloud.faults).faults()
    }

    /// Moves the simulator's clock `secs` away from the system clock (it
    /// judges request `Timestamp`s and stamps creation times with it).
    pub fn set_clock_offset(&self, secs: i64) {
        self.cloud.clock.set_offset(secs);
    }

    /// Keeps new instances `Pending` (`true`) past their pending delay until
    /// released (`false`), when they go on booting: the window in which a
    /// caller has asked for an instance the cloud has not made yet.
    pub fn hold_pending(&self, hold: bool) {
        self.cloud.hold_pending.send_replace(hold);
    }

    /// Every instance the API still reports, in creation order. One being
    /// deleted is listed until its delete delay is over, as in the API.
    #[must_use]
    pub fn instances(&self) -> Vec<InstanceView> {
        self.cloud.views()
    }

    /// Every load balancer, in creation order.
    #[must_use]
    pub fn load_balancers(&self) -> Vec<LoadBalancerView> {
        self.cloud.balancer_views()
    }

    /// How many requests for `action` passed authentication — including
    /// those then failed by an injected fault, so retries can be counted.
    #[must_use]
    pub fn calls(&self, action: &str) -> usize {
        lock(&self.cloud.calls).get(action).copied().unwrap_or(0)
    }

    /// Stops serving, kills every fleet `sshd` and waits for them to exit.
    pub async fn shutdown(mut self) {
        self.cloud.closing.cancel();
        if let Some(fleet) = &self.cloud.fleet {
            for mut child in fleet.close() {
                if let Err(e) = child.wait().await {
                    tracing::debug!("waiting for an sshd: {e}");
                }
            }
        }
        for mut server in self.servers.drain(..) {
            // Graceful shutdown lets a reply in flight finish, briefly.
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.cloud.closing.cancel();
        if let Some(fleet) = &self.cloud.fleet {
            // Killed already; dropping them lets tokio reap them.
            drop(fleet.close());
        }
        for server in &self.servers {
            server.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<SeverableListener, Error> {
    TcpListener::bind(addr)
        .await
        .map(SeverableListener)
        .map_err(|source| Error::Bind { addr, source })
}

fn local_addr(listener: &SeverableListener, asked: SocketAddr) -> Result<SocketAddr, Error> {
    listener.0.local_addr().map_err(|source| Error::Bind {
        addr: asked,
        source,
    })
}

fn serve(
    listener: SeverableListener,
    router: axum::Router,
    closing: &CancellationToken,
) -> JoinHandle<()> {
    let closing = closing.clone();
    tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<Severer>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(closing.cancelled_owned())
            .await
        {
            tracing::error!("serving: {e}");
        }
    })
}

/// `count` Running instances in cn-hangzhou, across its zones, so listings
/// have more than one page. They never get an `sshd`.
fn seed_instances(cloud: &Cloud, count: usize) -> Result<(), Error> {
    let region = &catalog::REGIONS[0];
    let (Some(image), Some(instance_type)) =
        (catalog::IMAGES.first(), catalog::INSTANCE_TYPES.first())
    else {
        return Ok(());
    };
    let now = cloud.clock.now();
    let mut world = lock(&cloud.world);
    for n in 0..count {
        let zone = &region.zones[n % region.zones.len()];
        let id = world.new_instance_id(region);
        let private_ip = world.allocate_private(zone, false).ok_or_else(|| {
            Error::io(
                format!("seeding instance {n}"),
                std::io::Error::other("the vSwitch is out of addresses"),
            )
        })?;
        world.instances.push(Instance {
            name: format!("seed-{:04}", n + 1),
            host_name: format!("iZ{}Z", &id[2..]),
            description: "Seeded by aliyun-sim.".to_owned(),
            region,
            zone,
            security_groups: vec![region.security_group_id.to_owned()],
            instance_type,
            image,
            status: InstanceStatus::Running,
            generation: 0,
            deleting: false,
            private_ip,
            public_ip: None,
            has_run: true,
            internet_charge_type: "PayByTraffic".to_owned(),
            bandwidth_out: 0,
            instance_charge_type: "PostPaid".to_owned(),
            key_pair_name: None,
            authorized_key: None,
            system_disk: Disk {
                category: "cloud_efficiency".to_owned(),
                size_gib: 40,
            },
            data_disks: Vec::new(),
            tags: Vec::new(),
            client_token: None,
            deletion_protection: false,
            created_at: now,
            started_at: Some(now),
            in_fleet: false,
            id,
        });
    }
    Ok(())
}
