//! Background work in one shape. A [`Worker`] does one step of work at a time and says
//! whether more is waiting; the [`Runner`] calls it again at once, after its idle period,
//! or after a growing back-off when a step fails, records its status for `swarmfs health`,
//! and on shutdown cancels every worker and waits for all of them.
//!
//! The reaper, the garbage collector and repair on the tracker and the scrubber on a peer
//! are all workers: none of them is a hand-rolled loop.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarmfs_proto::WorkerStatus;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More work is waiting: step again now.
    Busy,
    /// Nothing to do: step again after the worker's idle period.
    Idle,
}

pub trait Worker: Send + 'static {
    fn name(&self) -> String;
    /// How long to wait after a step that found nothing to do.
    fn idle_period(&self) -> Duration;
    /// One bounded piece of work. A step may be dropped at any await point on shutdown.
    fn step(&mut self) -> impl Future<Output = Result<Step, String>> + Send;
    /// What the worker did last, in words, for `health`.
    fn detail(&self) -> String {
        String::new()
    }
    /// Units of work done since start.
    fn done(&self) -> u64 {
        0
    }
}

/// Paces work to a byte rate (a leaky bucket): each caller waits until the bytes admitted
/// before it fit the rate. Rate 0 admits everything at once. Shared by repair orders
/// (`--repair-rate`) and a sharer's uploads (`--upload-rate`).
pub struct RateLimiter {
    rate: u64,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    /// `rate` in bytes per second.
    pub fn new(rate: u64) -> RateLimiter {
        RateLimiter { rate, next: tokio::sync::Mutex::new(tokio::time::Instant::now()) }
    }

    pub async fn admit(&self, len: u64) {
        if self.rate == 0 {
            return;
        }
        let due = {
            let mut next = self.next.lock().await;
            let due = (*next).max(tokio::time::Instant::now());
            *next = due + Duration::from_secs_f64(len as f64 / self.rate as f64);
            due
        };
        tokio::time::sleep_until(due).await;
    }
}

/// The longest back-off after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs workers until shutdown; see the module docs.
pub struct Runner {
    set: JoinSet<()>,
    statuses: Arc<Mutex<Vec<Arc<Mutex<WorkerStatus>>>>>,
    shutdown: CancellationToken,
}

/// A cheap handle to read every worker's status from elsewhere (a request handler).
#[derive(Clone, Default)]
pub struct Statuses(Arc<Mutex<Vec<Arc<Mutex<WorkerStatus>>>>>);

impl Statuses {
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        self.0.lock().expect("statuses").iter().map(|s| s.lock().expect("status").clone()).collect()
    }
}

impl Runner {
    /// Workers stop when `shutdown` is cancelled (or [`Runner::shutdown`] is called).
    pub fn new(shutdown: CancellationToken) -> Runner {
        Runner { set: JoinSet::new(), statuses: Arc::default(), shutdown: shutdown.child_token() }
    }

    pub fn statuses(&self) -> Statuses {
        Statuses(self.statuses.clone())
    }

    pub fn spawn<W: Worker>(&mut self, mut worker: W) {
        let status = Arc::new(Mutex::new(WorkerStatus {
            name: worker.name(),
            state: "idle".into(),
            detail: String::new(),
            done: 0,
            errors: 0,
            last_error: None,
        }));
        self.statuses.lock().expect("statuses").push(status.clone());
        let shutdown = self.shutdown.clone();
        let set_state = move |state: &str, w: &W, err: Option<String>| {
            let mut s = status.lock().expect("status");
            s.state = state.into();
            s.detail = w.detail();
            s.done = w.done();
            if let Some(e) = err {
                s.errors += 1;
                s.last_error = Some(e);
            }
        };
        self.set.spawn(async move {
            let name = worker.name();
            let mut failures = 0u32;
            loop {
                set_state("working", &worker, None);
                let step = tokio::select! {
                    r = worker.step() => r,
                    _ = shutdown.cancelled() => break,
                };
                let wait = match step {
                    Ok(Step::Busy) => {
                        failures = 0;
                        set_state("working", &worker, None);
                        // Yield so a worker that is always busy cannot starve the runtime.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(Step::Idle) => {
                        failures = 0;
                        set_state("idle", &worker, None);
                        worker.idle_period()
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let wait = (worker.idle_period().max(Duration::from_millis(250)) * 2u32.pow(failures.min(8)))
                            .min(MAX_BACKOFF);
                        if failures == 1 {
                            warn!(worker = %name, "{e}; retrying in {wait:?}");
                        } else {
                            debug!(worker = %name, failures, "{e}; retrying in {wait:?}");
                        }
                        set_state("backing off", &worker, Some(e));
                        wait
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            set_state("stopped", &worker, None);
        });
    }

    /// Cancels every worker and waits until all have stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while let Some(r) = self.set.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    warn!("a background worker panicked: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        left: u32,
        fail_once: bool,
        steps: u64,
    }

    impl Worker for Counter {
        fn name(&self) -> String {
            "counter".into()
        }
        fn idle_period(&self) -> Duration {
            Duration::from_secs(3600)
        }
        async fn step(&mut self) -> Result<Step, String> {
            if self.fail_once {
                self.fail_once = false;
                return Err("first step fails".into());
            }
            self.steps += 1;
            if self.left == 0 {
                return Ok(Step::Idle);
            }
            self.left -= 1;
            Ok(Step::Busy)
        }
        fn done(&self) -> u64 {
            self.steps
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_admissions_by_their_bytes() {
        let limit = RateLimiter::new(1000);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            limit.admit(500).await;
        }
        // The first is admitted at once, each next one 0.5 s after the one before.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        RateLimiter::new(0).admit(u64::MAX).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_steps_while_busy_backs_off_after_an_error_idles_and_stops_on_shutdown() {
        let mut runner = Runner::new(CancellationToken::new());
        runner.spawn(Counter { left: 5, fail_once: true, steps: 0 });
        let statuses = runner.statuses();
        // Paused time: the back-off and the idle sleep advance instantly once nothing else runs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = &statuses.snapshot()[0];
            if s.state == "idle" && s.done == 6 {
                assert_eq!(s.errors, 1);
                assert_eq!(s.last_error.as_deref(), Some("first step fails"));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "worker never went idle: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        runner.shutdown().await;
        assert_eq!(statuses.snapshot()[0].state, "stopped");
    }
}
