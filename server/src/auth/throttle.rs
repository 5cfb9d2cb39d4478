//! Login throttling, decided before any password is hashed or any failure written
//! (`docs/decisions/0009-login-throttling.md`). Three rules:
//!
//! - per client address, in memory: a bucket of attempts, so that a flood of usernames from
//!   one address stops without touching the database;
//! - per username and address: past a few failures each further try waits twice as long as
//!   the one before, so that a guesser slows down itself and not the member elsewhere;
//! - per username across addresses: past a looser cap, one check at a time, spaced apart.
//!
//! Checks still running count as failures until they end, so that parallel guesses cannot
//! all pass before the first failure is written.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use sea_orm::ConnectionTrait;

use crate::{
    error::{ApiError, ApiResult},
    store::login_failure::{self, Tally},
};

/// Failures of a username from one address that cost no wait.
pub const FREE_FAILURES: u64 = 3;
/// The wait after the first failure past the free ones; each further failure doubles it…
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// …up to this.
pub const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// How long a failure counts for its username and address; older ones are purged.
pub const FAILURE_MEMORY: chrono::Duration = chrono::Duration::hours(24);
/// Failures of one username from all addresses within [`USERNAME_WINDOW`] past which…
pub const USERNAME_CAP: u64 = 30;
/// …(the window)…
pub const USERNAME_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
/// …its password is checked one try at a time, this far apart.
pub const USERNAME_SPACING: Duration = Duration::from_secs(2);
/// Attempts one address may make in a burst…
pub const ADDRESS_BURST: u32 = 20;
/// …and how often it gets one back; a successful login gives its own back at once.
pub const ADDRESS_REFILL: Duration = Duration::from_secs(6);
/// Addresses the bucket limiter remembers at most.
pub const MAX_ADDRESSES: usize = 10_000;

/// How long after its latest failure a username at an address waits, with `failures`
/// counted: nothing for the free ones, then [`FIRST_WAIT`] doubling to [`LONGEST_WAIT`].
pub fn wait_after(failures: u64) -> Duration {
    let Some(past) = failures.checked_sub(FREE_FAILURES) else {
        return Duration::ZERO;
    };
    let longest_doublings = (LONGEST_WAIT.as_secs() / FIRST_WAIT.as_secs().max(1)).ilog2();
    if past > u64::from(longest_doublings) {
        return LONGEST_WAIT;
    }
    (FIRST_WAIT * (1u32 << past)).min(LONGEST_WAIT)
}

/// The part of a client's address that one client is taken to control: the whole IPv4
/// address, or the /64 of an IPv6 one (a single host is routinely given a /64).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of a peer address (an IPv4 address mapped into IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => ClientKey(v4),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Which rule refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The address's bucket is empty.
    Address,
    /// This username has failed too often from this address.
    UsernameAtAddress,
    /// This username has failed too often from all addresses together.
    Username,
    /// A key that is no username (a kiosk) has failed too often.
    Key,
}

impl Rule {
    fn label(self) -> &'static str {
        match self {
            Rule::Address => "address",
            Rule::UsernameAtAddress => "username_address",
            Rule::Username => "username",
            Rule::Key => "key",
        }
    }
}

/// An attempt refused, and how long until one may pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The rule.
    pub rule: Rule,
    /// The wait.
    pub wait: Duration,
}

impl Refusal {
    /// The 429 answered for it, `what` naming what failed (`logins`, `sign-ons at this
    /// kiosk`).
    pub fn answer(self, what: &str) -> ApiError {
        let seconds = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let detail = match self.rule {
            Rule::Address => {
                format!("too many login attempts from this address; try again in {seconds} seconds")
            }
            Rule::UsernameAtAddress => format!(
                "too many failed {what} for this username from this address; try again in {seconds} seconds"
            ),
            Rule::Username => {
                format!("too many failed {what} for this username; try again in {seconds} seconds")
            }
            Rule::Key => format!("too many failed {what}; try again in {seconds} seconds"),
        };
        ApiError::rate_limited(detail, seconds)
    }
}

/// Whether a password check of a username from an address may run now: `pair` is its
/// failures from this address within [`FAILURE_MEMORY`], `username` its failures from
/// everywhere within [`USERNAME_WINDOW`], and the `_ahead` counts the checks of each
/// still running, which count as failures.
pub fn verdict(
    pair: &Tally,
    pair_ahead: u64,
    username: &Tally,
    username_ahead: u64,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let failures = pair.count + pair_ahead;
    if failures >= FREE_FAILURES {
        let wait = wait_after(failures);
        let refused = |wait| {
            Err(Refusal {
                rule: Rule::UsernameAtAddress,
                wait,
            })
        };
        if pair_ahead > 0 {
            return refused(wait);
        }
        if let Some(last) = pair.last {
            let since = (now - last).to_std().unwrap_or_default();
            if since < wait {
                return refused(wait - since);
            }
        }
    }
    if username.count + username_ahead >= USERNAME_CAP {
        let refused = |wait| {
            Err(Refusal {
                rule: Rule::Username,
                wait,
            })
        };
        if username_ahead > 0 {
            return refused(USERNAME_SPACING);
        }
        if let Some(last) = username.last {
            let since = (now - last).to_std().unwrap_or_default();
            if since < USERNAME_SPACING {
                return refused(USERNAME_SPACING - since);
            }
        }
    }
    Ok(())
}

/// Token buckets of login attempts by client address, in memory and bounded.
pub struct AddressLimiter {
    burst: f64,
    refill: Duration,
    most: usize,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, now: Instant, burst: f64, refill: Duration) -> f64 {
        let grown = now.saturating_duration_since(self.at).as_secs_f64() / refill.as_secs_f64();
        (self.tokens + grown).min(burst)
    }
}

impl AddressLimiter {
    /// `burst` attempts at once, one more every `refill`, for at most `most` addresses.
    pub fn new(burst: u32, refill: Duration, most: usize) -> AddressLimiter {
        AddressLimiter {
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
            most: most.max(1),
            buckets: Mutex::default(),
        }
    }

    /// Takes one attempt from the address's bucket, or says how long until there is one.
    pub fn take(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&key) && buckets.len() >= self.most {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let level = bucket.level(now, self.burst, self.refill);
        bucket.at = now;
        if level >= 1.0 {
            bucket.tokens = level - 1.0;
            Ok(())
        } else {
            bucket.tokens = level;
            Err(self.refill.mul_f64(1.0 - level))
        }
    }

    /// Gives an attempt back (it succeeded).
    pub fn give_back(&self, key: ClientKey, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&key) {
            bucket.tokens = (bucket.level(now, self.burst, self.refill) + 1.0).min(self.burst);
            bucket.at = now;
        }
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room: a full bucket says nothing a new one would not, so those go first; if
    /// every address is still refilling, the one unheard from longest goes.
    fn evict(&self, buckets: &mut HashMap<ClientKey, Bucket>, now: Instant) {
        buckets.retain(|_, b| b.level(now, self.burst, self.refill) < self.burst);
        if buckets.len() >= self.most
            && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k)
        {
            buckets.remove(&oldest);
        }
    }
}

/// Password checks running now, by username and by username and address.
#[derive(Default)]
struct Checking {
    usernames: HashMap<String, u64>,
    pairs: HashMap<(String, ClientKey), u64>,
}

/// One running check, counted in [`Checking`] until dropped.
struct Reservation {
    checking: Arc<Mutex<Checking>>,
    username: String,
    client: ClientKey,
}

impl Reservation {
    /// Counts a check in, and answers how many of the pair and of the username were
    /// running before it.
    fn take(
        checking: &Arc<Mutex<Checking>>,
        username: &str,
        client: ClientKey,
    ) -> (Reservation, u64, u64) {
        let mut c = checking.lock().unwrap_or_else(PoisonError::into_inner);
        let pair = c.pairs.entry((username.to_owned(), client)).or_default();
        let pair_ahead = *pair;
        *pair += 1;
        let user = c.usernames.entry(username.to_owned()).or_default();
        let user_ahead = *user;
        *user += 1;
        drop(c);
        let reservation = Reservation {
            checking: checking.clone(),
            username: username.to_owned(),
            client,
        };
        (reservation, pair_ahead, user_ahead)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut c = self.checking.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (std::mem::take(&mut self.username), self.client);
        if let Some(n) = c.pairs.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.pairs.remove(&key);
            }
        }
        if let Some(n) = c.usernames.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                c.usernames.remove(&key.0);
            }
        }
    }
}

/// The label of a refusal: its rule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    rule: &'static str,
}

/// Login attempts refused, by the rule that refused them.
pub type Refusals = Family<RuleLabels, Counter>;

/// The login throttle of one process.
pub struct LoginThrottle {
    addresses: AddressLimiter,
    checking: Arc<Mutex<Checking>>,
    refusals: Refusals,
}

impl LoginThrottle {
    /// A throttle with the rules' constants, counting refusals in `refusals`.
    pub fn new(refusals: Refusals) -> LoginThrottle {
        LoginThrottle {
            addresses: AddressLimiter::new(ADDRESS_BURST, ADDRESS_REFILL, MAX_ADDRESSES),
            checking: Arc::default(),
            refusals,
        }
    }

    /// Lets a check of `username`'s password (or PIN) from `ip` run, or answers 429 with
    /// `Retry-After`. The check counts as a failure until the answer ends it; `what` names
    /// what failed for the answer (`logins`).
    pub async fn admit<C: ConnectionTrait>(
        self: &Arc<Self>,
        db: &C,
        username: &str,
        ip: IpAddr,
        what: &str,
    ) -> ApiResult<Attempt> {
        let client = ClientKey::of(ip);
        if let Err(wait) = self.addresses.take(client, Instant::now()) {
            return Err(self.refused(
                Refusal {
                    rule: Rule::Address,
                    wait,
                },
                what,
            ));
        }
        // Counted in before the failures are read: a check that ends in between is then
        // either still counted here or already written there.
        let (reservation, pair_ahead, username_ahead) =
            Reservation::take(&self.checking, username, client);
        let address = client.to_string();
        let now = Utc::now();
        let pair = login_failure::tally(db, username, Some(&address), now - FAILURE_MEMORY).await?;
        let all = login_failure::tally(db, username, None, now - USERNAME_WINDOW).await?;
        verdict(&pair, pair_ahead, &all, username_ahead, now)
            .map_err(|refusal| self.refused(refusal, what))?;
        Ok(Attempt {
            throttle: self.clone(),
            _reservation: reservation,
            username: username.to_owned(),
            client,
            address,
            had_failures: pair.count > 0,
        })
    }

    /// 429 while `key` (a kiosk's, which no username can be) has `max` failures within
    /// `window`, until the oldest of them leaves it.
    pub async fn cap<C: ConnectionTrait>(
        &self,
        db: &C,
        key: &str,
        max: u64,
        window: chrono::Duration,
        what: &str,
    ) -> ApiResult<()> {
        let now = Utc::now();
        let tally = login_failure::tally(db, key, None, now - window).await?;
        if tally.count >= max {
            let oldest = tally.first.unwrap_or(now);
            let wait = (oldest + window - now).to_std().unwrap_or_default();
            return Err(self.refused(
                Refusal {
                    rule: Rule::Key,
                    wait,
                },
                what,
            ));
        }
        Ok(())
    }

    fn refused(&self, refusal: Refusal, what: &str) -> ApiError {
        self.refusals
            .get_or_create(&RuleLabels {
                rule: refusal.rule.label(),
            })
            .inc();
        refusal.answer(what)
    }
}

/// A password check let through by [`LoginThrottle::admit`]; it counts as running until
/// it is ended as [`failed`](Attempt::failed) or [`succeeded`](Attempt::succeeded) (or
/// dropped, when the check itself could not run).
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    _reservation: Reservation,
    username: String,
    client: ClientKey,
    address: String,
    had_failures: bool,
}

impl Attempt {
    /// Writes the failure, under the username and under each key of `also` (a kiosk's),
    /// in one statement; only then does the check stop counting as running.
    pub async fn failed<C: ConnectionTrait>(self, db: &C, also: &[&str]) -> ApiResult<()> {
        let mut keys = vec![self.username.as_str()];
        keys.extend_from_slice(also);
        login_failure::record(db, &keys, &self.address, Utc::now()).await?;
        Ok(())
    }

    /// Gives the address its attempt back and forgets this username's failures from it.
    pub async fn succeeded<C: ConnectionTrait>(self, db: &C) -> ApiResult<()> {
        self.throttle
            .addresses
            .give_back(self.client, Instant::now());
        if self.had_failures {
            login_failure::forget(db, &self.username, &self.address).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tally(count: u64, last: Option<DateTime<Utc>>) -> Tally {
        Tally {
            count,
            first: last,
            last,
        }
    }

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_longest() {
        assert_eq!(wait_after(0), Duration::ZERO);
        assert_eq!(wait_after(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(wait_after(FREE_FAILURES), FIRST_WAIT);
        assert_eq!(wait_after(FREE_FAILURES + 1), 2 * FIRST_WAIT);
        assert_eq!(wait_after(FREE_FAILURES + 3), 8 * FIRST_WAIT);
        assert_eq!(wait_after(FREE_FAILURES + 40), LONGEST_WAIT);
        assert_eq!(wait_after(u64::MAX), LONGEST_WAIT);
        let mut previous = Duration::ZERO;
        for n in 0..100 {
            assert!(wait_after(n) >= previous && wait_after(n) <= LONGEST_WAIT);
            previous = wait_after(n);
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:10.1.2.3")),
            ClientKey::of(ip("10.1.2.3"))
        );
        assert_eq!(ClientKey::of(ip("10.1.2.3")).to_string(), "10.1.2.3");
    }

    #[test]
    fn a_flood_from_one_address_empties_its_bucket_and_no_other() {
        let limiter = AddressLimiter::new(5, Duration::from_secs(6), 100);
        let (a, b) = (ClientKey::of(ip("10.0.0.1")), ClientKey::of(ip("10.0.0.2")));
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.take(a, t0).is_ok());
        }
        let wait = limiter.take(a, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert!(limiter.take(a, t0).is_err());
        // Another address is untouched.
        assert!(limiter.take(b, t0).is_ok());
        // One attempt back after one refill…
        let t1 = t0 + Duration::from_secs(6);
        assert!(limiter.take(a, t1).is_ok());
        assert!(limiter.take(a, t1).is_err());
        // …and a success gives its attempt back at once.
        limiter.give_back(a, t1);
        assert!(limiter.take(a, t1).is_ok());
    }

    #[test]
    fn the_limiter_forgets_full_buckets_first_then_the_stalest() {
        let limiter = AddressLimiter::new(2, Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let key = |n: u8| ClientKey::of(IpAddr::from([10, 0, 0, n]));
        // Addresses 1 and 3 drain their buckets, 2 takes one attempt.
        limiter.take(key(1), t0).unwrap();
        limiter.take(key(1), t0).unwrap();
        limiter.take(key(2), t0).unwrap();
        limiter.take(key(3), t0 + Duration::from_secs(1)).unwrap();
        limiter.take(key(3), t0 + Duration::from_secs(1)).unwrap();
        // Twelve seconds on, 2 is full again (one refill), 1 and 3 are not: 2 goes.
        let t1 = t0 + Duration::from_secs(12);
        limiter.take(key(4), t1).unwrap();
        assert_eq!(limiter.len(), 3);
        assert!(limiter.take(key(1), t1).is_ok());
        assert!(
            limiter.take(key(1), t1).is_err(),
            "1 kept its drained bucket"
        );
        // Nothing full now: the stalest (3) makes room for 5.
        limiter.take(key(5), t1).unwrap();
        assert_eq!(limiter.len(), 3);
        // Never more than the bound, however many addresses come.
        for n in 6..200 {
            let _ = limiter.take(key(n), t1);
        }
        assert_eq!(limiter.len(), 3);
    }

    #[test]
    fn running_checks_count_as_failures() {
        let now = Utc::now();
        let none = Tally::default();
        // With nothing written yet, the free tries may run at once, and no more.
        for ahead in 0..FREE_FAILURES {
            assert!(verdict(&none, ahead, &none, ahead, now).is_ok());
        }
        let refused = verdict(&none, FREE_FAILURES, &none, FREE_FAILURES, now).unwrap_err();
        assert_eq!(refused.rule, Rule::UsernameAtAddress);
        // One written and two running is as many.
        assert!(verdict(&tally(1, Some(now)), 2, &none, 2, now).is_err());
        // Past the wait, one try at a time still.
        let long_ago = now - chrono::Duration::hours(1);
        assert!(verdict(&tally(5, Some(long_ago)), 0, &none, 0, now).is_ok());
        assert!(verdict(&tally(5, Some(long_ago)), 1, &none, 1, now).is_err());
    }

    #[test]
    fn a_failure_past_the_free_ones_sets_the_wait_from_the_last() {
        let now = Utc::now();
        let none = Tally::default();
        let last = now - chrono::Duration::seconds(1);
        // Three failures: one second from the last, which has passed.
        assert!(verdict(&tally(3, Some(last)), 0, &none, 0, now).is_ok());
        // Five: four seconds, three still to go.
        let refused = verdict(&tally(5, Some(last)), 0, &none, 0, now).unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(3));
        assert_eq!(
            refused.answer("logins").to_string(),
            "too many failed logins for this username from this address; try again in 3 seconds"
        );
    }

    #[test]
    fn another_addresss_failures_do_not_slow_this_one() {
        // The attacker's address has failed on this username as often as its waits let
        // it; from another address, the member's first try runs at once.
        let now = Utc::now();
        let from_here = Tally::default();
        let everywhere = tally(USERNAME_CAP - 1, Some(now));
        assert!(verdict(&from_here, 0, &everywhere, 0, now).is_ok());
    }

    #[test]
    fn one_address_alone_cannot_reach_the_username_cap() {
        // Failing as fast as the waits allow, one address fits fewer failures into the
        // username's window than its cap: only many addresses together slow a username.
        let start = Utc::now();
        let mut failures: Vec<DateTime<Utc>> = Vec::new();
        let mut now = start;
        while now - start < chrono::Duration::hours(2) {
            let pair = tally(failures.len() as u64, failures.last().copied());
            match verdict(&pair, 0, &Tally::default(), 0, now) {
                Ok(()) => failures.push(now),
                Err(r) => now += chrono::Duration::from_std(r.wait).unwrap(),
            }
            let in_window = failures
                .iter()
                .filter(|at| **at > now - USERNAME_WINDOW)
                .count() as u64;
            assert!(in_window < USERNAME_CAP, "{in_window} within the window");
        }
    }

    #[test]
    fn past_the_username_cap_checks_go_one_at_a_time_spaced() {
        let now = Utc::now();
        let none = Tally::default();
        let just_now = tally(
            USERNAME_CAP,
            Some(now - chrono::Duration::milliseconds(500)),
        );
        let refused = verdict(&none, 0, &just_now, 0, now).unwrap_err();
        assert_eq!(refused.rule, Rule::Username);
        assert_eq!(refused.wait, Duration::from_millis(1500));
        // Two seconds after the last failure one may run, but not two at once.
        let earlier = tally(USERNAME_CAP, Some(now - chrono::Duration::seconds(3)));
        assert!(verdict(&none, 0, &earlier, 0, now).is_ok());
        assert!(verdict(&none, 0, &earlier, 1, now).is_err());
    }

    #[test]
    fn running_checks_are_forgotten_when_they_end() {
        let checking = Arc::new(Mutex::new(Checking::default()));
        let a = ClientKey::of(ip("10.0.0.1"));
        let b = ClientKey::of(ip("10.0.0.2"));
        let (first, pair, user) = Reservation::take(&checking, "cmd1", a);
        assert_eq!((pair, user), (0, 0));
        let (second, pair, user) = Reservation::take(&checking, "cmd1", b);
        assert_eq!((pair, user), (0, 1));
        let (third, pair, user) = Reservation::take(&checking, "cmd1", a);
        assert_eq!((pair, user), (1, 2));
        drop((first, second, third));
        let c = checking.lock().unwrap();
        assert!(c.pairs.is_empty() && c.usernames.is_empty());
    }
}
