//! The group members of this process, so that a new member of a group can wait for one that
//! is leaving it (on some brokers a member joining while another leaves wedges the group).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use crate::client::lock;

/// A member: whether it is leaving, and whether its consumer is closed.
type Member = (Arc<AtomicBool>, watch::Receiver<bool>);

/// Consumers of this process by `bootstrap/group`.
fn members() -> &'static Mutex<HashMap<String, Vec<Member>>> {
    static MEMBERS: OnceLock<Mutex<HashMap<String, Vec<Member>>>> = OnceLock::new();
    MEMBERS.get_or_init(Default::default)
}

/// Records a member of group `key` (forgetting members that are gone).
pub(super) fn register_member(key: &str, leaving: Arc<AtomicBool>, done: watch::Receiver<bool>) {
    let mut all = lock(members());
    all.retain(|_, v| {
        v.retain(|(_, d)| !*d.borrow());
        !v.is_empty()
    });
    all.entry(key.to_string())
        .or_default()
        .push((leaving, done));
}

/// The members of group `key` leaving right now: each receiver turns `true` once it left.
pub(super) fn leaving_members(key: &str) -> Vec<watch::Receiver<bool>> {
    lock(members())
        .get(key)
        .map(|v| {
            v.iter()
                .filter(|(l, d)| l.load(Ordering::Acquire) && !*d.borrow())
                .map(|(_, d)| d.clone())
                .collect()
        })
        .unwrap_or_default()
}
