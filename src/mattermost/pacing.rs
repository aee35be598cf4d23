//! Pacing calls to the rate the server allows, learned from its answers.
//!
//! Mattermost's limiter (throttled's GCRA) answers every call with `X-RateLimit-Limit` (its
//! burst plus one), `X-RateLimit-Remaining` (calls allowed right now) and `X-RateLimit-Reset`
//! (whole seconds until the bucket is full again). It does not send its rate, and the whole
//! seconds are too coarse to compute it from. But while the bucket is not full, every call
//! takes one from `Remaining` and the server puts back `rate` per second, so over a window
//! `rate = (Remaining now - Remaining then + calls counted) / elapsed`.
//!
//! The burst is there to be used: calls go out at the configured ceiling while `Remaining` is
//! above a reserve. Below it they are spaced at the learned rate, slowed a little more the
//! emptier the bucket, so small errors in the estimate settle at a level instead of running
//! into 429s. Pure: the caller passes the clock.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// The shortest window a rate is computed over (with [`MIN_REFILLED`], which takes longer
/// at low rates).
const MIN_WINDOW: Duration = Duration::from_millis(100);
/// The fewest calls the server must have put back in a window before its rate is trusted:
/// one call more or less is then at most 5 % of the count.
const MIN_REFILLED: f64 = 20.0;
/// Windows are restarted after this long, so a changed server setting is followed.
const MAX_WINDOW: Duration = Duration::from_secs(30);
/// An observation older than this says nothing about the bucket now (it has refilled).
const STALE: Duration = Duration::from_secs(60);

/// What one answer said about the server's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// `X-RateLimit-Limit`: calls the full bucket allows at once.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: calls allowed right now.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: whole seconds until the bucket is full again.
    pub reset: Option<u32>,
}

impl Bucket {
    /// The bucket an answer's headers describe, when the server limits calls.
    pub fn from_headers(headers: &HeaderMap) -> Option<Bucket> {
        let number =
            |name: &str| -> Option<u32> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        Some(Bucket {
            limit: number("x-ratelimit-limit")?,
            remaining: number("x-ratelimit-remaining")?,
            reset: number("x-ratelimit-reset"),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    at: Instant,
    remaining: u32,
    counted: u64,
}

/// The learned rate and the schedule of the next calls, for one server.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Calls per second the server allows, once learned.
    rate: Option<f64>,
    /// True once `rate` comes from a window, not from the first guess.
    measured: bool,
    window: Option<Window>,
    /// Calls the server counted (answered, not refused with 429).
    counted: u64,
    last: Option<(Instant, Bucket)>,
    /// When the next paced call may go.
    next: Option<Instant>,
    /// Calls are being spaced.
    pacing: bool,
    /// Calls sent and not answered yet: the last `Remaining` does not count them.
    inflight: u32,
    /// The server answers without rate-limit headers.
    unlimited: bool,
    /// When the first guess was last raised.
    raised: Option<Instant>,
}

impl Pacer {
    /// The rate learned so far, in calls per second.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Takes in what an answer said; `refused` for a 429 (a call the server did not count).
    pub fn observe(&mut self, now: Instant, bucket: Bucket, refused: bool) {
        self.inflight = self.inflight.saturating_sub(1);
        self.last = Some((now, bucket));
        if refused {
            // Not counted by the server. The calls in flight when the bucket ran dry are all
            // refused together, so a refusal says nothing about the rate itself.
            return;
        }
        self.counted += 1;
        // A full bucket throws the refill away, and one near full may have topped out
        // between two answers: only a bucket less than half full shows the whole refill.
        if bucket.limit < 2 || bucket.remaining >= half(bucket.limit) {
            self.window = None;
            let raised_lately = self
                .raised
                .is_some_and(|at| now.saturating_duration_since(at) < MIN_WINDOW);
            if self.pacing
                && !self.measured
                && !raised_lately
                && bucket.remaining + 1 >= bucket.limit
            {
                // Paced by the first guess and still full: the guess is too low to learn the
                // real rate from. Raise it until the bucket drains.
                self.rate = self.rate.map(|r| r * 1.25);
                self.raised = Some(now);
            }
            return;
        }
        // Until a window has run, a guess: refilling what is used of the bucket takes `Reset`
        // whole seconds at most, so this is not above the real rate, and comes closer to it
        // the more of the bucket is used.
        if !self.measured
            && let Some(reset) = bucket.reset.filter(|&r| r > 0)
        {
            self.rate = Some(f64::from(bucket.limit - bucket.remaining) / f64::from(reset));
        }
        let start = Window {
            at: now,
            remaining: bucket.remaining,
            counted: self.counted,
        };
        let Some(w) = self.window else {
            self.window = Some(start);
            return;
        };
        let elapsed = now.saturating_duration_since(w.at);
        if elapsed >= MIN_WINDOW {
            let refilled = f64::from(bucket.remaining) - f64::from(w.remaining)
                + (self.counted - w.counted) as f64;
            // One call more or less must be a small share of the count.
            if refilled >= MIN_REFILLED {
                self.rate = Some(refilled / elapsed.as_secs_f64());
                self.measured = true;
            }
        }
        if elapsed >= MAX_WINDOW {
            self.window = Some(start);
        }
    }

    /// The server's bucket as of `now`, for metrics: the last answer's limit and remaining,
    /// or a full bucket once its `X-RateLimit-Reset` (or [`STALE`]) has passed since.
    pub fn bucket_now(&self, now: Instant) -> Option<Bucket> {
        let (seen, mut bucket) = self.last?;
        let refilled_after = bucket
            .reset
            .map_or(STALE, |r| Duration::from_secs(u64::from(r)).min(STALE));
        if now.saturating_duration_since(seen) >= refilled_after {
            bucket.remaining = bucket.limit;
        }
        Some(bucket)
    }

    /// A call given a slot ended without an answer that says anything (a lost connection).
    pub fn lost(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// A call is going out now (after its [delay](Self::delay)); it must later be
    /// [observed](Self::observe) or [lost](Self::lost).
    pub fn sending(&mut self) {
        self.inflight += 1;
    }

    /// An answer came without rate-limit headers: the server does not limit calls.
    pub fn unlimited(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
        self.unlimited = true;
    }

    /// When the next call may go.
    ///
    /// - Nothing is known yet: one call goes first and the others wait for its answer.
    /// - The bucket is known but not the rate: calls go while the bucket, less the calls on
    ///   their way, has room; then they wait for answers.
    /// - The rate is known: calls go at once while the bucket holds more than its reserve,
    ///   and below it each gets the next slot at the paced rate.
    pub fn delay(&mut self, now: Instant) -> Wait {
        const RECHECK: Duration = Duration::from_millis(10);
        if self.unlimited {
            return Wait::Go;
        }
        let Some((seen, mut bucket)) = self.last else {
            return if self.inflight == 0 {
                Wait::Go
            } else {
                Wait::Recheck(RECHECK)
            };
        };
        if now.saturating_duration_since(seen) > STALE {
            // The bucket has refilled since.
            self.pacing = false;
            return Wait::Go;
        }
        // What the bucket will hold once the calls already on their way have landed.
        bucket.remaining = bucket.remaining.saturating_sub(self.inflight);
        let Some(rate) = self.rate else {
            return if bucket.remaining > 0 {
                Wait::Go
            } else {
                Wait::Recheck(RECHECK)
            };
        };
        // Pacing starts below the reserve and ends once the bucket is half full again.
        let reserve = reserve(bucket.limit);
        let half = half(bucket.limit);
        if bucket.remaining < reserve {
            self.pacing = true;
        } else if bucket.remaining >= half {
            self.pacing = false;
        }
        if !self.pacing {
            // Calls already given slots keep them; when pacing resumes, it resumes after
            // them, so no slot is given twice.
            return Wait::Go;
        }
        // A little under the learned rate when the bucket is nearly empty, a little over it
        // when it holds twice the reserve: an estimate a few percent off settles the bucket
        // at a level in between instead of emptying it (429s) or leaving it full (waste).
        let fill = (f64::from(bucket.remaining) / f64::from(reserve)).min(2.0);
        let paced = rate * (0.95 + 0.05 * fill);
        let interval = Duration::from_secs_f64(1.0 / paced.max(0.01));
        let slot = self.next.map_or(now, |n| n.max(now));
        self.next = Some(slot + interval);
        Wait::Slot(slot - now)
    }
}

/// What [`Pacer::delay`] tells a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Go now.
    Go,
    /// Go after this long: the slot is the call's.
    Slot(Duration),
    /// Ask again after this long (nothing was reserved).
    Recheck(Duration),
}

/// Below this many calls left in the bucket, calls are spaced.
fn reserve(limit: u32) -> u32 {
    (limit / 10).max(5)
}

/// Once the bucket holds this many again, calls go at the ceiling.
fn half(limit: u32) -> u32 {
    (limit / 2).max(reserve(limit) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GCRA bucket like throttled's, at `rate` per second with `burst`.
    struct Server {
        interval: f64,
        tolerance: f64,
        tat: f64,
        limit: u32,
    }

    impl Server {
        fn new(rate: f64, burst: u32) -> Self {
            let interval = 1.0 / rate;
            Server {
                interval,
                tolerance: interval * f64::from(burst + 1),
                tat: 0.0,
                limit: burst + 1,
            }
        }

        /// One call at `now` seconds: whether it was refused, and the bucket after it.
        fn call(&mut self, now: f64) -> (bool, Bucket) {
            let tat = self.tat.max(now);
            let new_tat = tat + self.interval;
            if new_tat - self.tolerance > now {
                return (
                    true,
                    Bucket {
                        limit: self.limit,
                        remaining: 0,
                        reset: Some((tat - now).ceil() as u32),
                    },
                );
            }
            self.tat = new_tat;
            let remaining = ((self.tolerance - (new_tat - now)) / self.interval)
                .floor()
                .max(0.0);
            (
                false,
                Bucket {
                    limit: self.limit,
                    remaining: remaining as u32,
                    reset: Some((new_tat - now).ceil() as u32),
                },
            )
        }
    }

    /// `workers` callers send `n` calls between them as fast as the pacer lets, each
    /// answered `latency` after it reaches the server; a 429 is retried after 10 ms, as the
    /// client does once the rate is known. Returns (seconds taken, 429s).
    fn burst(rate: f64, burst_size: u32, n: u32, workers: usize, latency: f64) -> (f64, u32) {
        #[derive(Clone, Copy)]
        enum Event {
            /// A worker asks for a slot.
            Ask,
            /// It asks again after a 429.
            Again,
            /// Its call leaves.
            Send,
            /// The answer arrives.
            Answer(bool, Bucket),
        }
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let mut server = Server::new(rate, burst_size);
        let mut pacer = Pacer::default();
        let mut events: Vec<(f64, Event)> = (0..workers)
            .map(|w| (w as f64 * 0.001, Event::Ask))
            .collect();
        let (mut done, mut refused, mut asked, mut end) = (0, 0, 0, 0.0_f64);
        while done < n {
            let (i, _) = events
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                .expect("work is left");
            let (t, event) = events.swap_remove(i);
            match event {
                Event::Ask if asked >= n => {}
                Event::Ask => match pacer.delay(at(t)) {
                    Wait::Go => {
                        asked += 1;
                        events.push((t, Event::Send));
                    }
                    Wait::Slot(d) => {
                        asked += 1;
                        events.push((t + d.as_secs_f64(), Event::Send));
                    }
                    Wait::Recheck(d) => events.push((t + d.as_secs_f64(), Event::Ask)),
                },
                Event::Send => {
                    pacer.sending();
                    let (limited, bucket) = server.call(t);
                    events.push((t + latency, Event::Answer(limited, bucket)));
                }
                Event::Again => match pacer.delay(at(t)) {
                    Wait::Go => events.push((t, Event::Send)),
                    Wait::Slot(d) => events.push((t + d.as_secs_f64(), Event::Send)),
                    Wait::Recheck(d) => events.push((t + d.as_secs_f64(), Event::Again)),
                },
                Event::Answer(limited, bucket) => {
                    pacer.observe(at(t), bucket, limited);
                    if limited {
                        refused += 1;
                        events.push((t + 0.01, Event::Again));
                    } else {
                        done += 1;
                        end = end.max(t);
                        events.push((t + 0.001, Event::Ask));
                    }
                }
            }
        }
        (end, refused)
    }

    #[test]
    fn a_burst_runs_at_the_servers_rate_without_429s() {
        // Mattermost's default burst is 100; a small one leaves less room to learn in.
        for (rate, burst_size, at_least) in [
            (10.0, 100, 0.95),
            (50.0, 100, 0.95),
            (100.0, 100, 0.95),
            (50.0, 20, 0.85),
            // A 20-call bucket at 200/s refills in a tenth of a second: there is little to
            // learn from before it is full again.
            (200.0, 20, 0.6),
        ] {
            let n = 1000;
            let (took, refused) = burst(rate, burst_size, n, 32, 0.01);
            let ideal = f64::from(n - burst_size - 1) / rate;
            let efficiency = ideal / took;
            assert!(
                efficiency >= at_least,
                "{rate}/s burst {burst_size}: took {took:.2}s, ideal {ideal:.2}s ({:.1} %)",
                efficiency * 100.0
            );
            assert!(
                refused <= n / 50,
                "{rate}/s burst {burst_size}: {refused} refusals"
            );
        }
    }

    #[test]
    fn nothing_is_paced_before_the_rate_is_known_or_while_the_bucket_is_full() {
        let now = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.delay(now), Wait::Go);
        p.observe(
            now,
            Bucket {
                limit: 101,
                remaining: 100,
                reset: None,
            },
            false,
        );
        assert_eq!(p.rate(), None);
        assert_eq!(p.delay(now), Wait::Go);
    }

    #[test]
    fn the_rate_is_learned_from_a_draining_bucket() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let bucket = |remaining: u32| Bucket {
            limit: 101,
            remaining,
            reset: None,
        };
        // 66 calls in 2.2 s while the server put back 22 (10/s): remaining 45 → 1. The first
        // second's 10 are too few to go by.
        for i in 0..=66u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 1000 / 30);
            p.observe(at, bucket(45 + i / 3 - i), false);
            if i == 30 {
                assert_eq!(p.rate(), None, "10 put back is too few to trust");
            }
        }
        let rate = p.rate().expect("learned");
        assert!((rate - 10.0).abs() < 0.5, "{rate}");
    }

    #[test]
    fn headers_are_read_and_their_absence_is_nothing() {
        let mut h = HeaderMap::new();
        assert_eq!(Bucket::from_headers(&h), None);
        h.insert("X-Ratelimit-Limit", "101".parse().unwrap());
        h.insert("X-Ratelimit-Remaining", "42".parse().unwrap());
        assert_eq!(
            Bucket::from_headers(&h),
            Some(Bucket {
                limit: 101,
                remaining: 42,
                reset: None
            })
        );
    }

    #[test]
    fn the_bucket_for_metrics_is_the_last_answer_until_the_server_says_it_refilled() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.bucket_now(t0), None, "nothing heard yet");
        let drained = Bucket {
            limit: 101,
            remaining: 3,
            reset: Some(10),
        };
        p.sending();
        p.observe(t0, drained, false);
        assert_eq!(p.bucket_now(t0 + Duration::from_secs(9)), Some(drained));
        let full = Bucket {
            remaining: 101,
            ..drained
        };
        assert_eq!(p.bucket_now(t0 + Duration::from_secs(10)), Some(full));
        let no_reset = Bucket {
            reset: None,
            ..drained
        };
        p.observe(t0, no_reset, false);
        assert_eq!(p.bucket_now(t0 + Duration::from_secs(59)), Some(no_reset));
        assert_eq!(
            p.bucket_now(t0 + STALE).map(|b| b.remaining),
            Some(101),
            "without a reset, an answer older than STALE says the bucket refilled"
        );
    }
}
