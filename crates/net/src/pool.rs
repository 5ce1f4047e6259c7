//! One connection per remote node, dialled lazily and shared by every request to it. Used
//! by clients (to peers), by peers (to other peers, for repair copies) and by the tracker
//! (orders to peers), each dialling with its own role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use swarmfs_proto::{LinkId, NodeId, PeerInfo, Reach, Role};

use crate::auth::{link_secret, Secret};
use crate::dialer::{PathCounts, Rendezvous};
use crate::rpc::Dialer;
use crate::{Connection, NetError, Swarm};

pub struct Pool {
    swarm: Arc<Swarm>,
    role: Role,
    slots: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
    /// The tracker, which brokers punches and relays to nodes behind NAT; without it,
    /// only direct dials.
    rendezvous: Option<Rendezvous>,
    paths: PathCounts,
}

impl Pool {
    pub fn new(swarm: Arc<Swarm>, role: Role) -> Pool {
        Pool { swarm, role, slots: Mutex::new(HashMap::new()), rendezvous: None, paths: PathCounts::default() }
    }

    /// Reaches nodes behind NAT through `tracker` (see [`crate::dialer`]).
    pub fn with_rendezvous(mut self, tracker: Rendezvous) -> Pool {
        self.rendezvous = Some(tracker);
        self
    }

    /// Connections opened by each path since start.
    pub fn paths(&self) -> &PathCounts {
        &self.paths
    }

    /// A live connection to `node`, dialling its addresses in order if there is none.
    pub async fn get(&self, node: NodeId, addrs: &[String]) -> Result<Connection, NetError> {
        self.get_via(node, addrs, None, Reach::Direct).await
    }

    /// A live connection to the peer `p`, by whichever path reaches it (a peer behind NAT
    /// through the tracker), with the secret its `link` says.
    pub async fn connect(&self, p: &PeerInfo) -> Result<Connection, NetError> {
        self.get_via(p.node, &p.addrs, p.link, p.reach).await
    }

    /// Like [`Pool::get`], for a node that serves under link `link` (a link holder's cached
    /// source): dialled with that link's secret, which a node knowing the swarm secret
    /// derives, and a link's holder has for its own link only.
    pub async fn get_via(
        &self,
        node: NodeId,
        addrs: &[String],
        link: Option<LinkId>,
        reach: Reach,
    ) -> Result<Connection, NetError> {
        let secret = match (&self.swarm.secret, link) {
            (own, None) => own.clone(),
            (Secret::Swarm(k), Some(id)) => Secret::Link { id, secret: link_secret(k, &id) },
            (Secret::Link { id: mine, .. }, Some(id)) if *mine == id => self.swarm.secret.clone(),
            (Secret::Link { .. }, Some(_)) => {
                return Err(NetError::NotMember("that source serves another link".into()))
            }
        };
        let slot = self.slots.lock().expect("pool lock").entry(node).or_default().clone();
        // Holding the per-node async lock while dialling makes concurrent callers share one
        // dial instead of opening one connection each.
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let member = self.swarm.member.as_ref().filter(|_| link.is_none());
        let d = Dialer { identity: &self.swarm.identity, secret: &secret, member, role: self.role };
        let (c, _path) = crate::dialer::reach(&d, self.rendezvous.as_ref(), node, addrs, reach, &self.paths).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The identity and secret this pool dials with.
    pub fn swarm(&self) -> &Arc<Swarm> {
        &self.swarm
    }

    /// Forgets `node`'s connection (it left): the next `get` dials anew.
    pub fn forget(&self, node: &NodeId) {
        self.slots.lock().expect("pool lock").remove(node);
    }
}
