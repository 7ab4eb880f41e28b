//! Back-off of failed logins, by user name and by client address.
//!
//! Password guessing is throttled twice: by the name tried (one account
//! guessed from many places) and by the address trying (many accounts
//! guessed from one place). After [`LoginLimits::attempts`] failures in a
//! row for a key, that key is refused for a window of
//! [`LoginLimits::backoff`], doubling with each further failure up to
//! [`MAX_WINDOW`]. A refusal in a window checks no password: it costs the
//! server nothing and tells the client nothing, and it is the same for a
//! name that exists and one that does not.
//!
//! A success clears the name's count but not the address's, so one valid
//! account cannot reset the limit on guessing the others; a key quiet for
//! [`FORGET_AFTER`] is forgotten. While passwords of a key are being
//! checked, no more are admitted than could still fail before its limit,
//! so guesses sent in parallel cannot overshoot it. Each map holds at most
//! [`MAX_KEYS`] keys; when full, the one quiet longest goes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(300);
/// A key without a failure for this long starts afresh.
pub const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Most names (and most addresses) tracked.
pub const MAX_KEYS: usize = 10_000;
/// Longest name kept as a key; longer ones share their first bytes' key.
const MAX_NAME: usize = 128;

/// When logins back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures in a row before the first window.
    pub attempts: u32,
    /// The first window; each further failure doubles it.
    pub backoff: Duration,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// One key's recent failures.
#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    in_flight: u32,
    until: Option<Instant>,
    last: Instant,
}

impl Entry {
    fn stale(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self.until.is_none_or(|u| u <= now)
            && now.saturating_duration_since(self.last) >= FORGET_AFTER
    }
}

/// Failures by key, bounded.
struct Tracker<K> {
    map: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn new() -> Tracker<K> {
        Tracker {
            map: HashMap::new(),
        }
    }

    /// How long `key` must wait, if it must.
    fn wait(&self, key: &K, limits: &LoginLimits, now: Instant) -> Option<Duration> {
        let e = self.map.get(key).filter(|e| !e.stale(now))?;
        if let Some(until) = e.until.filter(|u| *u > now) {
            return Some(until - now);
        }
        // guesses in flight could still reach the limit: no more for now
        (e.in_flight > 0 && e.failures + e.in_flight >= limits.attempts).then_some(limits.backoff)
    }

    fn entry(&mut self, key: &K, now: Instant) -> &mut Entry {
        if !self.map.contains_key(key) && self.map.len() >= MAX_KEYS {
            self.map.retain(|_, e| !e.stale(now));
            if self.map.len() >= MAX_KEYS
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let e = self.map.entry(key.clone()).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            until: None,
            last: now,
        });
        if e.stale(now) {
            e.failures = 0;
            e.until = None;
        }
        e
    }

    fn begin(&mut self, key: &K, now: Instant) {
        let e = self.entry(key, now);
        e.in_flight += 1;
        e.last = now;
    }

    /// Ends an attempt begun with [`Tracker::begin`].
    fn end(&mut self, key: &K, outcome: Outcome, limits: &LoginLimits, now: Instant) {
        let e = self.entry(key, now);
        e.in_flight = e.in_flight.saturating_sub(1);
        e.last = now;
        match outcome {
            Outcome::Failed => {
                e.failures = e.failures.saturating_add(1);
                if e.failures >= limits.attempts {
                    e.until = Some(now + window(limits, e.failures - limits.attempts));
                }
            }
            Outcome::Cleared => {
                e.failures = 0;
                e.until = None;
                if e.in_flight == 0 {
                    self.map.remove(key);
                }
            }
            Outcome::Uncounted => {}
        }
    }
}

/// The window after `extra` failures beyond the limit.
fn window(limits: &LoginLimits, extra: u32) -> Duration {
    let doubled = limits.backoff.saturating_mul(1u32 << extra.min(20));
    doubled.min(MAX_WINDOW.max(limits.backoff))
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Failed,
    Cleared,
    Uncounted,
}

/// The failed logins of the server.
pub struct Backoff {
    limits: LoginLimits,
    state: Mutex<(Tracker<String>, Tracker<IpAddr>)>,
}

/// A login being checked: end it with [`Attempt::succeeded`] or
/// [`Attempt::failed`]; dropped unended (the client went away), it counts
/// for nothing.
pub struct Attempt<'a> {
    backoff: &'a Backoff,
    name: String,
    addr: Option<IpAddr>,
    ended: bool,
}

impl Backoff {
    /// Failures counted against `limits`.
    pub fn new(limits: LoginLimits) -> Backoff {
        Backoff {
            limits,
            state: Mutex::new((Tracker::new(), Tracker::new())),
        }
    }

    /// Admits a login of `name` from `addr` at `now`, or says how long to
    /// wait.
    pub fn begin(
        &self,
        name: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let name = name_key(name);
        let addr = addr.map(addr_key);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (names, addrs) = &mut *state;
        let wait = [
            names.wait(&name, &self.limits, now),
            addr.and_then(|a| addrs.wait(&a, &self.limits, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        names.begin(&name, now);
        if let Some(a) = &addr {
            addrs.begin(a, now);
        }
        Ok(Attempt {
            backoff: self,
            name,
            addr,
            ended: false,
        })
    }

    fn end(&self, a: &Attempt<'_>, ok: Option<bool>, now: Instant) {
        let (name, addr) = match ok {
            Some(true) => (Outcome::Cleared, Outcome::Uncounted),
            Some(false) => (Outcome::Failed, Outcome::Failed),
            None => (Outcome::Uncounted, Outcome::Uncounted),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (names, addrs) = &mut *state;
        names.end(&a.name, name, &self.limits, now);
        if let Some(k) = &a.addr {
            addrs.end(k, addr, &self.limits, now);
        }
    }
}

impl Attempt<'_> {
    /// The password was right: the name starts afresh.
    pub fn succeeded(mut self, now: Instant) {
        self.ended = true;
        self.backoff.end(&self, Some(true), now);
    }

    /// The name or password was wrong: one more failure for both keys.
    pub fn failed(mut self, now: Instant) {
        self.ended = true;
        self.backoff.end(&self, Some(false), now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.backoff.end(self, None, Instant::now());
        }
    }
}

/// The key of a name: its first [`MAX_NAME`] bytes.
fn name_key(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// The key of an address: IPv4 as is (also when mapped into IPv6), IPv6
/// by its /64, which one host can fill at will.
fn addr_key(addr: IpAddr) -> IpAddr {
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LoginLimits = LoginLimits {
        attempts: 3,
        backoff: Duration::from_secs(1),
    };

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn fail(b: &Backoff, name: &str, addr: Option<IpAddr>, now: Instant) {
        b.begin(name, addr, now).expect("admitted").failed(now);
    }

    #[test]
    fn a_name_backs_off_after_its_failures_and_the_window_doubles() {
        let b = Backoff::new(LIMITS);
        let t0 = Instant::now();
        for i in 0..3 {
            // a new address each time: only the name counts
            fail(&b, "alice", ip(&format!("10.0.0.{i}")), t0);
        }
        assert_eq!(
            b.begin("alice", ip("10.0.1.1"), t0).err(),
            Some(Duration::from_secs(1))
        );
        // other names are not held up
        b.begin("bob", ip("10.0.1.1"), t0).unwrap().failed(t0);
        // after the window one more try; failing it doubles the window
        let t1 = t0 + Duration::from_secs(1);
        fail(&b, "alice", ip("10.0.2.1"), t1);
        assert_eq!(
            b.begin("alice", None, t1).err(),
            Some(Duration::from_secs(2))
        );
        let t2 = t1 + Duration::from_secs(2);
        fail(&b, "alice", None, t2);
        assert_eq!(
            b.begin("alice", None, t2).err(),
            Some(Duration::from_secs(4))
        );
        // a success clears the name
        let t3 = t2 + Duration::from_secs(4);
        b.begin("alice", None, t3).unwrap().succeeded(t3);
        fail(&b, "alice", None, t3);
        assert!(b.begin("alice", None, t3).is_ok());
    }

    #[test]
    fn an_address_backs_off_whatever_names_it_tries_and_a_success_does_not_clear_it() {
        let b = Backoff::new(LIMITS);
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        fail(&b, "alice", a, t0);
        fail(&b, "bob", a, t0);
        // a valid account in between does not reset the address
        b.begin("mallory", a, t0).unwrap().succeeded(t0);
        fail(&b, "carol", a, t0);
        assert_eq!(b.begin("dave", a, t0).err(), Some(Duration::from_secs(1)));
        // another address is not held up
        assert!(b.begin("dave", ip("192.0.2.8"), t0).is_ok());
        // IPv6 counts by /64
        let t1 = t0 + Duration::from_secs(10);
        for i in 1..=3 {
            fail(&b, &format!("u{i}"), ip(&format!("2001:db8::{i}")), t1);
        }
        assert!(b.begin("u9", ip("2001:db8::ffff:1"), t1).is_err());
        assert!(b.begin("u9", ip("2001:db8:0:1::1"), t1).is_ok());
        // and a quiet key is forgotten
        let later = t1 + FORGET_AFTER + MAX_WINDOW;
        assert!(b.begin("u9", ip("2001:db8::1"), later).is_ok());
    }

    #[test]
    fn parallel_guesses_cannot_overshoot_the_limit() {
        let b = Backoff::new(LIMITS);
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..8)
            .filter_map(|_| b.begin("alice", None, t0).ok())
            .collect();
        assert_eq!(admitted.len(), 3);
        // one that ends without an answer (client gone) counts for nothing
        let mut admitted = admitted.into_iter();
        drop(admitted.next());
        for a in admitted {
            a.failed(t0);
        }
        let a = b.begin("alice", None, t0).expect("the third try");
        a.failed(t0);
        assert!(b.begin("alice", None, t0).is_err());
    }

    #[test]
    fn the_windows_stop_growing_and_the_map_is_bounded() {
        let limits = LoginLimits {
            attempts: 1,
            backoff: Duration::from_secs(1),
        };
        assert_eq!(window(&limits, 0), Duration::from_secs(1));
        assert_eq!(window(&limits, 3), Duration::from_secs(8));
        assert_eq!(window(&limits, 40), MAX_WINDOW);
        let b = Backoff::new(limits);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            let t = t0 + Duration::from_millis(i as u64);
            fail(&b, &format!("user{i}"), None, t);
        }
        let state = b.state.lock().unwrap();
        assert_eq!(state.0.map.len(), MAX_KEYS);
        // the oldest went, the newest stayed
        assert!(!state.0.map.contains_key("user0"));
        assert!(state.0.map.contains_key(&format!("user{}", MAX_KEYS + 9)));
        drop(state);
        // a very long name is kept by its first bytes
        let long = "é".repeat(500);
        fail(&b, &long, None, t0);
        assert!(
            b.state
                .lock()
                .unwrap()
                .0
                .map
                .keys()
                .all(|k| k.len() <= MAX_NAME)
        );
    }
}
