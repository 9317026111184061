//! One coordinator per store. Two coordinators planning and committing the same stages would commit a
//! growing corpus twice; so a coordinator takes a lease on the store before it plans, renews it while it
//! runs, checks it still holds it before every commit, and releases it at the end.
//!
//! Leases are `leases/<n>.json`; the highest `n` is in force. Only its holder rewrites it. Another
//! coordinator takes over an expired or released lease by creating `n + 1` with a conditional put
//! (`If-None-Match` on S3, create-new on a local folder): of several racing, exactly one wins. A holder
//! that finds a higher lease has lost the store and stops before committing.

use anyhow::{Result, bail};
use phrasesweep_schemas::record::{LEASES_DIR, Lease, lease_path};
use phrasesweep_workers::io::store::{Store, now_unix};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::{info, warn};

pub struct LeaseGuard {
    store: Store,
    n: u64,
    lease: Lease,
    lost: Arc<AtomicBool>,
    /// When the lease on the store expires, as of the last renewal that reached the store.
    valid_until: Arc<AtomicU64>,
    renewer: tokio::task::JoinHandle<()>,
}

/// The number of the lease in force and the lease itself, if any.
async fn current(store: &Store) -> Result<Option<(u64, Lease)>> {
    for path in store.list(LEASES_DIR).await?.iter().rev() {
        let Some(n) = path.strip_prefix(LEASES_DIR).and_then(|f| f.strip_suffix(".json")).and_then(|n| n.parse().ok()) else { continue };
        if let Some(lease) = store.get_json::<Lease>(path).await? {
            return Ok(Some((n, lease)));
        }
    }
    Ok(None)
}

impl LeaseGuard {
    /// Takes the store for `run`, or refuses with the holder's name while another coordinator holds it.
    pub async fn acquire(store: &Store, run: &str, lease_s: u64) -> Result<Self> {
        loop {
            let now = now_unix();
            let next = match current(store).await? {
                Some((_, held)) if !held.released && held.expires_unix > now => bail!(
                    "{} is in use by another coordinator: {} (run `{}`, since unix time {}; its lease runs {} s more unless renewed). \
                     Wait for it to finish or stop it: a coordinator that died frees the store {lease_s} s after its last renewal",
                    store.root_uri(),
                    held.holder,
                    held.run,
                    held.since_unix,
                    held.expires_unix - now
                ),
                Some((n, held)) => {
                    if !held.released {
                        warn!(holder = %held.holder, "taking over the expired lease of a coordinator that stopped renewing it");
                    }
                    n + 1
                }
                None => 0,
            };
            let lease = Lease { holder: phrasesweep_workers::env::host_pid(), run: run.to_string(), since_unix: now, expires_unix: now + lease_s, released: false };
            if store.put_if_absent(&lease_path(next), serde_json::to_vec_pretty(&lease)?).await? {
                info!(lease = next, "took the store's lease");
                let lost = Arc::new(AtomicBool::new(false));
                let valid_until = Arc::new(AtomicU64::new(lease.expires_unix));
                let renewer = tokio::spawn(renew(store.clone(), next, lease.clone(), lease_s, lost.clone(), valid_until.clone()));
                return Ok(Self { store: store.clone(), n: next, lease, lost, valid_until, renewer });
            }
            // Another coordinator created it first: look again, and be refused by its lease.
        }
    }

    /// Fails when another coordinator has taken the store (this one stopped renewing in time): its
    /// commits would race the new holder's.
    pub async fn check(&self) -> Result<()> {
        // Renewals that failed for as long as the lease lasts: another coordinator may take the store
        // any moment now, so no commit.
        if now_unix() + 1 >= self.valid_until.load(Ordering::SeqCst) {
            bail!("could not renew the lease on {} in time; stopping before a commit", self.store.root_uri());
        }
        let newer = current(&self.store).await?.filter(|(n, _)| *n > self.n);
        if self.lost.load(Ordering::SeqCst) || newer.is_some() {
            let by = newer.map_or_else(|| "another coordinator".into(), |(_, l)| l.holder);
            bail!("lost the lease on {} to {by}; stopping before a commit", self.store.root_uri());
        }
        Ok(())
    }

    /// Frees the store for the next coordinator now rather than at the lease's expiry.
    pub async fn release(mut self) -> Result<()> {
        self.renewer.abort();
        // A renewal in flight must not land after the release.
        let _ = (&mut self.renewer).await;
        if self.check().await.is_ok() {
            let lease = Lease { released: true, expires_unix: now_unix(), ..self.lease.clone() };
            self.store.put_json(&lease_path(self.n), &lease).await?;
        }
        Ok(())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews lease `n` every third of its length while no newer lease exists.
async fn renew(store: Store, n: u64, mut lease: Lease, lease_s: u64, lost: Arc<AtomicBool>, valid_until: Arc<AtomicU64>) {
    let every = Duration::from_secs(lease_s / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        match current(&store).await {
            Ok(Some((m, _))) if m > n => {
                warn!("another coordinator took the store's lease");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(e) => warn!("cannot check the store's lease: {e:#}"),
        }
        lease.expires_unix = now_unix() + lease_s;
        match store.put_json(&lease_path(n), &lease).await {
            Ok(()) => valid_until.store(lease.expires_unix, Ordering::SeqCst),
            Err(e) => warn!("cannot renew the store's lease: {e:#}"),
        }
    }
}
