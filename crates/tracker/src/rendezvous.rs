//! The tracker's part in reaching peers behind NAT (see `swarmfs_net::dialer`): it orders
//! the target over its session to open its leg, matches the leg to the request by a token,
//! passes observed addresses on for hole punching, and splices relayed connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmfs_net::task::RateLimiter;
use swarmfs_net::{answer_raw, FirstRequest, RawStream};
use swarmfs_proto::{human_bytes as human, ErrorCode, NodeId, RendezvousPath, Request, Response, WorkerStatus};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{Tracker, TrackerError};

/// How long the target has to open its leg once ordered.
const LEG_TIMEOUT: Duration = Duration::from_secs(5);
/// A relay request this soon after a punch between the same two nodes means the punch failed.
const PUNCH_THEN_RELAY: Duration = Duration::from_secs(10);

/// A request waiting for its target's leg.
enum Waiting {
    Relay { target: NodeId, leg: oneshot::Sender<(u64, RawStream)> },
    Punch { target: NodeId, addr: oneshot::Sender<SocketAddr> },
}

/// Pending rendezvous and the relay's counters.
pub struct Rendezvous {
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// Punches brokered lately, by (dialer, target): a relay request that follows one
    /// means it failed (the dialer's punch may be dropped before it can say so).
    recent_punches: Mutex<HashMap<(NodeId, NodeId), Instant>>,
    pacer: RateLimiter,
    rate: u64,
    /// Bytes relayed both ways since start, counted as they pass.
    bytes: AtomicU64,
    relayed: AtomicU64,
    active: AtomicU64,
    punches: AtomicU64,
}

impl Rendezvous {
    /// `rate`: bytes per second all relayed connections together may use (0: no limit).
    pub fn new(rate: u64) -> Rendezvous {
        Rendezvous {
            waiting: Mutex::default(),
            recent_punches: Mutex::default(),
            pacer: RateLimiter::new(rate),
            rate,
            bytes: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            active: AtomicU64::new(0),
            punches: AtomicU64::new(0),
        }
    }

    /// The relay as `health` shows it, beside the workers: `done` counts bytes relayed.
    pub fn status(&self) -> WorkerStatus {
        let active = self.active.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let cap = if self.rate == 0 { "no cap".to_string() } else { format!("cap {}/s", human(self.rate)) };
        WorkerStatus {
            name: "relay".into(),
            state: if active > 0 { "working" } else { "idle" }.into(),
            detail: format!(
                "{active} relayed connections open, {} in all, {} relayed, {}; {} punches brokered",
                self.relayed.load(Ordering::Relaxed),
                human(bytes),
                cap,
                self.punches.load(Ordering::Relaxed)
            ),
            done: bytes,
            errors: 0,
            last_error: None,
        }
    }

    fn wait(&self, waiting: Waiting) -> u64 {
        let mut map = self.waiting.lock().expect("rendezvous");
        loop {
            let token = rand::random();
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(token) {
                e.insert(waiting);
                return token;
            }
        }
    }

    fn forget(&self, token: u64) {
        self.waiting.lock().expect("rendezvous").remove(&token);
    }
}

impl Tracker {
    /// Orders `target` over its session to open its leg for `token`.
    async fn order_leg(
        &self,
        target: NodeId,
        from: NodeId,
        token: u64,
        path: RendezvousPath,
    ) -> Result<(), TrackerError> {
        let Some(session) = self.session(&target) else {
            return Err(TrackerError::Unavailable(format!("peer {} is not connected to the tracker", target.short())));
        };
        let order = Request::Rendezvous { token, from, path };
        match session.call_timeout(&order, Bytes::new(), LEG_TIMEOUT).await? {
            (Response::Ok, _) => Ok(()),
            (Response::Error { message, .. }, _) => Err(TrackerError::Unavailable(message)),
            (other, _) => Err(TrackerError::Invalid(format!("unexpected answer to a rendezvous: {other:?}"))),
        }
    }

    /// `Punch { to }` from `from`, whose connection comes from `observed`: the address `to`
    /// punches from.
    pub(crate) async fn punch(&self, from: NodeId, observed: SocketAddr, to: NodeId) -> Result<Response, TrackerError> {
        let (tx, rx) = oneshot::channel();
        let token = self.rendezvous.wait(Waiting::Punch { target: to, addr: tx });
        let result = async {
            self.order_leg(to, from, token, RendezvousPath::Punch { at: observed.to_string() }).await?;
            tokio::time::timeout(LEG_TIMEOUT, rx)
                .await
                .map_err(|_| {
                    TrackerError::Unavailable(format!("peer {} did not answer the punch in time", to.short()))
                })?
                .map_err(|_| TrackerError::Unavailable("the punch was dropped".into()))
        }
        .await;
        self.rendezvous.forget(token);
        let addr = result?;
        self.rendezvous.punches.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.rendezvous.recent_punches.lock().expect("recent punches");
        recent.retain(|_, at| at.elapsed() < PUNCH_THEN_RELAY);
        recent.insert((from, to), Instant::now());
        drop(recent);
        debug!(from = %from.short(), to = %to.short(), %observed, %addr, "punch brokered");
        Ok(Response::PunchAt { addr: addr.to_string() })
    }

    /// `PunchReady { token }` from `node`, whose connection comes from `observed`.
    pub(crate) fn punch_ready(&self, node: NodeId, observed: SocketAddr, token: u64) -> Result<Response, TrackerError> {
        let mut waiting = self.rendezvous.waiting.lock().expect("rendezvous");
        match waiting.remove(&token) {
            Some(Waiting::Punch { target, addr }) if target == node => {
                let _ = addr.send(observed);
                Ok(Response::Ok)
            }
            Some(other) => {
                waiting.insert(token, other);
                Err(TrackerError::Forbidden("that punch is for another node".into()))
            }
            None => Err(TrackerError::Missing("no such punch (it timed out)".into())),
        }
    }

    /// A request that took its connection over: a relay's first or second leg.
    pub(crate) async fn relay_leg(&self, first: FirstRequest, mut stream: RawStream, shutdown: CancellationToken) {
        match first.req {
            Request::Relay { to } => {
                let (from, id) = (first.remote, first.id);
                let punched = self.rendezvous.recent_punches.lock().expect("recent punches").remove(&(from, to));
                if punched.is_some_and(|at| at.elapsed() < PUNCH_THEN_RELAY) {
                    self.registry.set_nat_reach(&to, swarmfs_proto::Reach::Relay);
                }
                match self.relay_join_wait(from, to).await {
                    Ok((join_id, leg)) => self.splice(from, to, (id, stream), (join_id, leg), shutdown).await,
                    Err(e) => {
                        debug!(from = %from.short(), to = %to.short(), "relay refused: {e}");
                        let _ = answer_raw(&mut stream, id, &e.to_response()).await;
                    }
                }
            }
            Request::RelayJoin { token } => {
                let refusal = {
                    let mut waiting = self.rendezvous.waiting.lock().expect("rendezvous");
                    match waiting.remove(&token) {
                        Some(Waiting::Relay { target, leg }) if target == first.remote => {
                            // The relay's first leg answers both and splices them.
                            let _ = leg.send((first.id, stream));
                            return;
                        }
                        Some(other) => {
                            waiting.insert(token, other);
                            Response::error(ErrorCode::Forbidden, "that relay is for another node")
                        }
                        None => Response::error(ErrorCode::NotFound, "no such relay (it timed out)"),
                    }
                };
                let _ = answer_raw(&mut stream, first.id, &refusal).await;
            }
            _ => {}
        }
    }

    /// Orders `to` to join a relay for `from`; its leg once it has.
    async fn relay_join_wait(&self, from: NodeId, to: NodeId) -> Result<(u64, RawStream), TrackerError> {
        let (tx, rx) = oneshot::channel();
        let token = self.rendezvous.wait(Waiting::Relay { target: to, leg: tx });
        let result = async {
            self.order_leg(to, from, token, RendezvousPath::Relay).await?;
            tokio::time::timeout(LEG_TIMEOUT, rx)
                .await
                .map_err(|_| TrackerError::Unavailable(format!("peer {} did not join the relay in time", to.short())))?
                .map_err(|_| TrackerError::Unavailable("the relay was dropped".into()))
        }
        .await;
        self.rendezvous.forget(token);
        result
    }

    async fn splice(
        &self,
        from: NodeId,
        to: NodeId,
        (id, mut a): (u64, RawStream),
        (join_id, mut b): (u64, RawStream),
        shutdown: CancellationToken,
    ) {
        // The target first: it starts its TLS server before the dialer's hello arrives.
        if answer_raw(&mut b, join_id, &Response::Ok).await.is_err()
            || answer_raw(&mut a, id, &Response::Ok).await.is_err()
        {
            return;
        }
        let r = &self.rendezvous;
        r.relayed.fetch_add(1, Ordering::Relaxed);
        r.active.fetch_add(1, Ordering::Relaxed);
        info!(from = %from.short(), to = %to.short(), "relaying a connection");
        let started = Instant::now();
        let bytes = swarmfs_net::dialer::splice(a, b, &r.bytes, &r.pacer, &shutdown).await;
        r.active.fetch_sub(1, Ordering::Relaxed);
        info!(
            from = %from.short(),
            to = %to.short(),
            bytes,
            secs = format!("{:.1}", started.elapsed().as_secs_f64()),
            "relayed connection closed"
        );
    }
}
