//! Several trackers on one PostgreSQL database: shared membership, and work done once.
//!
//! Each tracker process is an *instance* (a random id) with a row in `trackers` whose lease
//! it renews every second ([`TICK`]); a lease not renewed for [`LEASE`] means the tracker
//! died. Each peer is owned by the tracker its session is on (see [`crate::registry`]):
//! - every change of an owned peer is sent as `NOTIFY swarmfs_membership` (the event, its
//!   owner, its origin) and written to `live_peers`; every tracker `LISTEN`s and forwards
//!   what it hears to its own subscribers, so a join reaches every peer in one database hop;
//! - every tick each tracker writes its owned peers' load figures to `live_peers` and reads
//!   the others', which also repairs anything a lost notification left wrong;
//! - a tracker whose lease lapsed has all its peers marked down by every other tracker
//!   until they reconnect (to a tracker that lives, within a few seconds: see
//!   `swarmfs_net::Trackers`).
//!
//! Work that must run once for the whole swarm (the collector, repair) runs on the holder
//! of the `workers` lease ([`Leadership`]), taken over by another tracker once it lapses.
//! The holder stops acting on it a second before it could lapse, so two trackers never
//! both act on it (clocks are the database's, not the trackers').
//!
//! Members and links changed at one tracker are reloaded by the others (`NOTIFY
//! swarmfs_credentials`), which close the connections of anything revoked.
//!
//! With SQLite there is one tracker and none of this runs: [`Leadership`] is always held.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use swarmfs_net::task::{Step, Worker};
use swarmfs_proto::{Event, NodeId, PeerInfo};
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, Client, Notification};
use tracing::{info, warn};

use crate::registry::Published;
use crate::Tracker;

/// How often a tracker renews its leases and syncs load figures.
pub const TICK: Duration = Duration::from_secs(1);
/// How long a lease holds unless renewed.
pub const LEASE: Duration = Duration::from_secs(5);
/// The work lease is acted on only this long after its last renewal (LEASE minus a margin
/// for a slow renewal and the database's round trip).
const ACT_FOR: Duration = Duration::from_secs(3);
/// Notifications waiting to be applied; beyond that they are dropped and the next sync
/// (one TICK later) puts things right.
const NOTE_QUEUE: usize = 4096;

const MEMBERSHIP: &str = "swarmfs_membership";
const CREDENTIALS: &str = "swarmfs_credentials";

/// Whether this tracker runs the once-for-all work: always with one tracker (SQLite); with
/// several, while its `workers` lease is fresh.
#[derive(Default)]
pub struct Leadership {
    shared: std::sync::atomic::AtomicBool,
    /// When the lease was last renewed (taken at the start of the renewal's round trip).
    renewed: Mutex<Option<Instant>>,
}

impl Leadership {
    pub fn leads(&self) -> bool {
        if !self.shared.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        self.renewed.lock().expect("leadership lock").is_some_and(|at| at.elapsed() < ACT_FOR)
    }

    fn set(&self, renewed: Option<Instant>) {
        self.shared.store(true, std::sync::atomic::Ordering::Relaxed);
        *self.renewed.lock().expect("leadership lock") = renewed;
    }
}

/// The tracker's side of the mesh: a worker on the tracker's runner.
pub struct Mesh {
    tracker: Arc<Tracker>,
    url: String,
    instance: Arc<str>,
    addr: String,
    link: Option<Link>,
    published: broadcast::Receiver<Published>,
    credentials: broadcast::Receiver<()>,
    next_tick: tokio::time::Instant,
    /// What was last written to `live_peers` for each owned peer, to write only changes.
    written: HashMap<NodeId, Vec<u8>>,
    heard: u64,
    told: u64,
    /// Trackers whose lease was fresh at the last sync: instance to address.
    live: HashMap<String, String>,
}

/// A live connection to the database for the mesh, with its notifications.
struct Link {
    client: Arc<Client>,
    notes: mpsc::Receiver<Notification>,
    io: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.io.abort();
    }
}

fn pg(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

impl Mesh {
    pub fn new(tracker: Arc<Tracker>, url: String, addr: String) -> Mesh {
        let instance: Arc<str> = Arc::from(hex::encode(rand::random::<[u8; 8]>()));
        tracker.leadership.set(None);
        Mesh {
            published: tracker.registry.published(),
            credentials: tracker.credentials_changed.subscribe(),
            tracker,
            url,
            instance,
            addr,
            link: None,
            next_tick: tokio::time::Instant::now(),
            written: HashMap::new(),
            heard: 0,
            told: 0,
            live: HashMap::new(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Connects, listens, registers this tracker and learns who is up at the others. Listens
    /// before reading the table, so nothing between the two is missed.
    async fn connect(&mut self) -> Result<(), String> {
        let (client, mut connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.map_err(|e| format!("mesh: {}", pg(e)))?;
        let (tx, notes) = mpsc::channel(NOTE_QUEUE);
        let io = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        // Full: dropped; the next sync puts it right.
                        let _ = tx.try_send(n);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!("the mesh's PostgreSQL connection ended: {e}");
                        break;
                    }
                }
            }
        });
        let link = Link { client: Arc::new(client), notes, io };
        link.client.batch_execute(&format!("LISTEN {MEMBERSHIP}; LISTEN {CREDENTIALS}")).await.map_err(pg)?;
        link.client
            .execute(
                "INSERT INTO trackers (instance, addr, lease_until) VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (instance) DO UPDATE SET lease_until = excluded.lease_until",
                &[&&*self.instance, &self.addr, &LEASE.as_secs_f64()],
            )
            .await
            .map_err(pg)?;
        self.link = Some(link);
        self.written.clear();
        info!(instance = %self.instance, "joined the trackers sharing this database");
        // Peers up at the others; our own are written by the first sync.
        self.sync().await?;
        // Members or links may have changed while this tracker was not listening.
        self.tracker.reload_credentials().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn client(&self) -> Result<Arc<Client>, String> {
        self.link.as_ref().map(|l| l.client.clone()).ok_or_else(|| "not connected".to_string())
    }

    /// Renews this tracker's lease and the work lease; marks down the peers of trackers
    /// whose lease lapsed; syncs load figures both ways.
    async fn tick(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let c = self.client()?;
        let lease = LEASE.as_secs_f64();
        let renewed = c
            .execute(
                "UPDATE trackers SET lease_until = now() + make_interval(secs => $2), addr = $3 WHERE instance = $1",
                &[&&*self.instance, &lease, &self.addr],
            )
            .await
            .map_err(pg)?;
        if renewed == 0 {
            // Taken for dead by the others (this process was paused past its lease): its
            // peers were marked down there; they are re-announced by the sync below.
            warn!("this tracker's lease had lapsed; rejoining");
            c.execute(
                "INSERT INTO trackers (instance, addr, lease_until) VALUES ($1, $2, now() + make_interval(secs => $3))",
                &[&&*self.instance, &self.addr, &lease],
            )
            .await
            .map_err(pg)?;
            self.written.clear();
        }
        let held = c
            .query_opt(
                "INSERT INTO leases (name, holder, until) VALUES ('workers', $1, now() + make_interval(secs => $2))
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                 WHERE leases.holder = excluded.holder OR leases.until < now()
                 RETURNING holder",
                &[&&*self.instance, &lease],
            )
            .await
            .map_err(pg)?
            .is_some();
        let was = self.tracker.leadership.leads();
        self.tracker.leadership.set(held.then_some(started));
        if held && !was {
            info!(instance = %self.instance, "this tracker now runs the collector and repair for all trackers");
        }
        self.sync().await
    }

    /// Writes the load figures of the peers this tracker owns; applies the others' (and any
    /// change a lost notification did not bring); forgets trackers that died.
    async fn sync(&mut self) -> Result<(), String> {
        let c = self.client()?;
        let live: HashMap<String, String> = c
            .query("SELECT instance, addr FROM trackers WHERE lease_until > now()", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (instance, addr) in live.iter().filter(|(i, _)| !self.live.contains_key(*i) && **i != *self.instance) {
            info!(tracker = %instance, %addr, "another tracker shares the database");
        }
        for (instance, addr) in self.live.iter().filter(|(i, _)| !live.contains_key(*i)) {
            warn!(tracker = %instance, %addr, "a tracker stopped renewing its lease (it died); its peers are down until they reconnect");
        }
        self.live = live.clone();
        // Peers owned by trackers that died: down here.
        self.tracker.registry.owners_gone(|o| !live.contains_key(o));
        c.execute(
            "DELETE FROM live_peers WHERE tracker NOT IN (SELECT instance FROM trackers WHERE lease_until > now())",
            &[],
        )
        .await
        .map_err(pg)?;
        c.execute("DELETE FROM trackers WHERE lease_until < now() - make_interval(secs => 60)", &[])
            .await
            .map_err(pg)?;
        // Ours, where changed.
        let owned = self.tracker.registry.owned_up();
        let owned_nodes: HashSet<NodeId> = owned.iter().map(|p| p.node).collect();
        for p in owned {
            self.write_live(&c, &p, false).await?;
        }
        self.written.retain(|n, _| owned_nodes.contains(n));
        // Theirs.
        let rows = c
            .query("SELECT tracker, info FROM live_peers WHERE tracker <> $1", &[&&*self.instance])
            .await
            .map_err(pg)?;
        let mut seen = HashSet::new();
        let remote: HashMap<NodeId, Arc<str>> = self.tracker.registry.remote_owners().into_iter().collect();
        for r in rows {
            let (owner, info): (String, Vec<u8>) = (r.get(0), r.get(1));
            let Ok(info) = postcard::from_bytes::<PeerInfo>(&info) else { continue };
            if owned_nodes.contains(&info.node) || !live.contains_key(&owner) {
                continue;
            }
            seen.insert(info.node);
            if remote.get(&info.node).is_some_and(|o| **o == *owner) {
                self.tracker.registry.remote_stats(&owner, &info);
            } else {
                self.tracker.registry.apply_remote(&owner, Event::PeerJoined(info));
            }
        }
        for (node, owner) in remote.iter().filter(|(n, _)| !seen.contains(*n)) {
            self.tracker.registry.apply_remote(owner, Event::PeerDown(*node));
        }
        Ok(())
    }

    /// Writes an owned peer's row in `live_peers`: always if `force`, else only if it
    /// changed since it was last written.
    async fn write_live(&mut self, c: &Client, p: &PeerInfo, force: bool) -> Result<(), String> {
        let info = postcard::to_stdvec(p).map_err(|e| e.to_string())?;
        if !force && self.written.get(&p.node) == Some(&info) {
            return Ok(());
        }
        c.execute(
            "INSERT INTO live_peers (node, tracker, info) VALUES ($1, $2, $3)
             ON CONFLICT (node) DO UPDATE SET tracker = excluded.tracker, info = excluded.info",
            &[&p.node.as_bytes().as_slice(), &&*self.instance, &info],
        )
        .await
        .map_err(pg)?;
        self.written.insert(p.node, info);
        Ok(())
    }

    /// Sends a change this tracker made, and records it in `live_peers` if it owns the peer.
    async fn tell(&mut self, owner: Option<Arc<str>>, ev: Event) -> Result<(), String> {
        let owner = owner.unwrap_or_else(|| self.instance.clone());
        let body = hex::encode(postcard::to_stdvec(&ev).map_err(|e| e.to_string())?);
        let c = self.client()?;
        if *owner == *self.instance {
            match &ev {
                Event::PeerJoined(p) | Event::PeerAddrChanged(p) if p.state.is_live() => {
                    self.write_live(&c, p, true).await?;
                }
                Event::PeerDown(n) | Event::PeerLeft(n) => {
                    c.execute(
                        "DELETE FROM live_peers WHERE node = $1 AND tracker = $2",
                        &[&n.as_bytes().as_slice(), &&*self.instance],
                    )
                    .await
                    .map_err(pg)?;
                    self.written.remove(n);
                }
                _ => {}
            }
        }
        c.execute("SELECT pg_notify($1, $2)", &[&MEMBERSHIP, &format!("{} {owner} {body}", self.instance)])
            .await
            .map_err(pg)?;
        self.told += 1;
        Ok(())
    }

    /// Applies what another tracker said.
    async fn heard(&mut self, n: Notification) -> Result<(), String> {
        if n.channel() == CREDENTIALS {
            if n.payload() != &*self.instance {
                self.tracker.reload_credentials().await.map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let mut parts = n.payload().splitn(3, ' ');
        let (Some(origin), Some(owner), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(());
        };
        if origin == &*self.instance {
            return Ok(());
        }
        let Some(ev) = hex::decode(body).ok().and_then(|b| postcard::from_bytes::<Event>(&b).ok()) else {
            warn!("an unreadable membership notice from tracker {origin}");
            return Ok(());
        };
        self.heard += 1;
        if owner == &*self.instance {
            // Another tracker drained (or undrained) one of this tracker's peers.
            if let Event::PeerAddrChanged(p) = &ev {
                self.tracker.registry.set_draining(&p.node, p.state == swarmfs_proto::PeerState::Draining);
            }
            return Ok(());
        }
        self.tracker.registry.apply_remote(owner, ev);
        Ok(())
    }

    async fn step_connected(&mut self) -> Result<(), String> {
        enum Next {
            Heard(Option<Notification>),
            Tell(Result<Published, broadcast::error::RecvError>),
            Credentials(Result<(), broadcast::error::RecvError>),
            Tick,
        }
        let deadline = self.next_tick;
        let link = self.link.as_mut().ok_or("not connected")?;
        let next = tokio::select! {
            n = link.notes.recv() => Next::Heard(n),
            p = self.published.recv() => Next::Tell(p),
            c = self.credentials.recv() => Next::Credentials(c),
            _ = tokio::time::sleep_until(deadline) => Next::Tick,
        };
        match next {
            Next::Heard(Some(n)) => self.heard(n).await,
            Next::Heard(None) => Err("the mesh's PostgreSQL connection ended".into()),
            Next::Tell(Ok((owner, ev))) => self.tell(owner, ev).await,
            // Missed some: the next sync writes the current state.
            Next::Tell(Err(broadcast::error::RecvError::Lagged(_))) => Ok(()),
            Next::Credentials(Ok(()) | Err(broadcast::error::RecvError::Lagged(_))) => {
                let c = self.client()?;
                c.execute("SELECT pg_notify($1, $2)", &[&CREDENTIALS, &&*self.instance]).await.map_err(pg)?;
                Ok(())
            }
            Next::Tell(Err(_)) | Next::Credentials(Err(_)) => Err("the tracker is shutting down".into()),
            Next::Tick => {
                self.next_tick = tokio::time::Instant::now() + TICK;
                self.tick().await
            }
        }
    }
}

/// A tracker stopping cleanly (SIGTERM) leaves at once: its row, its peers' rows and the work
/// lease go, so the others take its peers for down and one of them takes the work over now,
/// rather than when its lease would lapse. Best effort: a killed tracker's lease lapses.
pub async fn leave(url: &str, instance: &str) {
    let left = async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let io = tokio::spawn(connection);
        let r = client
            .batch_execute(&format!(
                "BEGIN; DELETE FROM live_peers WHERE tracker = '{instance}'; DELETE FROM leases WHERE holder = '{instance}';
                 DELETE FROM trackers WHERE instance = '{instance}'; COMMIT;"
            ))
            .await;
        drop(client);
        let _ = io.await;
        r
    };
    match tokio::time::timeout(Duration::from_secs(5), left).await {
        Ok(Ok(())) => info!(%instance, "left the trackers sharing the database"),
        Ok(Err(e)) => warn!("could not leave the trackers cleanly (the lease will lapse): {}", pg(e)),
        Err(_) => warn!("could not leave the trackers cleanly in 5 s (the lease will lapse)"),
    }
}

impl Worker for Mesh {
    fn name(&self) -> String {
        "trackers".into()
    }

    fn idle_period(&self) -> Duration {
        TICK
    }

    fn detail(&self) -> String {
        let role = if self.tracker.leadership.leads() {
            "runs collector and repair"
        } else {
            "standby for collector and repair"
        };
        format!("{} trackers live; this one {role}; {} changes told, {} heard", self.live.len(), self.told, self.heard)
    }

    fn done(&self) -> u64 {
        self.heard + self.told
    }

    async fn step(&mut self) -> Result<Step, String> {
        if self.link.is_none() {
            self.tracker.leadership.set(None);
            self.connect().await?;
        }
        if let Err(e) = self.step_connected().await {
            // Reconnected by the next step, after the runner's back-off; not leading meanwhile.
            self.link = None;
            self.tracker.leadership.set(None);
            return Err(e);
        }
        Ok(Step::Busy)
    }
}
