//! The changing part of the simulated cloud: instances, key pairs, load
//! balancers and the ClientTokens already answered, plus address
//! allocation.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::Ipv4Addr,
    sync::atomic::{AtomicU32, Ordering},
};

use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use crate::{
    balancers::LoadBalancer,
    catalog::{self, Zone},
    fleet,
};

/// An instance's status, as `DescribeInstances` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum InstanceStatus {
    /// Being created (after RunInstances).
    Pending,
    /// Booting; in fleet mode its `sshd` is being started.
    Starting,
    /// Up; in fleet mode its `sshd` accepts connections.
    Running,
    /// Shutting down (StopInstance, or a forced DeleteInstance).
    Stopping,
    /// Down.
    Stopped,
}

impl InstanceStatus {
    /// The API's spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
        }
    }

    /// Parses the API's spelling.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Starting,
            Self::Running,
            Self::Stopping,
            Self::Stopped,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A live instance as tests and `GET /_sim/instances` see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    /// `i-…`.
    pub id: String,
    /// `InstanceName`.
    pub name: String,
    /// `RegionId`.
    pub region: String,
    /// The current status.
    pub status: InstanceStatus,
    /// The VPC address, 127.21.x.y; fleet mode's `sshd` listens on it.
    pub private_ip: Ipv4Addr,
    /// The public address (also 127.21.x.y, so it is reachable too), once
    /// the instance has run with bandwidth or had one allocated.
    pub public_ip: Option<Ipv4Addr>,
    /// The key pair it was created with.
    pub key_pair_name: Option<String>,
    /// The ClientToken of the RunInstances call that created it.
    pub client_token: Option<String>,
    /// Creation time, seconds since the epoch on the simulator's clock.
    pub created_at: i64,
}

/// A disk, as RunInstances describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Disk {
    pub(crate) category: String,
    pub(crate) size_gib: u32,
}

/// An instance and everything DescribeInstances reports about it.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) host_name: String,
    pub(crate) description: String,
    pub(crate) region: &'static catalog::Region,
    pub(crate) zone: &'static Zone,
    pub(crate) security_groups: Vec<String>,
    pub(crate) instance_type: &'static catalog::InstanceType,
    pub(crate) image: &'static catalog::Image,
    pub(crate) status: InstanceStatus,
    /// Bumped by every API-initiated change, so a transition scheduled
    /// before it knows to give up.
    pub(crate) generation: u64,
    /// DeleteInstance accepted; gone after the delete delay.
    pub(crate) deleting: bool,
    pub(crate) private_ip: Ipv4Addr,
    /// Reserved at creation when there is bandwidth (so the first `sshd`
    /// already listens on it), shown once the instance has run.
    pub(crate) public_ip: Option<Ipv4Addr>,
    pub(crate) has_run: bool,
    pub(crate) internet_charge_type: String,
    pub(crate) bandwidth_out: u32,
    pub(crate) instance_charge_type: String,
    pub(crate) key_pair_name: Option<String>,
    /// The key pair's public key when the instance was created: deleting
    /// the key pair later does not lock anyone out, as on Aliyun.
    pub(crate) authorized_key: Option<String>,
    pub(crate) system_disk: Disk,
    pub(crate) data_disks: Vec<Disk>,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) client_token: Option<String>,
    pub(crate) deletion_protection: bool,
    pub(crate) created_at: i64,
    pub(crate) started_at: Option<i64>,
    /// Seeded instances never get an `sshd`, even in fleet mode.
    pub(crate) in_fleet: bool,
}

impl Instance {
    pub(crate) fn view(&self) -> InstanceView {
        InstanceView {
            id: self.id.clone(),
            name: self.name.clone(),
            region: self.region.id.to_owned(),
            status: self.status,
            private_ip: self.private_ip,
            public_ip: self.visible_public_ip(),
            key_pair_name: self.key_pair_name.clone(),
            client_token: self.client_token.clone(),
            created_at: self.created_at,
        }
    }

    pub(crate) fn visible_public_ip(&self) -> Option<Ipv4Addr> {
        self.public_ip.filter(|_| self.has_run)
    }

    /// Every address this instance answers on.
    pub(crate) fn addresses(&self) -> Vec<Ipv4Addr> {
        std::iter::once(self.private_ip)
            .chain(self.public_ip)
            .collect()
    }
}

/// An imported key pair.
#[derive(Clone, Debug)]
pub(crate) struct KeyPair {
    pub(crate) region: &'static str,
    pub(crate) name: String,
    pub(crate) public_key: String,
    pub(crate) fingerprint: String,
    pub(crate) created_at: i64,
}

/// A RunInstances answer remembered under its ClientToken, with the
/// parameters that produced it.
#[derive(Clone, Debug)]
pub(crate) struct Answered {
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) reply: Value,
}

/// All mutable state, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// In creation order, which is the order listings use.
    pub(crate) instances: Vec<Instance>,
    pub(crate) key_pairs: Vec<KeyPair>,
    /// By (AccessKeyId, ClientToken).
    pub(crate) tokens: HashMap<(String, String), Answered>,
    /// In creation order, which is the order listings use.
    pub(crate) load_balancers: Vec<LoadBalancer>,
}

// Address counters shared by every simulator in the process: fleet-mode
// simulators bind real sockets on these addresses, and tests run several
// simulators at once.
static NEXT_PRIVATE: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
static NEXT_PUBLIC: AtomicU32 = AtomicU32::new(0);

/// Public addresses: 127.21.128.0/17, away from every vSwitch.
const PUBLIC_BASE: u32 = (127 << 24) | (21 << 16) | (128 << 8);
const PUBLIC_CAPACITY: u32 = (1 << 15) - 2;

impl World {
    pub(crate) fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id == id)
    }

    pub(crate) fn instance_mut(&mut self, id: &str) -> Option<&mut Instance> {
        self.instances.iter_mut().find(|i| i.id == id)
    }

    fn in_use(&self, ip: Ipv4Addr) -> bool {
        self.instances
            .iter()
            .any(|i| i.private_ip == ip || i.public_ip == Some(ip))
    }

    /// Instances in a vSwitch, for its free-address count.
    pub(crate) fn count_in(&self, zone: &Zone) -> usize {
        self.instances
            .iter()
            .filter(|i| i.zone.id == zone.id)
            .count()
    }

    /// A private address in `zone`'s vSwitch no live instance has. With
    /// `probe` (fleet mode) also one no other process listens on port 22 of,
    /// e.g. a simulator in another test binary.
    pub(crate) fn allocate_private(&self, zone: &Zone, probe: bool) -> Option<Ipv4Addr> {
        let counter = &NEXT_PRIVATE[usize::from(zone.block) % NEXT_PRIVATE.len()];
        (0..Zone::CAPACITY)
            .map(|_| zone.address(counter.fetch_add(1, Ordering::Relaxed)))
            .find(|ip| !self.in_use(*ip) && (!probe || port_22_free(*ip)))
    }

    /// A public address, under the same rules.
    pub(crate) fn allocate_public(&self, probe: bool) -> Option<Ipv4Addr> {
        (0..PUBLIC_CAPACITY)
            .map(|_| {
                let n = NEXT_PUBLIC.fetch_add(1, Ordering::Relaxed) % PUBLIC_CAPACITY;
                Ipv4Addr::from(PUBLIC_BASE + 1 + n)
            })
            .find(|ip| !self.in_use(*ip) && (!probe || port_22_free(*ip)))
    }

    /// A new instance id in Aliyun's shape: `i-`, the region's prefix, then
    /// lowercase letters and digits.
    pub(crate) fn new_instance_id(&self, region: &catalog::Region) -> String {
        new_id("i", region, |id| self.instance(id).is_some())
    }
}

/// A new id of a `kind` of resource in Aliyun's shape: `kind-`, the
/// region's prefix, then 17 lowercase letters and digits; one `taken`
/// says is in use is drawn again.
pub(crate) fn new_id(kind: &str, region: &catalog::Region, taken: impl Fn(&str) -> bool) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    loop {
        let tail: String = (0..17)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect();
        let id = format!("{kind}-{}{tail}", region.id_prefix);
        if !taken(&id) {
            return id;
        }
    }
}

/// Whether nothing listens on `ip:22`. Only "address in use" counts as
/// taken; `Fleet::new` already made sure port 22 can be bound at all.
fn port_22_free(ip: Ipv4Addr) -> bool {
    match fleet::port_22_bindable(ip) {
        Ok(()) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_inside_their_blocks_and_never_touch_the_endpoints() {
        let world = World::default();
        for region in catalog::REGIONS {
            for zone in region.zones {
                let ip = world.allocate_private(zone, false).unwrap();
                let [a, b, c, _] = ip.octets();
                assert_eq!((a, b), (127, 21));
                assert_eq!(c / 16, zone.block, "{ip} in {}", zone.cidr());
                assert!(c >= 16);
            }
        }
        let public = world.allocate_public(false).unwrap();
        assert!(public.octets()[2] >= 128, "{public}");
        assert_eq!(
            catalog::REGIONS[0].zones[0].address(Zone::CAPACITY - 1),
            Ipv4Addr::new(127, 21, 31, 252)
        );
    }
}
