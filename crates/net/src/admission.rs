//! Admission of connections that have not proven membership yet.
//!
//! Anyone who can reach a port can open TCP connections and sit on them. Those are bounded
//! apart from authenticated connections, and per source address, so a flood neither uses up
//! the slots members need nor crowds out other sources:
//!
//! - at most `max_pending` connections are in their handshake at once, at most
//!   `max_pending_per_source` from one IP address;
//! - when a new connection would pass either bound, the **oldest** pending connection of
//!   the source with the most pending ones is closed to make room. An honest handshake
//!   takes milliseconds, a squatter waits to be evicted: under a flood from the very address
//!   members use (one NAT, or 127.0.0.1 in tests) members still get through, because a slot
//!   lives far longer than their handshake needs;
//! - every handshake also has a short deadline (`Limits::handshake_timeout`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

pub(crate) struct Admission {
    state: Mutex<State>,
    max_pending: usize,
    max_per_source: usize,
}

#[derive(Default)]
struct State {
    next_id: u64,
    total: usize,
    /// Pending connections per source, oldest first.
    by_source: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
}

/// One pending connection's place; leaving it (drop) frees the place. `evicted` is
/// cancelled when a newer connection took it.
pub(crate) struct Pending {
    admission: Arc<Admission>,
    source: IpAddr,
    id: u64,
    pub evicted: CancellationToken,
}

impl Admission {
    pub fn new(max_pending: usize, max_per_source: usize) -> Arc<Admission> {
        Arc::new(Admission {
            state: Mutex::new(State::default()),
            max_pending: max_pending.max(1),
            max_per_source: max_per_source.max(1),
        })
    }

    /// Admits a connection from `source`, evicting the oldest pending connection of the
    /// busiest source when a bound would be passed. Returns the place and whether it evicted.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> (Pending, bool) {
        let mut st = self.state.lock().expect("admission lock");
        let mut evicted = false;
        let own = st.by_source.get(&source).map_or(0, |q| q.len());
        let victim_source = if own >= self.max_per_source {
            Some(source)
        } else if st.total >= self.max_pending {
            st.by_source.iter().max_by_key(|(_, q)| q.len()).map(|(s, _)| *s)
        } else {
            None
        };
        if let Some(v) = victim_source {
            if let Some((_, token)) = st.by_source.get_mut(&v).and_then(|q| q.pop_front()) {
                token.cancel();
                st.total -= 1;
                evicted = true;
            }
            if st.by_source.get(&v).is_some_and(|q| q.is_empty()) {
                st.by_source.remove(&v);
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        let token = CancellationToken::new();
        st.by_source.entry(source).or_default().push_back((id, token.clone()));
        st.total += 1;
        (Pending { admission: self.clone(), source, id, evicted: token }, evicted)
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state.lock().expect("admission lock").total
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut st = self.admission.state.lock().expect("admission lock");
        let Some(q) = st.by_source.get_mut(&self.source) else { return };
        // Absent when it was evicted (already uncounted).
        if let Some(pos) = q.iter().position(|(id, _)| *id == self.id) {
            q.remove(pos);
            let empty = q.is_empty();
            st.total -= 1;
            if empty {
                st.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_flood_from_one_source_evicts_its_own_oldest_first() {
        let a = Admission::new(4, 2);
        let (first, _) = a.admit(ip(1));
        let (_second, _) = a.admit(ip(1));
        let (_third, evicted) = a.admit(ip(1));
        assert!(evicted && first.evicted.is_cancelled(), "the oldest of that source made room");
        assert_eq!(a.pending(), 2);
        drop(first);
        assert_eq!(a.pending(), 2, "dropping an evicted place does not count it twice");
    }

    #[test]
    fn the_busiest_source_pays_when_the_table_is_full() {
        let a = Admission::new(3, 3);
        let (busy1, _) = a.admit(ip(1));
        let (busy2, _) = a.admit(ip(1));
        let (quiet, _) = a.admit(ip(2));
        let (_new, evicted) = a.admit(ip(3));
        assert!(evicted && busy1.evicted.is_cancelled());
        assert!(!busy2.evicted.is_cancelled() && !quiet.evicted.is_cancelled());
        drop((busy2, quiet, _new));
        assert_eq!(a.pending(), 0);
    }
}
