//! Login throttling: growing lock-outs per user name and per client address,
//! and a bound on how many password hashes run or wait at once.
//!
//! Everything here lives in memory, in tables of bounded size: an attacker
//! spraying user names or addresses evicts the stalest entries rather than
//! growing the process. Each replica throttles on its own; a restart forgets.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argon2::Block;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::lock;

/// How logins are throttled and hashing is bounded.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Password hashes computed at once (each takes ~19 MiB while it runs).
    pub concurrency: usize,
    /// Logins that may wait for a hashing slot; beyond them, refused at once.
    pub queue: usize,
    /// Failed logins a user name gets before it is locked out.
    pub user_free_failures: u32,
    /// Failed logins a client address gets before it is locked out (more
    /// than a user's: many people may share one address).
    pub address_free_failures: u32,
    /// The first lock-out; each further failure doubles it.
    pub lockout: Duration,
    /// The longest lock-out; also how long a name or address must stay
    /// quiet for its failures to be forgotten.
    pub max_lockout: Duration,
    /// Entries kept per table (user names, addresses).
    pub max_entries: usize,
    /// The longest a locked-out login's refusal is held before it is
    /// answered: a client that ignores `Retry-After` then asks about once
    /// per tarpit per connection instead of as fast as it can.
    pub tarpit: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            queue: 32,
            user_free_failures: 5,
            address_free_failures: 20,
            lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(15 * 60),
            max_entries: 10_000,
            tarpit: Duration::from_secs(1),
        }
    }
}

/// Why a login is turned away before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user name or the address is locked out for this long.
    Locked(Duration),
    /// Every hashing slot and queue place is taken.
    Busy,
}

/// A user's lock-out state, as administrators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    /// Failed logins counted against the user name.
    pub failures: u32,
    /// How long it stays locked, if it is.
    pub locked_for: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

/// Failure counts by key, never more than `cap` of them.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    cap: usize,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        self.entries
            .get(key)?
            .locked_until?
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    /// Counts a failure; locks the key once it is past `free` failures, for
    /// `lockout` doubled per failure beyond, at most `max`.
    fn fail(&mut self, key: K, free: u32, policy: &Policy, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.cap {
            self.make_room(policy, now);
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last_failure: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if entry.failures > free {
            let doublings = (entry.failures - free - 1).min(31);
            let lock = policy
                .lockout
                .saturating_mul(1 << doublings)
                .min(policy.max_lockout);
            entry.locked_until = Some(now + lock);
        }
    }

    /// Forgets entries quiet for `max_lockout`; if none are, the stalest one.
    /// A full scan, but only when the table is full, and cheap next to the
    /// password hash every failure costs anyway.
    fn make_room(&mut self, policy: &Policy, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            now.saturating_duration_since(e.last_failure) < policy.max_lockout
                || e.locked_until.is_some_and(|until| until > now)
        });
        if self.entries.len() < before {
            return;
        }
        if let Some(stalest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_failure)
            .map(|(k, _)| *k)
        {
            self.entries.remove(&stalest);
        }
    }
}

/// The key of a client address: IPv6 clients get a whole /64, which is what
/// one of them usually controls.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Throttles logins per user name and per client address, and bounds the
/// password hashing they cause.
#[derive(Debug)]
pub struct Throttle {
    policy: Policy,
    /// User names are kept as keyed hashes: a name can be as long as a
    /// request body, and the tables must stay small.
    names: RandomState,
    users: Mutex<Table<u64>>,
    addresses: Mutex<Table<IpAddr>>,
    /// Places for logins past the lock-out check: running or waiting.
    admitted: Arc<Semaphore>,
    /// Slots for hashing itself.
    hashing: Arc<Semaphore>,
    /// The hashing slots' working memory, kept between hashes.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

/// A hashing slot: hash while holding it, in its memory.
#[derive(Debug)]
pub struct HashingSlot {
    _permit: OwnedSemaphorePermit,
    memory: Vec<Block>,
    pool: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl HashingSlot {
    /// At least `blocks` blocks of working memory, allocated on the slot's
    /// first hash and reused by the next ones. Argon2's first pass writes
    /// every block before reading it, so what an earlier hash left is
    /// never read.
    pub fn memory(&mut self, blocks: usize) -> &mut [Block] {
        if self.memory.len() < blocks {
            self.memory = vec![Block::default(); blocks];
        }
        &mut self.memory[..blocks]
    }
}

impl Drop for HashingSlot {
    fn drop(&mut self) {
        // At most one buffer per slot comes back: the pool stays bounded.
        let memory = std::mem::take(&mut self.memory);
        if !memory.is_empty() {
            lock(&self.pool).push(memory);
        }
    }
}

/// A login's place in line; hold it until its password is checked.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Throttle {
    /// A throttle following `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        let concurrency = policy.concurrency.max(1);
        Self {
            users: Mutex::new(Table::new(policy.max_entries)),
            addresses: Mutex::new(Table::new(policy.max_entries)),
            names: RandomState::new(),
            admitted: Arc::new(Semaphore::new(concurrency + policy.queue)),
            hashing: Arc::new(Semaphore::new(concurrency)),
            memory: Arc::default(),
            policy,
        }
    }

    fn user_key(&self, username: &str) -> u64 {
        self.names.hash_one(username)
    }

    /// Lets a login for `username` from `addr` go on to its password check,
    /// or says why not.
    pub fn admit(&self, username: &str, addr: Option<IpAddr>) -> Result<Admission, Refusal> {
        let now = Instant::now();
        let user = lock(&self.users).locked_for(&self.user_key(username), now);
        let address = addr.and_then(|a| lock(&self.addresses).locked_for(&address_key(a), now));
        if let Some(wait) = user.max(address) {
            return Err(Refusal::Locked(wait));
        }
        Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| Refusal::Busy)
    }

    /// How long to hold a refusal for a lock-out that has `left` to run.
    pub fn tarpit(&self, left: Duration) -> Duration {
        left.min(self.policy.tarpit)
    }

    /// Waits for a hashing slot; hashing happens while it is held.
    /// `None` only if the slots were closed, which nothing does.
    pub async fn hashing_slot(&self) -> Option<HashingSlot> {
        let permit = Arc::clone(&self.hashing).acquire_owned().await.ok()?;
        Some(HashingSlot {
            _permit: permit,
            memory: lock(&self.memory).pop().unwrap_or_default(),
            pool: Arc::clone(&self.memory),
        })
    }

    /// Counts a wrong password against `username` and `addr`.
    pub fn failed(&self, username: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let policy = &self.policy;
        lock(&self.users).fail(
            self.user_key(username),
            policy.user_free_failures,
            policy,
            now,
        );
        if let Some(addr) = addr {
            lock(&self.addresses).fail(
                address_key(addr),
                policy.address_free_failures,
                policy,
                now,
            );
        }
    }

    /// A right password for `username`: refused while the name or address
    /// is locked (failures racing it may have locked them), otherwise the
    /// name's failures are forgotten. The address's are not: one account an
    /// attacker owns must not clear their address for guessing others.
    pub fn succeeded(&self, username: &str, addr: Option<IpAddr>) -> Result<(), Refusal> {
        let now = Instant::now();
        let key = self.user_key(username);
        let mut users = lock(&self.users);
        let address = addr.and_then(|a| lock(&self.addresses).locked_for(&address_key(a), now));
        if let Some(wait) = users.locked_for(&key, now).max(address) {
            return Err(Refusal::Locked(wait));
        }
        users.entries.remove(&key);
        Ok(())
    }

    /// What failures and lock-out `username` has.
    #[must_use]
    pub fn state(&self, username: &str) -> LockState {
        let now = Instant::now();
        let users = lock(&self.users);
        let key = self.user_key(username);
        LockState {
            failures: users.entries.get(&key).map_or(0, |e| e.failures),
            locked_for: users.locked_for(&key, now),
        }
    }

    /// Forgets `username`'s failures and lock-out (an administrator's unlock).
    pub fn unlock(&self, username: &str) {
        lock(&self.users).entries.remove(&self.user_key(username));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            concurrency: 1,
            queue: 1,
            user_free_failures: 2,
            address_free_failures: 4,
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(60),
            max_entries: 3,
            tarpit: Duration::ZERO,
        }
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));

    #[test]
    fn lockouts_start_after_the_free_failures_and_double() {
        let throttle = Throttle::new(policy());
        for _ in 0..2 {
            throttle.failed("alice", None);
        }
        assert!(throttle.admit("alice", None).is_ok());
        throttle.failed("alice", None);
        let Err(Refusal::Locked(first)) = throttle.admit("alice", None) else {
            panic!("locked after the free failures")
        };
        assert!(first > Duration::from_secs(9) && first <= Duration::from_secs(10));
        throttle.failed("alice", None);
        let Err(Refusal::Locked(second)) = throttle.admit("alice", None) else {
            panic!("still locked")
        };
        assert!(second > Duration::from_secs(19), "{second:?}");
        for _ in 0..10 {
            throttle.failed("alice", None);
        }
        assert_eq!(
            throttle
                .state("alice")
                .locked_for
                .map(|d| d.as_secs() <= 60),
            Some(true)
        );
        // Someone else is not locked by it; an unlock frees alice.
        assert!(throttle.admit("bob", None).is_ok());
        throttle.unlock("alice");
        assert_eq!(throttle.state("alice"), LockState::default());
    }

    #[test]
    fn a_right_password_during_a_lockout_is_refused() {
        let throttle = Throttle::new(policy());
        for _ in 0..3 {
            throttle.failed("alice", HOME);
        }
        assert!(matches!(
            throttle.succeeded("alice", HOME),
            Err(Refusal::Locked(_))
        ));
    }

    #[test]
    fn addresses_lock_across_user_names_and_ipv6_by_prefix() {
        let throttle = Throttle::new(policy());
        let v6 = |last: u16| Some(IpAddr::V6([0x2001, 0xdb8, 0, 1, 0, 0, 0, last].into()));
        for n in 0..5 {
            throttle.failed(&format!("user{n}"), v6(n));
        }
        assert!(matches!(
            throttle.admit("fresh", v6(99)),
            Err(Refusal::Locked(_))
        ));
        assert!(throttle.admit("fresh", HOME).is_ok());
    }

    #[test]
    fn tables_stay_bounded_under_a_spray() {
        let throttle = Throttle::new(policy());
        for n in 0..1000 {
            throttle.failed(&format!("user{n}"), None);
        }
        assert!(lock(&throttle.users).entries.len() <= 3);
    }

    #[test]
    fn admissions_beyond_the_queue_are_refused_at_once() {
        let throttle = Throttle::new(policy());
        let first = throttle.admit("a", None).unwrap();
        let _second = throttle.admit("b", None).unwrap();
        assert_eq!(throttle.admit("c", None).unwrap_err(), Refusal::Busy);
        drop(first);
        assert!(throttle.admit("c", None).is_ok());
    }
}
