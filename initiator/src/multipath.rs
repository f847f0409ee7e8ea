//! One namespace over every portal of its subsystem, with the kernel's
//! native-multipath semantics (`drivers/nvme/host/multipath.c`), as a
//! [`BlockDevice`]:
//!
//! * every portal is a path with its own controller, reconnected every
//!   `reconnect_delay` while lost and given up after `ctrl_loss_tmo`;
//! * I/O goes to optimized paths, else non-optimized ones (ANA), never to
//!   inaccessible or persistent-loss ones; among them by `iopolicy`;
//! * a command whose path fails is retried on another live path, and the
//!   caller never sees the failure;
//! * with no live path, commands wait, and fail only after
//!   `fast_io_fail_tmo` (or when every path is given up).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::block::{BlockDevice, Completion, Geometry, IoError, Outcome, Payload, ReadSink, Request, Ticket};
use crate::buffers;
use crate::command::{self, opcode};
use crate::config::{ConfigError, IoPolicy, MultipathConfig};
use crate::controller::{Controller, ControllerError, Event, Identity};
use crate::queue::{Finished, QueueError};

/// Why the device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No portal gave a usable path; each portal's reason is listed.
    #[error("no path to namespace {nsid} of {nqn}: {}", render_failures(.failures))]
    NoPath {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace ID.
        nsid: u32,
        /// Per portal, what went wrong.
        failures: Vec<(SocketAddr, String)>,
    },
    /// A path reached a namespace that is not the configured one.
    #[error("namespace {nsid} of {nqn} at {portal} is not the expected one: {why}")]
    WrongNamespace {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace ID.
        nsid: u32,
        /// The portal that answered.
        portal: SocketAddr,
        /// What differs.
        why: String,
    },
}

fn render_failures(failures: &[(SocketAddr, String)]) -> String {
    failures.iter().map(|(p, why)| format!("{p}: {why}")).collect::<Vec<_>>().join("; ")
}

/// A path's connection state (the kernel's controller states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStatus {
    /// Being connected for the first time.
    New,
    /// Connected and serving I/O.
    Live,
    /// Lost; reconnecting every `reconnect_delay`.
    Connecting,
    /// Given up after `ctrl_loss_tmo`, or closed.
    Deleted,
}

/// A path's ANA state for the namespace's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnaState {
    /// Optimized.
    Optimized,
    /// Non-optimized.
    NonOptimized,
    /// Inaccessible (never used).
    Inaccessible,
    /// Persistent loss (never used).
    PersistentLoss,
    /// Change in progress (not used until it settles).
    Change,
}

impl AnaState {
    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Optimized,
            2 => Self::NonOptimized,
            3 => Self::Inaccessible,
            4 => Self::PersistentLoss,
            _ => Self::Change,
        }
    }
}

/// One path, as `status` and diagnostics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathState {
    /// The portal.
    pub portal: SocketAddr,
    /// Connection state.
    pub status: PathStatus,
    /// ANA state, when the controller reports ANA.
    pub ana: Option<AnaState>,
    /// Controller ID given at Connect.
    pub cntlid: Option<u16>,
    /// I/O queues connected.
    pub io_queues: u16,
    /// Commands in flight now.
    pub in_flight: usize,
    /// Commands that failed on this path (retried elsewhere or reported).
    pub errors: u64,
    /// Times this path was lost.
    pub losses: u64,
    /// Why it last failed, if it did.
    pub last_error: Option<String>,
    /// How long it has been in its current status.
    pub since: Duration,
}

/// The whole device, as `status` and diagnostics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespace ID.
    pub nsid: u32,
    /// Path selection in use.
    pub iopolicy: IoPolicy,
    /// Requests waiting for a live path.
    pub queued: usize,
    /// Requests failed because no path came back within `fast_io_fail_tmo`.
    pub failed_no_path: u64,
    /// Every path.
    pub paths: Vec<PathState>,
}

struct PathInner {
    status: PathStatus,
    controller: Option<Arc<Controller>>,
    ana: Option<AnaState>,
    since: Instant,
    lost_at: Option<Instant>,
    losses: u64,
    last_error: Option<String>,
    /// The current controller's event channel: a command that failed with
    /// a path error asks the path's thread through it to re-read ANA.
    nudge: Option<Sender<Event>>,
}

struct Path {
    portal: SocketAddr,
    inner: Mutex<PathInner>,
    errors: AtomicU64,
}

/// What a command does, in blocks.
enum Op {
    Read { lba: u64, blocks: u32, sink: Option<Arc<dyn ReadSink>> },
    Write { lba: u64, blocks: u32, data: Payload, fua: bool },
    Flush,
    Zeroes { lba: u64, blocks: u32 },
    Discard { lba: u64, blocks: u32 },
}

struct IoCmd {
    op: Op,
    done: Completion,
    queued_at: Instant,
    /// Asked before every send: a newer copy of the request may have
    /// superseded this one while it waited (see [`Ticket`]).
    ticket: Option<Arc<Ticket>>,
}

impl IoCmd {
    fn superseded(&self) -> bool {
        self.ticket.as_ref().is_some_and(|t| t.superseded())
    }
}

struct Inner {
    config: MultipathConfig,
    geometry: Geometry,
    paths: Vec<Path>,
    waiting: Mutex<VecDeque<IoCmd>>,
    /// Signalled when a command starts waiting for a path, and at close.
    queued: Condvar,
    rr: AtomicUsize,
    closing: AtomicBool,
    /// Path threads without a controller sleep on this until their next
    /// reconnect attempt; close wakes them.
    sleep: Mutex<()>,
    woken: Condvar,
    failed_no_path: AtomicU64,
    /// Bumped on every change of a path's status or ANA state.
    changes: Mutex<u64>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A multipath namespace.
pub struct Multipath {
    inner: Arc<Inner>,
}

/// How often waiting commands are looked at while there are any (for
/// `fast_io_fail_tmo`, given-up paths and superseded copies). With none,
/// nothing in this module wakes up on a timer but reconnect attempts.
const TICK: Duration = Duration::from_millis(100);
/// Largest transfer of one command, whatever MDTS allows (bounds buffers).
const MAX_TRANSFER: u32 = 1 << 20;

fn geometry_of(identity: &Identity) -> Geometry {
    let mdts = if identity.max_transfer == 0 { MAX_TRANSFER } else { identity.max_transfer.min(MAX_TRANSFER) };
    let max_blocks = identity.block_size.saturating_mul(0x1_0000);
    Geometry {
        block_size: identity.block_size,
        blocks: identity.blocks,
        max_transfer: mdts.min(max_blocks),
        flush: identity.vwc,
        fua: true,
        discard: identity.dsm,
        write_zeroes: identity.write_zeroes,
    }
}

impl Multipath {
    /// Connects every portal (a portal that fails keeps being retried every
    /// `reconnect_delay`), checks the namespace's identity on each path and
    /// returns once at least one path is live.
    ///
    /// # Errors
    /// [`OpenError`] when the configuration is unusable, no path comes up, or
    /// a path reaches another namespace.
    pub fn open(config: MultipathConfig) -> Result<Self, OpenError> {
        config.validate()?;
        let attempts: Vec<(SocketAddr, Attempt)> = std::thread::scope(|scope| {
            let running: Vec<_> = config
                .portals
                .iter()
                .map(|p| {
                    let config = &config;
                    scope.spawn(move || {
                        let (tx, rx) = std::sync::mpsc::channel();
                        (*p, Controller::connect(*p, config, tx.clone()).map(|c| (c, (tx, rx))))
                    })
                })
                .collect();
            running.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let nqn = config.subsystem_nqn.clone();
        let nsid = config.namespace.nsid;
        let mut geometry: Option<(SocketAddr, Geometry)> = None;
        let mut failures = Vec::new();
        for (portal, attempt) in &attempts {
            match attempt {
                Ok((c, _)) => {
                    let g = geometry_of(&c.identity);
                    if let Some((first, seen)) = geometry {
                        if (seen.block_size, seen.blocks) != (g.block_size, g.blocks) {
                            return Err(OpenError::WrongNamespace {
                                nqn,
                                nsid,
                                portal: *portal,
                                why: format!("it shows {g}, {first} shows {seen}"),
                            });
                        }
                    } else {
                        geometry = Some((*portal, g));
                    }
                }
                Err(ControllerError::Namespace { why, .. }) => {
                    return Err(OpenError::WrongNamespace { nqn, nsid, portal: *portal, why: why.clone() })
                }
                Err(e) => failures.push((*portal, e.to_string())),
            }
        }
        let Some((_, geometry)) = geometry else { return Err(OpenError::NoPath { nqn, nsid, failures }) };
        let now = Instant::now();
        let mut receivers = Vec::new();
        let mut paths = Vec::new();
        for (portal, attempt) in attempts {
            let (status, controller, ana, last_error, lost_at, nudge) = match attempt {
                Ok((c, (tx, rx))) => {
                    let ana = c.ana_state().ok().flatten().map(AnaState::from_code);
                    receivers.push(Some(rx));
                    (PathStatus::Live, Some(c), ana, None, None, Some(tx))
                }
                Err(e) => {
                    receivers.push(None);
                    (PathStatus::Connecting, None, None, Some(e.to_string()), Some(now), None)
                }
            };
            paths.push(Path {
                portal,
                inner: Mutex::new(PathInner {
                    status,
                    controller,
                    ana,
                    since: now,
                    lost_at,
                    losses: 0,
                    last_error,
                    nudge,
                }),
                errors: AtomicU64::new(0),
            });
        }
        let inner = Arc::new(Inner {
            config,
            geometry,
            paths,
            waiting: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            rr: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            sleep: Mutex::new(()),
            woken: Condvar::new(),
            failed_no_path: AtomicU64::new(0),
            changes: Mutex::new(0),
            changed: Condvar::new(),
        });
        let waiter = Arc::clone(&inner);
        std::thread::Builder::new().name("nvme-waiting".into()).spawn(move || waiter.run_waiting()).map_err(|e| {
            OpenError::NoPath { nqn: nqn.clone(), nsid, failures: vec![(inner.paths[0].portal, e.to_string())] }
        })?;
        for (i, rx) in receivers.into_iter().enumerate() {
            let inner = Arc::clone(&inner);
            let portal = inner.paths[i].portal;
            let name = format!("nvme-path-{portal}");
            std::thread::Builder::new()
                .name(name)
                .spawn(move || inner.run_path(i, rx))
                .map_err(|e| OpenError::NoPath { nqn: nqn.clone(), nsid, failures: vec![(portal, e.to_string())] })?;
        }
        Ok(Self { inner })
    }

    /// Every path's state now.
    #[must_use]
    pub fn state(&self) -> DeviceState {
        let inner = &self.inner;
        DeviceState {
            nqn: inner.config.subsystem_nqn.clone(),
            nsid: inner.config.namespace.nsid,
            iopolicy: inner.config.iopolicy,
            queued: lock(&inner.waiting).len(),
            failed_no_path: inner.failed_no_path.load(Ordering::Relaxed),
            paths: inner
                .paths
                .iter()
                .map(|p| {
                    let s = lock(&p.inner);
                    PathState {
                        portal: p.portal,
                        status: s.status,
                        ana: s.ana,
                        cntlid: s.controller.as_ref().map(|c| c.identity.cntlid),
                        io_queues: s.controller.as_ref().map_or(0, |c| c.io_queues()),
                        in_flight: s.controller.as_ref().map_or(0, |c| c.in_flight()),
                        errors: p.errors.load(Ordering::Relaxed),
                        losses: s.losses,
                        last_error: s.last_error.clone(),
                        since: s.since.elapsed(),
                    }
                })
                .collect(),
        }
    }

    /// Waits until a path's status or ANA state changes, or `timeout`
    /// passes, whichever comes first; `seen` is what the last call returned
    /// (0 the first time). Returns the change count now.
    #[must_use]
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let inner = &self.inner;
        let changes = lock(&inner.changes);
        let (changes, _) = inner
            .changed
            .wait_timeout_while(changes, timeout, |now| *now == seen && !inner.closing.load(Ordering::SeqCst))
            .unwrap_or_else(PoisonError::into_inner);
        *changes
    }

    /// Fails waiting requests with [`IoError::Closing`] and disconnects every path.
    pub fn close(&self) {
        let inner = &self.inner;
        {
            // Set under the sleepers' lock, so none misses the wake-up.
            let _sleep = lock(&inner.sleep);
            inner.closing.store(true, Ordering::SeqCst);
        }
        inner.woken.notify_all();
        inner.changed.notify_all();
        let waiting: Vec<IoCmd> = lock(&inner.waiting).drain(..).collect();
        inner.queued.notify_all();
        for cmd in waiting {
            (cmd.done)(Err(IoError::Closing));
        }
        for p in &inner.paths {
            let controller = {
                let mut s = lock(&p.inner);
                s.status = PathStatus::Deleted;
                s.nudge = None;
                s.controller.take()
            };
            if let Some(c) = controller {
                c.shutdown("the device was closed");
            }
        }
    }
}

impl Drop for Multipath {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    /// The path thread: reconnects a lost path, follows its events and
    /// gives it up after `ctrl_loss_tmo`. It blocks on its controller's
    /// events (a queue's death is one) and, without a controller, sleeps
    /// until the next reconnect attempt: an idle device costs no wake-ups.
    fn run_path(self: Arc<Self>, i: usize, mut events: Option<Receiver<Event>>) {
        let path = &self.paths[i];
        let mut next_attempt = Instant::now() + self.config.transport.reconnect_delay;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            let Some(rx) = &events else {
                if lock(&path.inner).status == PathStatus::Deleted {
                    self.sleep_until(None);
                    continue;
                }
                if Instant::now() < next_attempt {
                    self.sleep_until(Some(next_attempt));
                    continue;
                }
                events = self.reconnect(path);
                next_attempt = Instant::now() + self.config.transport.reconnect_delay;
                continue;
            };
            let event = rx.recv().unwrap_or_else(|_| Event::Lost("the controller went away".into()));
            let dead = {
                let s = lock(&path.inner);
                match &s.controller {
                    Some(c) => c.dead(),
                    // Lost by a failed command meanwhile.
                    None => Some(s.last_error.clone().unwrap_or_default()),
                }
            };
            match (event, dead) {
                (Event::Lost(why), _) | (_, Some(why)) => {
                    if lock(&path.inner).controller.is_some() {
                        self.lose(path, why);
                    }
                    events = None;
                    next_attempt = Instant::now() + self.config.transport.reconnect_delay;
                }
                (Event::NamespaceChange, None) => self.recheck_namespace(path),
                (Event::AnaChange, None) => self.refresh_ana(path),
            }
        }
    }

    /// Sleeps until `deadline` (`None`: until close), or until close.
    fn sleep_until(&self, deadline: Option<Instant>) {
        let guard = lock(&self.sleep);
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        match deadline {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                drop(self.woken.wait_timeout(guard, left));
            }
            None => drop(self.woken.wait(guard)),
        }
    }

    /// The thread that fails commands waiting for a path once
    /// `fast_io_fail_tmo` passes (or every path is given up) and drops
    /// superseded copies; it sleeps while no command waits.
    fn run_waiting(self: Arc<Self>) {
        loop {
            {
                let mut waiting = lock(&self.waiting);
                loop {
                    if self.closing.load(Ordering::SeqCst) {
                        return;
                    }
                    if !waiting.is_empty() {
                        break;
                    }
                    waiting = self.queued.wait(waiting).unwrap_or_else(PoisonError::into_inner);
                }
                let _ = self.queued.wait_timeout(waiting, TICK);
            }
            self.expire_waiting();
        }
    }

    /// Counts a change of a path's status or ANA state (for the state file).
    fn note_change(&self) {
        *lock(&self.changes) += 1;
        self.changed.notify_all();
    }

    fn lose(&self, path: &Path, why: String) {
        let controller = {
            let mut s = lock(&path.inner);
            s.nudge = None;
            s.status = PathStatus::Connecting;
            s.since = Instant::now();
            s.lost_at.get_or_insert_with(Instant::now);
            s.losses += 1;
            s.last_error = Some(why);
            s.controller.take()
        };
        self.note_change();
        if let Some(c) = controller {
            c.shutdown("the path was lost");
        }
    }

    fn reconnect(self: &Arc<Self>, path: &Path) -> Option<Receiver<Event>> {
        let (tx, rx) = std::sync::mpsc::channel();
        match Controller::connect(path.portal, &self.config, tx.clone()) {
            Ok(c) => {
                let g = geometry_of(&c.identity);
                if (g.block_size, g.blocks) != (self.geometry.block_size, self.geometry.blocks) {
                    let mut s = lock(&path.inner);
                    s.last_error = Some(format!("the namespace changed: it shows {g}, it was {}", self.geometry));
                    return None;
                }
                let ana = c.ana_state().ok().flatten().map(AnaState::from_code);
                {
                    let mut s = lock(&path.inner);
                    s.status = PathStatus::Live;
                    s.since = Instant::now();
                    s.lost_at = None;
                    s.controller = Some(c);
                    s.ana = ana;
                    s.nudge = Some(tx);
                }
                self.note_change();
                self.kick();
                Some(rx)
            }
            Err(e) => {
                let mut s = lock(&path.inner);
                s.last_error = Some(e.to_string());
                if let (Some(lost), Some(limit)) = (s.lost_at, self.config.transport.ctrl_loss_tmo) {
                    if lost.elapsed() >= limit {
                        s.status = PathStatus::Deleted;
                        s.since = Instant::now();
                        drop(s);
                        self.note_change();
                    }
                }
                None
            }
        }
    }

    /// After a namespace change event: the namespace is identified again on
    /// this path. One that changed identity (or format) fails the path with
    /// the reason; its reconnects check the identity again, so another
    /// namespace at the NSID is never served.
    fn recheck_namespace(self: &Arc<Self>, path: &Path) {
        let controller = lock(&path.inner).controller.clone();
        if let Some(c) = controller {
            if let Err(why) = c.recheck_namespace() {
                tracing::error!(portal = %path.portal, %why, "the path is failed");
                self.lose(path, why);
                return;
            }
        }
        self.refresh_ana(path);
    }

    fn refresh_ana(self: &Arc<Self>, path: &Path) {
        let controller = lock(&path.inner).controller.clone();
        if let Some(c) = controller {
            if let Ok(state) = c.ana_state() {
                let ana = state.map(AnaState::from_code);
                let before = std::mem::replace(&mut lock(&path.inner).ana, ana);
                if before != ana {
                    self.note_change();
                }
            }
        }
        self.kick();
    }

    /// Resubmits waiting commands (a path came back or changed state).
    fn kick(self: &Arc<Self>) {
        let waiting: Vec<IoCmd> = lock(&self.waiting).drain(..).collect();
        for cmd in waiting {
            self.dispatch(cmd);
        }
    }

    fn expire_waiting(self: &Arc<Self>) {
        let all_gone = self.paths.iter().all(|p| lock(&p.inner).status == PathStatus::Deleted);
        let limit = self.config.transport.fast_io_fail_tmo;
        let (superseded, expired): (Vec<IoCmd>, Vec<IoCmd>) = {
            let mut waiting = lock(&self.waiting);
            let (superseded, held): (Vec<IoCmd>, Vec<IoCmd>) = waiting.drain(..).partition(IoCmd::superseded);
            let (expired, kept): (Vec<IoCmd>, Vec<IoCmd>) =
                held.into_iter().partition(|c| all_gone || limit.is_some_and(|l| c.queued_at.elapsed() >= l));
            waiting.extend(kept);
            (superseded, expired)
        };
        // Copies a newer copy replaced leave the queue without being sent.
        for cmd in superseded {
            (cmd.done)(Err(IoError::Superseded));
        }
        if !expired.is_empty() && !all_gone && self.select().is_some() {
            // A path came back meanwhile.
            for cmd in expired {
                self.dispatch(cmd);
            }
            return;
        }
        for cmd in expired {
            self.failed_no_path.fetch_add(1, Ordering::Relaxed);
            let why = if all_gone {
                "every path was given up after ctrl_loss_tmo".to_owned()
            } else {
                format!("no path came back within fast_io_fail_tmo ({:?})", limit.unwrap_or_default())
            };
            (cmd.done)(Err(IoError::NoPath(why)));
        }
    }

    /// The path to use now, by ANA state and policy.
    fn select(&self) -> Option<(usize, Arc<Controller>)> {
        let mut optimized = Vec::new();
        let mut non_optimized = Vec::new();
        for (i, p) in self.paths.iter().enumerate() {
            let s = lock(&p.inner);
            let Some(c) = s.controller.as_ref().filter(|c| c.dead().is_none() && s.status == PathStatus::Live) else {
                continue;
            };
            match s.ana {
                None | Some(AnaState::Optimized) => optimized.push((i, Arc::clone(c))),
                Some(AnaState::NonOptimized) => non_optimized.push((i, Arc::clone(c))),
                Some(_) => {}
            }
        }
        let mut set = if optimized.is_empty() { non_optimized } else { optimized };
        if set.is_empty() {
            return None;
        }
        let pick = match self.config.iopolicy {
            IoPolicy::Numa => 0,
            IoPolicy::RoundRobin => self.rr.fetch_add(1, Ordering::Relaxed) % set.len(),
            IoPolicy::QueueDepth => {
                set.iter().enumerate().min_by_key(|(_, (_, c))| c.in_flight()).map_or(0, |(k, _)| k)
            }
        };
        Some(set.swap_remove(pick))
    }

    fn dispatch(self: &Arc<Self>, cmd: IoCmd) {
        if self.closing.load(Ordering::SeqCst) {
            (cmd.done)(Err(IoError::Closing));
            return;
        }
        let Some((i, controller)) = self.select() else {
            lock(&self.waiting).push_back(cmd);
            self.queued.notify_one();
            return;
        };
        // The last moment before the command is sent: a copy superseded by a
        // newer one is never sent (again).
        if cmd.ticket.as_ref().is_some_and(|t| !t.start()) {
            (cmd.done)(Err(IoError::Superseded));
            return;
        }
        let nsid = controller.nsid();
        let bs = self.geometry.block_size as usize;
        let IoCmd { op, done, queued_at, ticket } = cmd;
        let (sqe, data_out, expect) = match &op {
            Op::Read { lba, blocks, .. } => {
                (command::read_write(opcode::READ, nsid, *lba, *blocks, false), Vec::new(), *blocks as usize * bs)
            }
            Op::Write { lba, blocks, fua, .. } => {
                (command::read_write(opcode::WRITE, nsid, *lba, *blocks, *fua), Vec::new(), 0)
            }
            Op::Flush => (command::flush(nsid), Vec::new(), 0),
            Op::Zeroes { lba, blocks } => (command::write_zeroes(nsid, *lba, *blocks), Vec::new(), 0),
            Op::Discard { lba, blocks } => (command::deallocate(nsid), command::dsm_range(*lba, *blocks), 0),
        };
        let (op, data_out) = match op {
            Op::Write { lba, blocks, data, fua } => (Op::Write { lba, blocks, data: Vec::new().into(), fua }, data),
            other => (other, data_out.into()),
        };
        let sink = if let Op::Read { sink, .. } = &op { sink.clone() } else { None };
        let retry = RetryState { op, done, queued_at, path: i, ticket };
        let me = Arc::clone(self);
        controller.submit_into(sqe, data_out, expect, sink, Box::new(move |finished| me.finished(retry, finished)));
    }

    fn finished(self: &Arc<Self>, retry: RetryState, finished: Finished) {
        let RetryState { op, done, queued_at, path, ticket } = retry;
        let restore = |op: Op, data: Payload| match op {
            Op::Write { lba, blocks, fua, .. } => Op::Write { lba, blocks, data, fua },
            other => other,
        };
        match finished.outcome {
            Ok(cqe) if cqe.code() == 0 => {
                finished.data_out.release();
                done(Ok(finished.data_in));
            }
            Ok(cqe) if is_path_error(cqe.code()) && !cqe.dnr() => {
                self.paths[path].errors.fetch_add(1, Ordering::Relaxed);
                {
                    let mut s = lock(&self.paths[path].inner);
                    s.ana = Some(AnaState::Change);
                    // The path's thread re-reads ANA, then resubmits what waits.
                    if let Some(nudge) = &s.nudge {
                        let _ = nudge.send(Event::AnaChange);
                    }
                }
                self.note_change();
                self.dispatch(IoCmd { op: restore(op, finished.data_out), done, queued_at, ticket });
            }
            Ok(cqe) => {
                finished.data_out.release();
                buffers::give(finished.data_in);
                self.paths[path].errors.fetch_add(1, Ordering::Relaxed);
                done(Err(IoError::Media(format!("NVMe status {:#x}", cqe.code()))));
            }
            Err(e @ (QueueError::Transport(_) | QueueError::Timeout(_))) => {
                let why = e.to_string();
                let p = &self.paths[path];
                p.errors.fetch_add(1, Ordering::Relaxed);
                // Take the path out of service now, before the retry picks a path.
                let lost = lock(&p.inner).controller.as_ref().is_some_and(|c| c.dead().is_some());
                if lost {
                    self.lose(p, why);
                }
                self.dispatch(IoCmd { op: restore(op, finished.data_out), done, queued_at, ticket });
            }
        }
    }
}

/// Path-related status (SCT 3: ANA inaccessible, persistent loss,
/// transition; path errors) and "namespace not ready": retried elsewhere.
fn is_path_error(code: u16) -> bool {
    code >> 8 == 3 || code == 0x82
}

/// A first connection attempt: the controller and its event stream.
type Attempt = Result<(Arc<Controller>, (Sender<Event>, Receiver<Event>)), ControllerError>;

struct RetryState {
    op: Op,
    done: Completion,
    queued_at: Instant,
    path: usize,
    ticket: Option<Arc<Ticket>>,
}

impl Multipath {
    fn check_range(&self, offset: u64, len: u64) -> Result<(u64, u64), IoError> {
        let g = &self.inner.geometry;
        let bs = u64::from(g.block_size);
        if offset % bs != 0 || len % bs != 0 {
            return Err(IoError::Invalid(format!("{offset}+{len} is not aligned to {bs}-byte blocks")));
        }
        let end = offset.checked_add(len).ok_or_else(|| IoError::Invalid("range overflows".into()))?;
        if end > g.size_bytes() {
            return Err(IoError::Invalid(format!("{offset}+{len} is past the end ({} bytes)", g.size_bytes())));
        }
        Ok((offset / bs, len / bs))
    }
}

/// Gathers the pieces of a request split at the maximum transfer size.
struct Split {
    remaining: AtomicUsize,
    data: Mutex<Vec<u8>>,
    error: Mutex<Option<IoError>>,
    done: Mutex<Option<Completion>>,
}

impl Split {
    fn piece(self: &Arc<Self>, at: usize) -> Completion {
        let me = Arc::clone(self);
        Box::new(move |outcome: Outcome| {
            match outcome {
                Ok(bytes) if !bytes.is_empty() => {
                    lock(&me.data)[at..at + bytes.len()].copy_from_slice(&bytes);
                    buffers::give(bytes);
                }
                Ok(_) => {}
                Err(e) => {
                    lock(&me.error).get_or_insert(e);
                }
            }
            if me.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                if let Some(done) = lock(&me.done).take() {
                    match lock(&me.error).take() {
                        Some(e) => done(Err(e)),
                        None => done(Ok(std::mem::take(&mut *lock(&me.data)))),
                    }
                }
            }
        })
    }
}

impl BlockDevice for Multipath {
    fn geometry(&self) -> Geometry {
        self.inner.geometry
    }

    fn submit(&self, request: Request, done: Completion) {
        self.submit_with(request, None, done);
    }

    fn submit_ticketed(&self, request: Request, ticket: &Arc<Ticket>, done: Completion) {
        self.submit_with(request, Some(ticket), done);
    }

    fn submit_read_into(&self, offset: u64, len: u32, sink: Arc<dyn ReadSink>, ticket: &Arc<Ticket>, done: Completion) {
        let g = self.inner.geometry;
        // One command only: the data of a split read is joined in a buffer.
        match self.check_range(offset, u64::from(len)) {
            Ok((lba, blocks)) if blocks > 0 && len <= g.max_transfer => {
                let blocks = u32::try_from(blocks).unwrap_or(u32::MAX);
                let op = Op::Read { lba, blocks, sink: Some(sink) };
                self.inner.dispatch(IoCmd { op, done, queued_at: ticket.since(), ticket: Some(Arc::clone(ticket)) });
            }
            _ => self.submit_with(Request::Read { offset, len }, Some(ticket), done),
        }
    }

    fn holds_writes(&self, len: usize) -> bool {
        // One command's data, sent on R2T (larger ones are split in memory;
        // in-capsule data goes with its command). A path that wants data
        // digests reads held data out of its pipe, once.
        len > HELD_WRITE_MIN && len <= self.inner.geometry.max_transfer as usize
    }

    fn submit_write(&self, offset: u64, data: Payload, fua: bool, ticket: &Arc<Ticket>, done: Completion) {
        match data {
            Payload::Held(held) if held.len() <= self.inner.geometry.max_transfer as usize => {
                match self.check_range(offset, held.len() as u64) {
                    Ok((lba, blocks)) => {
                        let blocks = u32::try_from(blocks).unwrap_or(u32::MAX);
                        let op = Op::Write { lba, blocks, data: Payload::Held(held), fua };
                        let cmd = IoCmd { op, done, queued_at: Instant::now(), ticket: Some(Arc::clone(ticket)) };
                        self.inner.dispatch(cmd);
                    }
                    Err(e) => done(Err(e)),
                }
            }
            data => match data.into_bytes() {
                Ok(data) => self.submit_with(Request::Write { offset, data, fua }, Some(ticket), done),
                Err(error) => done(Err(IoError::Media(format!("reading a held write's data: {error}")))),
            },
        }
    }
}

/// Writes larger than this are held in a pipe: smaller ones fit in a
/// capsule or cost less to copy than the pipe's system calls.
const HELD_WRITE_MIN: usize = 64 * 1024;

impl Multipath {
    fn submit_with(&self, request: Request, ticket: Option<&Arc<Ticket>>, done: Completion) {
        let g = self.inner.geometry;
        let bs = u64::from(g.block_size);
        let max_blocks = u64::from(g.max_transfer) / bs;
        // A copy the kernel sent again waits from when its first copy came.
        let now = ticket.map_or_else(Instant::now, |t| t.since());
        let ranges = |lba: u64, blocks: u64, limit: u64| -> Vec<(u64, u32)> {
            let mut out = Vec::new();
            let mut at = 0;
            while at < blocks {
                let n = (blocks - at).min(limit);
                out.push((lba + at, u32::try_from(n).unwrap_or(u32::MAX)));
                at += n;
            }
            out
        };
        let ops: Vec<(usize, Op)> = match request {
            Request::Flush => vec![(0, Op::Flush)],
            Request::Read { offset, len } => match self.check_range(offset, u64::from(len)) {
                Ok((lba, blocks)) => ranges(lba, blocks, max_blocks)
                    .into_iter()
                    .map(|(l, n)| {
                        (usize::try_from((l - lba) * bs).unwrap_or(0), Op::Read { lba: l, blocks: n, sink: None })
                    })
                    .collect(),
                Err(e) => return done(Err(e)),
            },
            Request::Write { offset, data, fua } => match self.check_range(offset, data.len() as u64) {
                Ok((lba, blocks)) => {
                    let pieces = ranges(lba, blocks, max_blocks);
                    if pieces.len() == 1 {
                        vec![(0, Op::Write { lba, blocks: pieces[0].1, data: data.into(), fua })]
                    } else {
                        let ops = pieces
                            .into_iter()
                            .map(|(l, n)| {
                                let at = usize::try_from((l - lba) * bs).unwrap_or(0);
                                let end = at + n as usize * g.block_size as usize;
                                let mut piece = buffers::take(end - at);
                                piece.copy_from_slice(&data[at..end]);
                                (0, Op::Write { lba: l, blocks: n, data: piece.into(), fua })
                            })
                            .collect();
                        buffers::give(data);
                        ops
                    }
                }
                Err(e) => return done(Err(e)),
            },
            Request::WriteZeroes { offset, len } => match self.check_range(offset, len) {
                Ok(_) if !g.write_zeroes => return done(Err(IoError::NotSupported("write zeroes"))),
                Ok((lba, blocks)) => ranges(lba, blocks, 0x1_0000)
                    .into_iter()
                    .map(|(l, n)| (0, Op::Zeroes { lba: l, blocks: n }))
                    .collect(),
                Err(e) => return done(Err(e)),
            },
            Request::Discard { offset, len } => match self.check_range(offset, len) {
                Ok(_) if !g.discard => return done(Err(IoError::NotSupported("discard"))),
                Ok((lba, blocks)) => ranges(lba, blocks, u64::from(u32::MAX))
                    .into_iter()
                    .map(|(l, n)| (0, Op::Discard { lba: l, blocks: n }))
                    .collect(),
                Err(e) => return done(Err(e)),
            },
        };
        if ops.is_empty() {
            return done(Ok(Vec::new()));
        }
        if ops.len() == 1 {
            let Some((_, op)) = ops.into_iter().next() else { return };
            return self.inner.dispatch(IoCmd { op, done, queued_at: now, ticket: ticket.cloned() });
        }
        let read_len: usize = ops
            .iter()
            .map(|(_, op)| if let Op::Read { blocks, .. } = op { *blocks as usize * g.block_size as usize } else { 0 })
            .sum();
        let split = Arc::new(Split {
            remaining: AtomicUsize::new(ops.len()),
            data: Mutex::new(buffers::take(read_len)),
            error: Mutex::new(None),
            done: Mutex::new(Some(done)),
        });
        for (at, op) in ops {
            self.inner.dispatch(IoCmd { op, done: split.piece(at), queued_at: now, ticket: ticket.cloned() });
        }
    }
}

#[cfg(test)]
mod tests;
