//! Rate limits: a per-API-key request rate (GCRA in one atomic) and a per-address
//! throttle on failed authentications.
//!
//! Both run on monotonic time (nanoseconds since the limiter's `Instant` epoch), so a
//! wall-clock jump neither extends nor shortens a limit.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest `per_second` or `burst` accepted on a key.
pub(crate) const MAX_RATE: u32 = 1_000_000;

/// A key's configured request rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second (at least 1).
    pub per_second: u32,
    /// Requests accepted at once after an idle spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// Checks a requested limit: `per_second` 1..=`MAX_RATE`; `burst` 0 (meaning one
    /// second's worth, `per_second`) or 1..=`MAX_RATE`.
    pub(crate) fn new(per_second: u32, burst: u32) -> Result<RateLimit, String> {
        if !(1..=MAX_RATE).contains(&per_second) {
            return Err(format!(
                "rate_limit.per_second must be between 1 and {MAX_RATE}"
            ));
        }
        if burst > MAX_RATE {
            return Err(format!("rate_limit.burst must be at most {MAX_RATE}"));
        }
        let burst = if burst == 0 { per_second } else { burst };
        Ok(RateLimit { per_second, burst })
    }
}

/// Nanoseconds since `epoch`, never 0 (0 marks "never used").
fn nanos_since(epoch: Instant) -> u64 {
    nanos_between(epoch, Instant::now())
}

/// Nanoseconds from `epoch` to `now` (0 if `now` is earlier), never 0.
fn nanos_between(epoch: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(epoch).as_nanos() as u64).max(1)
}

/// A lock-free GCRA limiter: one atomic holds the "theoretical arrival time" (TAT) of
/// the next request. A request is accepted when the TAT it would push forward stays
/// within `burst` emission intervals of now; the compare-exchange makes concurrent
/// callers agree without a lock, and a refused request changes nothing.
#[derive(Debug)]
pub(crate) struct Limiter {
    epoch: Instant,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// `burst × interval`: how far ahead of now the TAT may run.
    window: u64,
    tat: AtomicU64,
}

impl Limiter {
    /// A limiter for `limit`, full (a whole burst available).
    pub(crate) fn new(limit: RateLimit) -> Limiter {
        let interval = 1_000_000_000 / u64::from(limit.per_second.max(1));
        Limiter {
            epoch: Instant::now(),
            interval,
            window: interval.saturating_mul(u64::from(limit.burst.max(1))),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one request at `now`: `Ok` if within the limit, else how long until one
    /// would be. The caller passes the clock it has read already, since the read costs
    /// more than the rest of the limiter.
    pub(crate) fn acquire_at_instant(&self, now: Instant) -> Result<(), Duration> {
        self.acquire_at(nanos_between(self.epoch, now))
    }

    fn acquire_at(&self, now: u64) -> Result<(), Duration> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            if next - now > self.window {
                return Err(Duration::from_nanos(next - now - self.window));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Numbers of the failed-authentication throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThrottleConfig {
    /// Failures from one address within `window` that start a block; 0 turns the
    /// throttle off.
    pub(crate) max_failures: u32,
    /// Failures older than this are forgotten.
    pub(crate) window: Duration,
    /// How long a blocked address is refused before its credentials are checked again.
    pub(crate) block: Duration,
}

/// Addresses tracked at once; beyond this the stalest unblocked entry is evicted.
/// 16 shards × 256 entries × ~40 bytes: about 160 KiB at most.
const SHARDS: usize = 16;
const PER_SHARD: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: IpAddr,
    /// Start of the current counting window (nanos since epoch).
    since: u64,
    failures: u32,
    /// Refused until then (nanos since epoch); 0 when not blocked.
    blocked_until: u64,
}

/// Failed authentications per source address, in a fixed-size table.
///
/// Keyed by address (IPv6 by its /64, what one host or customer usually holds),
/// never by key id: a flood of bad guesses at a key from one address blocks that
/// address, not the key, so its owner calling from elsewhere is unaffected.
///
/// Checking costs one atomic load while nothing is blocked: `blocked_until_max` is
/// the latest block end anywhere in the table, and only when it is in the future is
/// the address looked up. Failures take a short per-shard lock (failures are the
/// slow path by definition).
#[derive(Debug)]
pub(crate) struct FailureThrottle {
    config: ThrottleConfig,
    epoch: Instant,
    blocked_until_max: AtomicU64,
    shards: Vec<Mutex<Vec<Entry>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// The part of an address the throttle counts by.
fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl FailureThrottle {
    /// An empty table.
    pub(crate) fn new(config: ThrottleConfig) -> FailureThrottle {
        FailureThrottle {
            config,
            epoch: Instant::now(),
            blocked_until_max: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Vec::with_capacity(8)))
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, addr: IpAddr) -> &Mutex<Vec<Entry>> {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(addr) as usize) % SHARDS]
    }

    fn now(&self) -> u64 {
        nanos_since(self.epoch)
    }

    /// `Err(remaining)` if `addr` is blocked at `now` (read once per call and shared
    /// with the key's rate limit).
    pub(crate) fn check_at_instant(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        self.check_at(addr, nanos_between(self.epoch, now))
    }

    fn check_at(&self, addr: IpAddr, now: u64) -> Result<(), Duration> {
        if self.config.max_failures == 0 || self.blocked_until_max.load(Ordering::Relaxed) <= now {
            return Ok(());
        }
        let addr = bucket(addr);
        let shard = self.shard(addr).lock().unwrap_or_else(|e| e.into_inner());
        match shard.iter().find(|e| e.addr == addr) {
            Some(e) if e.blocked_until > now => Err(Duration::from_nanos(e.blocked_until - now)),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication from `addr`; `true` if it started a block.
    pub(crate) fn failed(&self, addr: IpAddr) -> bool {
        self.failed_at(addr, self.now())
    }

    fn failed_at(&self, addr: IpAddr, now: u64) -> bool {
        if self.config.max_failures == 0 {
            return false;
        }
        let addr = bucket(addr);
        let window = self.config.window.as_nanos() as u64;
        let mut shard = self.shard(addr).lock().unwrap_or_else(|e| e.into_inner());
        let i = match shard.iter().position(|e| e.addr == addr) {
            Some(i) => i,
            None => {
                let fresh = Entry {
                    addr,
                    since: now,
                    failures: 0,
                    blocked_until: 0,
                };
                if shard.len() < PER_SHARD {
                    shard.push(fresh);
                    shard.len() - 1
                } else {
                    // Evict the entry least worth keeping: an unblocked one before a
                    // blocked one, then the one whose window began longest ago. A
                    // flood of new addresses can thus only push out addresses that
                    // are not blocked, or blocks nearest their end.
                    let i = shard
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| (e.blocked_until > now, e.blocked_until, e.since))
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    shard[i] = fresh;
                    i
                }
            }
        };
        let e = &mut shard[i];
        if e.blocked_until > now {
            // Already refused; attempts are not checked, so they cannot count.
            return false;
        }
        if e.blocked_until != 0 || now.saturating_sub(e.since) > window {
            // A block that ended, or a window that passed, starts the count afresh.
            *e = Entry {
                addr,
                since: now,
                failures: 0,
                blocked_until: 0,
            };
        }
        e.failures += 1;
        if e.failures >= self.config.max_failures {
            e.blocked_until = now.saturating_add(self.config.block.as_nanos() as u64);
            self.blocked_until_max
                .fetch_max(e.blocked_until, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_the_sustained_rate() {
        let l = Limiter::new(RateLimit::new(10, 5).unwrap());
        let t0 = 1_000 * MS;
        for i in 0..5 {
            assert!(l.acquire_at(t0).is_ok(), "burst request {i}");
        }
        let wait = l.acquire_at(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one interval at 10/s");
        // One interval later exactly one more fits.
        assert!(l.acquire_at(t0 + 100 * MS).is_ok());
        assert!(l.acquire_at(t0 + 100 * MS).is_err());
        // Over 10 s at most 10/s pass on top of the burst.
        let mut ok = 0;
        for step in 0..10_000u64 {
            if l.acquire_at(t0 + 100 * MS + step * MS).is_ok() {
                ok += 1;
            }
        }
        assert!((99..=101).contains(&ok), "accepted {ok} in 10 s at 10/s");
    }

    #[test]
    fn a_refused_request_costs_nothing() {
        let l = Limiter::new(RateLimit::new(1, 1).unwrap());
        assert!(l.acquire_at(MS).is_ok());
        for _ in 0..100 {
            assert!(l.acquire_at(2 * MS).is_err());
        }
        assert!(l.acquire_at(MS + 1_000 * MS).is_ok());
    }

    #[test]
    fn limits_out_of_range_are_refused_and_burst_defaults_to_the_rate() {
        assert!(RateLimit::new(0, 5).is_err());
        assert!(RateLimit::new(MAX_RATE + 1, 5).is_err());
        assert!(RateLimit::new(5, MAX_RATE + 1).is_err());
        assert_eq!(RateLimit::new(7, 0).unwrap().burst, 7);
    }

    fn throttle(max: u32) -> FailureThrottle {
        FailureThrottle::new(ThrottleConfig {
            max_failures: max,
            window: Duration::from_secs(60),
            block: Duration::from_secs(30),
        })
    }

    #[test]
    fn throttle_blocks_one_address_and_not_another() {
        let t = throttle(3);
        let bad: IpAddr = "203.0.113.7".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        let now = 5 * MS;
        assert!(!t.failed_at(bad, now));
        assert!(!t.failed_at(bad, now));
        assert!(t.check_at(bad, now).is_ok());
        assert!(t.failed_at(bad, now), "the third failure starts the block");
        let left = t.check_at(bad, now + MS).unwrap_err();
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(29));
        assert!(
            t.check_at(good, now + MS).is_ok(),
            "another address is not blocked"
        );
        // Released after the block.
        assert!(t.check_at(bad, now + 30_001 * MS).is_ok());
        // And counts afresh: one failure does not re-block it.
        assert!(!t.failed_at(bad, now + 30_001 * MS));
        assert!(t.check_at(bad, now + 30_002 * MS).is_ok());
    }

    #[test]
    fn failures_spread_beyond_the_window_never_block() {
        let t = throttle(3);
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        for i in 0..10u64 {
            assert!(!t.failed_at(a, i * 61_000 * MS), "failure {i}");
        }
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_v4_as_v4() {
        let t = throttle(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!t.failed_at(a, MS));
        assert!(t.failed_at(b, MS), "same /64: one counter");
        assert!(t.check_at(a, 2 * MS).is_err());
        assert!(t.check_at(other, 2 * MS).is_ok());
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(!t.failed_at(v4, MS));
        assert!(t.failed_at(mapped, MS));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_blocked_addresses() {
        let t2 = throttle(5);
        let blocked: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..5 {
            t2.failed_at(blocked, MS);
        }
        assert!(t2.check_at(blocked, 2 * MS).is_err());
        for i in 0..(SHARDS * PER_SHARD * 4) as u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t2.failed_at(addr, 3 * MS);
        }
        let total: usize = t2.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * PER_SHARD, "table grew to {total}");
        assert!(
            t2.check_at(blocked, 4 * MS).is_err(),
            "a flood of one-off addresses does not evict a block"
        );
    }

    #[test]
    fn zero_max_turns_the_throttle_off() {
        let t = throttle(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(!t.failed_at(a, MS));
        }
        assert!(t.check_at(a, MS).is_ok());
    }
}
