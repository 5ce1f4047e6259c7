//! The swarm's trackers: every address its token names, one identity. A swarm with several
//! trackers (one PostgreSQL database behind them) is reached through whichever answers:
//! [`Trackers::dial_serving`] tries them in turn, starting with the one that answered last,
//! so a client or peer whose tracker died is back within one connect timeout per dead one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use swarmfs_proto::{Event, NodeId};
use tokio::sync::mpsc;

use crate::rpc::{dial_serving, Dialer, NoService, Service};
use crate::{Connection, NetError};

#[derive(Debug)]
pub struct Trackers {
    addrs: Vec<String>,
    node: NodeId,
    /// Index of the address that answered last.
    current: AtomicUsize,
}

impl Trackers {
    /// `addrs` in the token's order (the first is tried first); never empty in a valid token.
    pub fn new(addrs: Vec<String>, node: NodeId) -> Trackers {
        Trackers { addrs, node, current: AtomicUsize::new(0) }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The address that answered last (the first before any has).
    pub fn current(&self) -> &str {
        self.addrs.get(self.current.load(Ordering::Relaxed)).map(String::as_str).unwrap_or("")
    }

    /// A connection to one of the trackers, as [`dial_serving`]; returns which one answered.
    /// An answer that refuses this node (not a member, revoked, another swarm's tracker) is
    /// final: every tracker shares one database and would refuse it too.
    pub async fn dial_serving<S: Service>(
        &self,
        d: &Dialer<'_>,
        service: Option<Arc<S>>,
    ) -> Result<(Connection, mpsc::Receiver<Event>, String), NetError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = NetError::NoTracker("the token names none".into());
        for k in 0..self.addrs.len() {
            let i = (first + k) % self.addrs.len();
            let addr = &self.addrs[i];
            match dial_serving(d, addr, self.node, service.clone()).await {
                Ok((conn, events)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok((conn, events, addr.clone()));
                }
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => {
                    tracing::debug!(%addr, "tracker does not answer: {e}");
                    last = e;
                }
            }
        }
        if self.addrs.len() > 1 {
            return Err(NetError::Unreachable {
                node: "any tracker".into(),
                tried: format!("{} ({last})", self.addrs.join(", ")),
            });
        }
        Err(last)
    }

    /// [`Trackers::dial_serving`] for a node that serves nothing back (a client).
    pub async fn dial(&self, d: &Dialer<'_>) -> Result<(Connection, mpsc::Receiver<Event>, String), NetError> {
        self.dial_serving::<NoService>(d, None).await
    }
}
