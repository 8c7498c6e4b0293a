//! One GC pass, and the loop that runs passes while this process holds the lease.
//!
//! A pass, in order (each step is idempotent; a pass cut short by a crash is finished
//! by the next one):
//! 1. **Doom**: every sealed extent of a writer's stream that lies below the writer's
//!    low-water mark and is named by no row is doomed in the catalog (from then on, no
//!    write naming it commits).
//! 2. **Delete**: extents doomed at least `grace` ago are deleted from the metanode,
//!    which keeps a tombstone per copy, then marked deleted in the catalog.
//! 3. **Copies**: every tombstoned copy on a reachable datanode is deleted there, and
//!    the metanode told; copies on down datanodes wait for a later pass.
//! 4. **Compact**: a sealed extent below the writer's mark whose named bytes are under
//!    `compact_below` of its size has those bytes appended to GC's own stream of the
//!    same policy, and every row naming them switched to the copies with a
//!    compare-and-swap (a row changed meanwhile keeps its slices: the write wins, the
//!    copy is garbage). The extent, then unnamed, is doomed by a later pass.
//! 5. **Uploads**: multipart uploads older than `upload_age` are aborted (their parts'
//!    extents are then doomed by a later pass).
//! 6. **Transitions**: objects old enough for a transition rule are copied to GC's
//!    stream of the rule's policy and their rows switched with the same
//!    compare-and-swap (lazy erasure coding: hot data replicated, cold data coded). The
//!    extents they leave are compacted or doomed by later passes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{ClientError, DataNodeClient, MetaClient, Slice, StreamClient, StreamConfig, StreamWriter};
use futures::StreamExt;
use proto::meta::{ExtentInfo, MetaError, NodeInfo, NodeState, Policy, Tombstone};
use proto::{ExtentError, ExtentId, NodeId};
use tokio::sync::watch;

use crate::limits::{
    COMPACTIONS_PER_PASS, COMPACT_RETRY_FIRST_MIN, COMPACT_RETRY_FIRST_PASSES, COMPACT_RETRY_MAX, DATANODE_TIMEOUT,
    DELETES_IN_FLIGHT, DELETE_BATCH_MAX, PROGRESS_EVERY, TRANSITION_BYTES_PER_PASS, TRANSITION_SCAN_ROWS,
};
use crate::{now_ms, Catalog, Config, GcError, Status, GC_WRITER};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub doomed: u64,
    pub deleted: u64,
    pub copies_deleted: u64,
    pub bytes_reclaimed: u64,
    pub uploads_aborted: u64,
    pub compacted: u64,
    pub bytes_compacted: u64,
    pub transitioned: u64,
    pub bytes_transitioned: u64,
    /// Versions lifecycle rules deleted.
    pub lifecycle_deleted: u64,
    /// Time spent compacting and moving objects (both copy bytes).
    pub compaction_ms: u64,
    pub transition_ms: u64,
}

impl PassReport {
    /// Whether the pass did nothing (time spent looking is not doing).
    pub fn is_empty(&self) -> bool {
        PassReport { compaction_ms: 0, transition_ms: 0, ..self.clone() } == PassReport::default()
    }
}

pub struct Gc<C> {
    catalog: C,
    meta: MetaClient,
    sc: StreamClient,
    cfg: Config,
    /// GC's own writers (compaction output), one per policy, opened when first needed.
    writers: tokio::sync::Mutex<HashMap<Policy, StreamWriter>>,
    /// Extents whose compaction failed (a slice unreadable, or GC's own stream not
    /// writable): failures so far, and when to try again. The wait doubles with each
    /// failure (`limits::COMPACT_RETRY_*`), so that a few bad extents do not take every
    /// pass's compactions, and one that failed during an outage is compacted after it.
    uncompactable: parking_lot::Mutex<HashMap<ExtentId, (u32, Instant)>>,
    /// Per transition rule (bucket, prefix), the key its scan goes on after.
    cursors: parking_lot::Mutex<HashMap<(String, String), String>>,
    /// What the metrics show.
    shown: crate::metrics::Shown,
    /// Told how far each step of a pass is (`gc run --once` draws it).
    progress: Option<ProgressFn>,
}

/// How far a step of a pass is: its name, what is done and what there is in all.
pub type ProgressFn = Box<dyn Fn(&str, u64, u64) + Send + Sync>;

/// How long after its `failures`-th failed compaction an extent is tried again, with
/// passes every `interval`.
fn compact_retry(interval: Duration, failures: u32) -> Duration {
    let first = (interval * COMPACT_RETRY_FIRST_PASSES).max(COMPACT_RETRY_FIRST_MIN);
    (first * 2u32.saturating_pow(failures.saturating_sub(1)).min(1 << 16)).min(COMPACT_RETRY_MAX)
}

/// A sealed extent sparse enough to compact: its bytes named, and its size in bytes.
struct Sparse {
    info: ExtentInfo,
    live: u64,
    size: u64,
}

impl<C: Catalog> Gc<C> {
    pub fn new(catalog: C, meta: MetaClient, cfg: Config) -> Gc<C> {
        let sc = StreamClient::new(meta.clone(), StreamConfig::default());
        Gc {
            catalog,
            meta,
            sc,
            cfg,
            writers: Default::default(),
            uncompactable: Default::default(),
            cursors: Default::default(),
            shown: Default::default(),
            progress: None,
        }
    }

    /// Tells `f` how far each step of a pass is (`step`, done, in all) as it goes.
    pub fn with_progress(mut self, f: ProgressFn) -> Gc<C> {
        self.progress = Some(f);
        self
    }

    fn step(&self, name: &str, done: u64, total: u64) {
        if let Some(f) = &self.progress {
            f(name, done, total);
        }
    }

    /// What this GC's metrics collector reads (`metrics::collector`).
    pub fn status(&self) -> crate::metrics::Shown {
        self.shown.clone()
    }

    /// Runs a pass every `interval` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            "gc {}: a pass every {:?}, grace {:?}, uploads aborted after {:?}",
            self.cfg.holder,
            self.cfg.interval,
            self.cfg.grace,
            self.cfg.upload_age
        );
        loop {
            let t = Instant::now();
            let pass = self.pass().await;
            if matches!(pass, Ok(Some(_)) | Err(_)) {
                self.shown.pass_seconds.observe(t.elapsed().as_secs_f64());
            }
            match pass {
                Ok(Some(r)) if !r.is_empty() => tracing::info!(
                    "gc: doomed {} extents, deleted {}, deleted {} copies ({} bytes), compacted {} ({} bytes), \
                     aborted {} uploads, moved {} objects to another policy ({} bytes), \
                     deleted {} versions by lifecycle rules",
                    r.doomed,
                    r.deleted,
                    r.copies_deleted,
                    r.bytes_reclaimed,
                    r.compacted,
                    r.bytes_compacted,
                    r.uploads_aborted,
                    r.transitioned,
                    r.bytes_transitioned,
                    r.lifecycle_deleted
                ),
                Ok(_) => {}
                Err(e) => {
                    self.shown.failures.inc();
                    tracing::warn!("gc pass failed: {e}");
                    self.record_error(&e).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn record_error(&self, e: &GcError) {
        if let Ok(Some(mut st)) = self.catalog.load_status().await {
            st.last_error = Some(e.to_string());
            let _ = self.catalog.save_status(&st).await;
            *self.shown.last.lock() = Some(st);
        }
    }

    /// One pass, if this process holds (or takes) the lease; None when another does.
    pub async fn pass(&self) -> Result<Option<PassReport>, GcError> {
        if !self.catalog.try_lease(&self.cfg.holder, self.cfg.lease()).await? {
            // Another process runs the passes: show the totals it saved.
            if let Ok(Some(st)) = self.catalog.load_status().await {
                *self.shown.last.lock() = Some(st);
            }
            return Ok(None);
        }
        let base = self.catalog.load_status().await?.unwrap_or_default();
        *self.shown.last.lock() = Some(base.clone());
        let mut progress = Progress { base, saved: Instant::now() };
        let mut r = PassReport::default();
        // GC's own writers are idle between passes: what they wrote is below their floors.
        let floor = {
            let ws = self.writers.lock().await;
            (!ws.is_empty()).then(|| client::floor_of(ws.values()))
        };
        if let Some(low) = floor {
            self.catalog.set_low_water(GC_WRITER, low).await?;
        }
        let now = now_ms();
        let (doomed, sizes, sparse) = self.doom(&mut r).await?;
        let grace = self.cfg.grace.as_millis() as i64;
        let due: Vec<ExtentId> = doomed.iter().filter(|(_, &at)| at + grace <= now).map(|(&e, _)| e).collect();
        self.step("deleting extents", 0, due.len() as u64);
        for (i, chunk) in due.chunks(DELETE_BATCH_MAX).enumerate() {
            let deleted = self.meta.delete_extents(chunk).await?;
            self.catalog.mark_deleted(chunk, now).await?;
            r.deleted += deleted.len() as u64;
            self.step("deleting extents", (i * DELETE_BATCH_MAX + chunk.len()) as u64, due.len() as u64);
        }
        let copies_pending = self.delete_copies(&mut r).await?;
        self.compact(sparse, &mut r, &mut progress).await?;
        let before = now - self.cfg.upload_age.as_millis() as i64;
        for id in self.catalog.stale_uploads(before).await? {
            if self.catalog.abort_upload(&id).await? {
                tracing::info!("gc: aborted multipart upload {id}, older than {:?}", self.cfg.upload_age);
                r.uploads_aborted += 1;
            }
        }
        let day = self.cfg.lifecycle_day.as_millis() as i64;
        let lifecycle_error = match self.catalog.lifecycle(now_ms(), day).await {
            Ok(l) => {
                r.lifecycle_deleted += l.expired + l.noncurrent_deleted + l.markers_removed;
                r.uploads_aborted += l.uploads_aborted;
                if l.locked > 0 {
                    tracing::info!("gc: lifecycle: {} versions kept by Object Lock", l.locked);
                }
                None
            }
            Err(e) => {
                tracing::warn!("gc: lifecycle: {e}");
                Some(format!("lifecycle: {e}"))
            }
        };
        // Last: a rule that cannot be served now (too few datanodes for its policy) does
        // not hold up the rest, and says why in the status.
        let t = Instant::now();
        let transition_error = self.transition(&mut r, &mut progress).await.err().map(|e| {
            tracing::warn!("gc: transitions: {e}");
            format!("transitions: {e}")
        });
        r.transition_ms = t.elapsed().as_millis() as u64;

        let pending: Vec<(&ExtentId, &i64)> = doomed.iter().filter(|(e, _)| !due.contains(e)).collect();
        let mut st = totals(&progress.base, &r);
        st.holder = self.cfg.holder.clone();
        st.last_pass_ms = now_ms();
        st.passes += 1;
        st.extents_pending = pending.len() as u64;
        st.bytes_pending = pending.iter().map(|(e, _)| sizes.get(*e).copied().unwrap_or(0)).sum();
        st.oldest_pending_ms = pending.iter().map(|(_, &at)| at).min();
        st.copies_pending = copies_pending;
        st.last_error = transition_error.or(lifecycle_error);
        self.catalog.save_status(&st).await?;
        *self.shown.last.lock() = Some(st);
        Ok(Some(r))
    }

    /// Step 1. Returns every doomed extent not yet deleted (with when it was doomed),
    /// the device bytes of the sealed extents seen, and the sparse ones, sparsest first.
    async fn doom(&self, r: &mut PassReport) -> Result<Doomed, GcError> {
        let writers = self.catalog.writers().await?;
        let streams = self.catalog.streams().await?;
        let live = self.catalog.live().await?;
        let mut sparse = Vec::new();
        let mut doomed: HashMap<ExtentId, i64> = self.catalog.doomed().await?.into_iter().collect();
        let mut sizes = HashMap::new();
        let n = streams.len() as u64;
        self.step("scanning streams", 0, n);
        for (i, (id, owner)) in streams.into_iter().enumerate() {
            self.step("scanning streams", i as u64, n);
            // A writer that never said how low its writes go: nothing of it is collected.
            let Some(&low) = writers.get(&owner) else { continue };
            let view = match self.meta.stream(id).await {
                Ok(v) => v,
                Err(MetaError::NoSuchStream { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            // Open extents are never candidates (the metanode would refuse them too).
            for e in &view.extents {
                let Some(len) = e.sealed_len else { continue };
                sizes.insert(e.id, len * e.replicas.len() as u64);
                if e.id >= low || doomed.contains_key(&e.id) {
                    continue;
                }
                if let Some(&l) = live.get(&e.id) {
                    let size = logical_size(e.policy, len);
                    if (l as f64) < self.cfg.compact_below * size as f64 {
                        sparse.push(Sparse { info: e.clone(), live: l, size });
                    }
                    continue;
                }
                // Stamped now, not at the pass's start: the grace counts from the doom.
                let at = now_ms();
                if self.catalog.doom(e.id, at).await? {
                    tracing::debug!("gc: extent {} of stream {id} doomed ({len} bytes a copy)", e.id);
                    doomed.insert(e.id, at);
                    r.doomed += 1;
                }
            }
        }
        self.step("scanning streams", n, n);
        // Sparsest first: the most space back for the bytes copied.
        sparse.sort_by(|a, b| (a.live as f64 / a.size as f64).total_cmp(&(b.live as f64 / b.size as f64)));
        Ok((doomed, sizes, sparse))
    }

    /// Step 4: the sparsest extents, up to `COMPACTIONS_PER_PASS`. An extent that
    /// cannot be compacted now (a slice unreadable) is left for a later pass.
    async fn compact(&self, sparse: Vec<Sparse>, r: &mut PassReport, p: &mut Progress) -> Result<(), GcError> {
        let t = Instant::now();
        let now = Instant::now();
        let skip: HashSet<ExtentId> =
            self.uncompactable.lock().iter().filter(|(_, (_, at))| *at > now).map(|(e, _)| *e).collect();
        let todo: Vec<Sparse> =
            sparse.into_iter().filter(|s| !skip.contains(&s.info.id)).take(COMPACTIONS_PER_PASS).collect();
        let n = todo.len() as u64;
        for (i, s) in todo.into_iter().enumerate() {
            self.step("compacting extents", i as u64, n);
            match self.compact_one(&s.info).await {
                Ok(bytes) => {
                    self.uncompactable.lock().remove(&s.info.id);
                    tracing::info!(
                        "gc: compacted extent {} ({} of {} bytes named, {bytes} copied)",
                        s.info.id,
                        s.live,
                        s.size
                    );
                    r.compacted += 1;
                    r.bytes_compacted += bytes;
                    r.compaction_ms = t.elapsed().as_millis() as u64;
                    p.tick(&self.catalog, r).await;
                }
                Err(GcError::Stream(e)) => {
                    let mut u = self.uncompactable.lock();
                    let failures = u.get(&s.info.id).map_or(0, |(n, _)| *n) + 1;
                    let wait = compact_retry(self.cfg.interval, failures);
                    u.insert(s.info.id, (failures, Instant::now() + wait));
                    tracing::warn!(
                        "gc: compacting extent {} failed ({failures} times), trying again in {wait:?}: {e}",
                        s.info.id
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.step("compacting extents", n, n);
        r.compaction_ms = t.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Copies the named slices of `e` to GC's stream of its policy and switches every
    /// row naming them; returns the bytes copied.
    async fn compact_one(&self, e: &ExtentInfo) -> Result<u64, GcError> {
        let rows = self.catalog.naming(e.id).await?;
        let mut moved: HashMap<Slice, Slice> = HashMap::new();
        let mine = rows.iter().flat_map(|n| &n.slices).filter(|s| s.extent == e.id);
        let bytes = self.copy(e.policy, mine, &mut moved).await?;
        for n in &rows {
            let new: Vec<Slice> = n.slices.iter().map(|s| moved.get(s).copied().unwrap_or(*s)).collect();
            if !self.catalog.switch(&n.owner, &n.slices, &new).await? {
                tracing::debug!("gc: {} changed while extent {} was compacted; its copy is garbage", n.owner, e.id);
            }
        }
        Ok(bytes)
    }

    /// Appends each of `slices` not in `moved` to GC's stream of `policy` and records
    /// where its copy is; returns the bytes copied.
    async fn copy<'a>(
        &self,
        policy: Policy,
        slices: impl Iterator<Item = &'a Slice>,
        moved: &mut HashMap<Slice, Slice>,
    ) -> Result<u64, GcError> {
        let mut writers = self.writers.lock().await;
        let w = match writers.entry(policy) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(self.open_writer(policy).await?),
        };
        // Before the first append: what this copy writes is at or above it (GC's other
        // writers are idle now).
        self.catalog.set_low_water(GC_WRITER, w.floor()).await?;
        let mut bytes = 0u64;
        for s in slices {
            if moved.contains_key(s) {
                continue;
            }
            let data = self.sc.read(*s).await?;
            bytes += data.len() as u64;
            let copy = match w.append(data).await {
                Ok(c) => c,
                Err(err) => {
                    // A writer that failed is opened again on the next copy.
                    writers.remove(&policy);
                    return Err(err.into());
                }
            };
            moved.insert(*s, copy);
        }
        Ok(bytes)
    }

    /// Step 6: objects old enough for a transition rule are copied to GC's stream of
    /// the rule's policy and their rows switched (an object changed meanwhile keeps its
    /// bytes; the copy is garbage). At most `TRANSITION_BYTES_PER_PASS` a pass; each
    /// rule's scan goes on where the last pass left it. Copies sharing slices share
    /// their new ones when moved in the same pass.
    async fn transition(&self, r: &mut PassReport, p: &mut Progress) -> Result<(), GcError> {
        let t = Instant::now();
        let mut budget = TRANSITION_BYTES_PER_PASS;
        let mut copied = 0u64;
        let mut moved: HashMap<(Policy, Slice), Slice> = HashMap::new();
        for rule in self.catalog.transitions().await? {
            if budget == 0 {
                break;
            }
            let at = (rule.bucket.clone(), rule.prefix.clone());
            let from = self.cursors.lock().get(&at).cloned();
            let before = now_ms() - rule.after.as_millis() as i64;
            let (due, next) = self.catalog.due(&rule, from.as_deref(), before, TRANSITION_SCAN_ROWS).await?;
            let mut cursor = next;
            let mut last = from;
            for d in due {
                if d.size > budget && copied > 0 {
                    // The rest waits for the next pass, which starts after `last`.
                    cursor = last;
                    budget = 0;
                    break;
                }
                let mut mine: HashMap<Slice, Slice> =
                    d.slices.iter().filter_map(|s| moved.get(&(rule.policy, *s)).map(|c| (*s, *c))).collect();
                let bytes = match self.copy(rule.policy, d.slices.iter(), &mut mine).await {
                    Ok(b) => b,
                    Err(GcError::Stream(e @ client::StreamError::Unreadable { .. })) => {
                        tracing::warn!("gc: {}/{} cannot be read for its transition, skipped: {e}", rule.bucket, d.key);
                        last = Some(d.key);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let new: Vec<Slice> = d.slices.iter().map(|s| mine[s]).collect();
                if self.catalog.transit(&d.owner, &d.slices, &new, &rule).await? {
                    tracing::debug!("gc: {}/{} moved to {} ({bytes} bytes copied)", rule.bucket, d.key, rule.policy);
                    r.transitioned += 1;
                    r.bytes_transitioned += bytes;
                    r.transition_ms = t.elapsed().as_millis() as u64;
                    p.tick(&self.catalog, r).await;
                    moved.extend(mine.into_iter().map(|(s, c)| ((rule.policy, s), c)));
                } else {
                    tracing::debug!("gc: {}/{} changed during its transition; the copy is garbage", rule.bucket, d.key);
                }
                budget = budget.saturating_sub(bytes);
                copied += bytes;
                last = Some(d.key);
            }
            match cursor {
                Some(c) => self.cursors.lock().insert(at, c),
                None => self.cursors.lock().remove(&at),
            };
        }
        Ok(())
    }

    /// GC's writer of `policy`: its stream recorded under `GC_WRITER`, made the first
    /// time. Opening fences a previous GC process's writer.
    async fn open_writer(&self, policy: Policy) -> Result<StreamWriter, GcError> {
        let mine: Vec<_> = self
            .catalog
            .streams()
            .await?
            .into_iter()
            .filter(|(_, owner)| owner == GC_WRITER)
            .map(|(id, _)| id)
            .collect();
        for id in mine {
            let v = self.meta.stream(id).await?;
            if v.stream.policy == policy {
                return Ok(self.sc.open_writer(id, GC_WRITER).await?);
            }
        }
        let s = self.sc.create_stream(policy).await?;
        self.catalog.add_stream(s.id, GC_WRITER).await?;
        Ok(self.sc.open_writer(s.id, GC_WRITER).await?)
    }

    /// Step 3. Returns the copies still to delete.
    async fn delete_copies(&self, r: &mut PassReport) -> Result<u64, GcError> {
        let tombs = self.meta.tombstones().await?;
        if tombs.is_empty() {
            return Ok(0);
        }
        let nodes: HashMap<NodeId, NodeInfo> = self.meta.nodes().await?.into_iter().map(|n| (n.id, n)).collect();
        let conns = Arc::new(connect_all(&tombs, &nodes).await);
        let tombs_n = tombs.len();
        let nodes = Arc::new(nodes);
        // Futures that own what they use (the stream is polled inside a spawned task).
        let deletes = tombs.into_iter().map(|t| {
            let (conns, nodes) = (conns.clone(), nodes.clone());
            async move {
                let mut gone = Vec::new();
                for c in &t.replicas {
                    if !nodes.contains_key(&c.node) {
                        // No such datanode any more: no copy to delete.
                        gone.push(c.node);
                    } else if let Some(Some(conn)) = conns.get(&c.node) {
                        if delete_copy(conn, t.extent, c.node).await {
                            gone.push(c.node);
                        }
                    }
                }
                (t, gone)
            }
        });
        let n = tombs_n as u64;
        self.step("deleting copies", 0, n);
        let mut results: Vec<(Tombstone, Vec<NodeId>)> = Vec::with_capacity(tombs_n);
        let mut done = futures::stream::iter(deletes).buffer_unordered(DELETES_IN_FLIGHT);
        while let Some(x) = done.next().await {
            results.push(x);
            self.step("deleting copies", results.len() as u64, n);
        }
        let mut pending = 0;
        for (t, gone) in results {
            pending += (t.replicas.len() - gone.len()) as u64;
            if gone.is_empty() {
                continue;
            }
            self.meta.copies_gone(t.extent, &gone).await?;
            r.copies_deleted += gone.len() as u64;
            r.bytes_reclaimed += t.sealed_len.unwrap_or(0) * gone.len() as u64;
        }
        Ok(pending)
    }
}

/// The status a pass started from; saved with the pass's counters so far while it
/// copies (at most every `PROGRESS_EVERY`), so `gc status` shows a long pass move.
struct Progress {
    base: Status,
    saved: Instant,
}

impl Progress {
    async fn tick<C: Catalog>(&mut self, catalog: &C, r: &PassReport) {
        if self.saved.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.saved = Instant::now();
        // Best effort: the pass's own save at its end is the one that counts.
        if let Err(e) = catalog.save_status(&totals(&self.base, r)).await {
            tracing::debug!("gc: saving progress: {e}");
        }
    }
}

/// `base` with a pass's counters added.
fn totals(base: &Status, r: &PassReport) -> Status {
    let mut st = base.clone();
    st.extents_doomed_total += r.doomed;
    st.extents_deleted_total += r.deleted;
    st.copies_deleted_total += r.copies_deleted;
    st.bytes_reclaimed_total += r.bytes_reclaimed;
    st.uploads_aborted_total += r.uploads_aborted;
    st.lifecycle_deleted_total += r.lifecycle_deleted;
    st.extents_compacted_total += r.compacted;
    st.bytes_compacted_total += r.bytes_compacted;
    st.objects_transitioned_total += r.transitioned;
    st.bytes_transitioned_total += r.bytes_transitioned;
    st.compaction_ms_total += r.compaction_ms;
    st.transition_ms_total += r.transition_ms;
    st
}

/// What step 1 found: doomed extents with when, device bytes per extent, sparse ones.
type Doomed = (HashMap<ExtentId, i64>, HashMap<ExtentId, u64>, Vec<Sparse>);

/// The bytes an extent sealed at `len` holds for its stream: its length for a replica,
/// K shard lengths for `ec:K+M` (a shard's length is what is sealed).
fn logical_size(policy: Policy, len: u64) -> u64 {
    match policy {
        Policy::Replica { .. } => len,
        Policy::Ec { k, .. } => len * k as u64,
    }
}

/// A connection to every datanode a tombstone names that is not down (None for one
/// that could not be reached in time).
async fn connect_all(
    tombs: &[Tombstone],
    nodes: &HashMap<NodeId, NodeInfo>,
) -> HashMap<NodeId, Option<DataNodeClient>> {
    let mut wanted: Vec<NodeInfo> = tombs
        .iter()
        .flat_map(|t| t.replicas.iter())
        .filter_map(|c| nodes.get(&c.node))
        .filter(|n| n.state != NodeState::Down)
        .cloned()
        .collect();
    wanted.sort_by_key(|n| n.id);
    wanted.dedup_by_key(|n| n.id);
    let connects = wanted.into_iter().map(|n| async move {
        match tokio::time::timeout(DATANODE_TIMEOUT, DataNodeClient::connect_node(&n.addr, n.id)).await {
            Ok(Ok(c)) => (n.id, Some(c)),
            Ok(Err(e)) => {
                tracing::debug!("gc: datanode {} at {}: {e}", n.id, n.addr);
                (n.id, None)
            }
            Err(_) => (n.id, None),
        }
    });
    futures::stream::iter(connects).buffer_unordered(DELETES_IN_FLIGHT).collect().await
}

/// Deletes one copy; whether it is gone (deleted now, or not there).
async fn delete_copy(conn: &DataNodeClient, extent: ExtentId, node: NodeId) -> bool {
    match tokio::time::timeout(DATANODE_TIMEOUT, conn.delete(extent)).await {
        Ok(Ok(())) | Ok(Err(ClientError::Extent(ExtentError::NotFound { .. }))) => true,
        Ok(Err(e)) => {
            tracing::warn!("gc: deleting extent {extent} on datanode {node}: {e}");
            false
        }
        Err(_) => {
            tracing::warn!("gc: deleting extent {extent} on datanode {node}: no answer within {DATANODE_TIMEOUT:?}");
            false
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn failed_compactions_are_retried_ever_more_rarely() {
        let i = Duration::from_secs(60);
        assert_eq!(compact_retry(i, 1), Duration::from_secs(120));
        assert_eq!(compact_retry(i, 2), Duration::from_secs(240));
        assert_eq!(compact_retry(i, 30), COMPACT_RETRY_MAX);
        assert_eq!(compact_retry(i, u32::MAX), COMPACT_RETRY_MAX);
        // Short intervals (tests, standalone) still wait a little.
        assert_eq!(compact_retry(Duration::from_millis(100), 1), COMPACT_RETRY_FIRST_MIN);
    }
}
