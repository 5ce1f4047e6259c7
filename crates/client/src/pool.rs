//! One connection per peer, dialled lazily and shared by every request to that peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use swarmfs_net::{dial, Connection, NetError, Swarm};
use swarmfs_proto::{NodeId, Role};

pub struct Pool {
    swarm: Arc<Swarm>,
    slots: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl Pool {
    pub fn new(swarm: Arc<Swarm>) -> Pool {
        Pool { swarm, slots: Mutex::new(HashMap::new()) }
    }

    /// A live connection to `node`, dialling its addresses in order if there is none.
    pub async fn get(&self, node: NodeId, addrs: &[String]) -> Result<Connection, NetError> {
        let slot = self.slots.lock().expect("pool lock").entry(node).or_default().clone();
        // Holding the per-peer async lock while dialling makes concurrent callers share one
        // dial instead of opening one connection each.
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let mut last = NetError::Closed;
        for addr in addrs {
            match dial(&self.swarm, addr, node, Role::Client).await {
                Ok((c, _events)) => {
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
