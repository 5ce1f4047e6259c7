//! One connection per remote node, dialled lazily and shared by every request to it. Used
//! by clients (to peers), by peers (to other peers, for repair copies) and by the tracker
//! (orders to peers), each dialling with its own role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use swarmfs_proto::{NodeId, Role};

use crate::{dial, Connection, NetError, Swarm};

pub struct Pool {
    swarm: Arc<Swarm>,
    role: Role,
    slots: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl Pool {
    pub fn new(swarm: Arc<Swarm>, role: Role) -> Pool {
        Pool { swarm, role, slots: Mutex::new(HashMap::new()) }
    }

    /// A live connection to `node`, dialling its addresses in order if there is none.
    pub async fn get(&self, node: NodeId, addrs: &[String]) -> Result<Connection, NetError> {
        let slot = self.slots.lock().expect("pool lock").entry(node).or_default().clone();
        // Holding the per-node async lock while dialling makes concurrent callers share one
        // dial instead of opening one connection each.
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let mut last = NetError::Closed;
        for addr in addrs {
            match dial(&self.swarm, addr, node, self.role).await {
                Ok((c, _events)) => {
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Forgets `node`'s connection (it left): the next `get` dials anew.
    pub fn forget(&self, node: &NodeId) {
        self.slots.lock().expect("pool lock").remove(node);
    }
}
