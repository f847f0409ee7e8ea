//! One NVMe/TCP controller: the admin queue and N I/O queues to one portal,
//! set up as the kernel host does it (`drivers/nvme/host/tcp.c`,
//! `fabrics.c`, `core.c`): ICReq/ICResp, Fabrics Connect, CC.EN and
//! CSTS.RDY, Identify controller and namespace, Set Features Number of
//! Queues, one Connect per I/O queue, Asynchronous Event Requests for ANA
//! and namespace changes, and Keep Alive every half `keep_alive_tmo`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth;
use crate::block::{Payload, ReadSink};
use crate::command::{self, opcode, property, Sqe};
use crate::config::{MultipathConfig, NamespaceIdentity};
use crate::pdu::{self, Digests};
use crate::queue::{self, OnFinish, Queue, QueueError, QueueParams};

/// Why a controller could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// No TCP connection or no NVMe/TCP answer.
    #[error("{portal} is unreachable: {why}")]
    Unreachable {
        /// The portal.
        portal: SocketAddr,
        /// The socket error.
        why: String,
    },
    /// A step failed.
    #[error("{portal}: {step} failed: {why}")]
    Step {
        /// The portal.
        portal: SocketAddr,
        /// What was being done.
        step: &'static str,
        /// Why.
        why: String,
    },
    /// The target refused this host.
    #[error("{portal}: the target refused this host at Connect (NVMe status {status:#x}): check its allow-list for our host NQN{auth}")]
    Refused {
        /// The portal.
        portal: SocketAddr,
        /// NVMe status.
        status: u16,
        /// A hint about authentication.
        auth: &'static str,
    },
    /// The namespace is not the expected one, or not there.
    #[error("{portal}: namespace {nsid}: {why}")]
    Namespace {
        /// The portal.
        portal: SocketAddr,
        /// The namespace ID.
        nsid: u32,
        /// What is wrong.
        why: String,
    },
}

/// What Identify told about the controller and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Controller ID.
    pub cntlid: u16,
    /// Largest transfer in bytes (from MDTS; 0: no limit given).
    pub max_transfer: u32,
    /// In-capsule data the I/O queues take (IOCCSZ × 16 − 64).
    pub in_capsule: u32,
    /// The controller reports ANA.
    pub ana: bool,
    /// Volatile write cache present.
    pub vwc: bool,
    /// Dataset Management supported.
    pub dsm: bool,
    /// Write Zeroes supported.
    pub write_zeroes: bool,
    /// Namespace logical block size.
    pub block_size: u32,
    /// Namespace size in blocks.
    pub blocks: u64,
    /// ANA group of the namespace.
    pub anagrpid: u32,
    /// Namespace UUID, when the controller gives one.
    pub uuid: Option<[u8; 16]>,
}

/// Something the controller told asynchronously, or its death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ANA state changed: re-read the ANA log.
    AnaChange,
    /// Namespace attributes changed: re-check the namespace.
    NamespaceChange,
    /// The controller is gone (a queue died or keep-alive failed).
    Lost(String),
}

/// Commands in flight per I/O queue, counted for the queue-depth policy.
struct IoQueue {
    queue: Queue,
}

/// A live controller.
pub struct Controller {
    /// Its portal.
    pub portal: SocketAddr,
    /// What Identify said.
    pub identity: Identity,
    admin: Queue,
    io: Vec<IoQueue>,
    next: AtomicUsize,
    stop: Mutex<Option<Sender<()>>>,
    nsid: u32,
}

/// Admin queue depth (the kernel's `NVME_AQ_DEPTH`).
const ADMIN_DEPTH: u16 = 32;

fn io_step(portal: SocketAddr, step: &'static str) -> impl Fn(QueueError) -> ControllerError {
    move |e| ControllerError::Step { portal, step, why: e.to_string() }
}

fn open_queue(
    portal: SocketAddr,
    config: &MultipathConfig,
    qid: u16,
    slots: u16,
    deadline: Instant,
    in_capsule: usize,
    max_data: usize,
) -> Result<Queue, ControllerError> {
    let asked = Digests { header: config.transport.hdr_digest, data: config.transport.data_digest };
    let unreachable = |why: String| ControllerError::Unreachable { portal, why };
    let stream = queue::connect_tcp(portal, deadline).map_err(|e| unreachable(e.to_string()))?;
    let resp =
        queue::initialize(&stream, asked, deadline).map_err(|e| unreachable(format!("no NVMe/TCP answer: {e}")))?;
    if resp.digests != asked {
        return Err(ControllerError::Step {
            portal,
            step: "negotiating digests",
            why: format!("asked for {asked:?}, the controller turned on {:?}", resp.digests),
        });
    }
    let params = QueueParams {
        qid,
        slots,
        digests: resp.digests,
        cpda: resp.cpda_bytes,
        maxh2cdata: resp.maxh2cdata,
        in_capsule,
        max_data,
        max_pdus: u32::try_from(max_data / 512).unwrap_or(u32::MAX).max(64),
    };
    Queue::start(portal, stream, params).map_err(|e| unreachable(e.to_string()))
}

/// Connect result: authentication transaction required; secure channel required.
const AUTHREQ_ATR: u32 = 1 << 17;
const AUTHREQ_ASCR: u32 = 1 << 18;

/// Runs DH-HMAC-CHAP on a queue when its Connect result asks for it.
fn authenticate_if_asked(
    portal: SocketAddr,
    queue: &Queue,
    config: &MultipathConfig,
    result: u32,
    qid: u16,
    deadline: Instant,
) -> Result<(), ControllerError> {
    let step = "DH-HMAC-CHAP authentication";
    if result & AUTHREQ_ASCR != 0 {
        return Err(ControllerError::Step {
            portal,
            step,
            why: "the target requires a secure channel (TLS), which this host does not do".into(),
        });
    }
    if result & AUTHREQ_ATR == 0 {
        return Ok(());
    }
    let Some(keys) = &config.auth else {
        return Err(ControllerError::Step {
            portal,
            step,
            why: "the target requires DH-HMAC-CHAP: configure the host key (dhchap_secret)".into(),
        });
    };
    auth::authenticate(queue, keys, &config.host.nqn, &config.subsystem_nqn, qid, deadline)
        .map_err(|why| ControllerError::Step { portal, step, why: format!("queue {qid}: {why}") })
}

fn check(portal: SocketAddr, step: &'static str, cqe: &pdu::Completion) -> Result<(), ControllerError> {
    if cqe.code() != 0 {
        return Err(ControllerError::Step { portal, step, why: format!("NVMe status {:#x}", cqe.code()) });
    }
    Ok(())
}

/// An admin queue that is connected, authenticated and enabled (CC.EN set,
/// CSTS.RDY seen): what a controller starts from, and what a one-off
/// question (which namespaces are there, `crate::identify`) needs.
pub(crate) struct Admin {
    /// The queue.
    pub queue: Queue,
    /// Controller ID from Connect.
    pub cntlid: u16,
    /// CAP.MQES + 1: the deepest I/O queue the controller takes.
    pub mqes: u16,
}

/// One admin command with its own deadline (as the kernel's), its status checked.
pub(crate) fn admin_call(
    portal: SocketAddr,
    config: &MultipathConfig,
    admin: &Queue,
    step: &'static str,
    sqe: Sqe,
    expect: usize,
) -> Result<(pdu::Completion, Vec<u8>), ControllerError> {
    let limit = Instant::now() + config.transport.connect_timeout;
    let (cqe, data) = admin.call(sqe, Vec::new(), expect, limit).map_err(io_step(portal, step))?;
    check(portal, step, &cqe)?;
    Ok((cqe, data))
}

/// Connects the admin queue at `portal`, authenticates it if the target
/// asks, and enables the controller.
pub(crate) fn enable_admin(portal: SocketAddr, config: &MultipathConfig) -> Result<Admin, ControllerError> {
    let deadline = Instant::now() + config.transport.connect_timeout;
    let admin = open_queue(portal, config, 0, ADMIN_DEPTH - 1, deadline, 8192, 64 * 1024)?;
    let kato_ms = u32::try_from(config.transport.keep_alive_tmo.as_millis()).unwrap_or(u32::MAX);
    let data = command::connect_data(&config.host.id, 0xffff, &config.subsystem_nqn, &config.host.nqn);
    let (cqe, _) = admin
        .call(command::connect(0, ADMIN_DEPTH, kato_ms, false), data, 0, deadline)
        .map_err(io_step(portal, "Fabrics Connect of the admin queue"))?;
    if cqe.code() != 0 {
        let auth = if cqe.code() == 0x184 || cqe.code() == 0x182 {
            " (or, if the array requires DH-HMAC-CHAP, the host key)"
        } else {
            ""
        };
        return Err(ControllerError::Refused { portal, status: cqe.code(), auth });
    }
    let cntlid = u16::try_from(cqe.result & 0xffff).unwrap_or(0);
    authenticate_if_asked(portal, &admin, config, cqe.result, 0, Instant::now() + config.transport.connect_timeout)?;
    let call = |step: &'static str, sqe: Sqe, expect: usize| admin_call(portal, config, &admin, step, sqe, expect);
    let (cap, _) = call("reading CAP", command::property_get(property::CAP, true), 0)?;
    let mqes = u16::try_from(cap.result & 0xffff).unwrap_or(u16::MAX).saturating_add(1);
    // CAP.TO: how long the controller may take to become ready, in 500 ms units.
    let ready_by =
        Instant::now() + config.transport.connect_timeout.max(Duration::from_millis(500) * (cap.result >> 24 & 0xff));
    call("enabling the controller", command::property_set(property::CC, 0x0046_0001), 0)?;
    loop {
        let (csts, _) = call("waiting for CSTS.RDY", command::property_get(property::CSTS, false), 0)?;
        if csts.result & 0b10 != 0 {
            return Err(ControllerError::Step {
                portal,
                step: "enabling the controller",
                why: "controller fatal status".into(),
            });
        }
        if csts.result & 1 == 1 {
            break;
        }
        if Instant::now() >= ready_by {
            return Err(ControllerError::Step {
                portal,
                step: "enabling the controller",
                why: "CSTS.RDY never set".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Admin { queue: admin, cntlid, mqes })
}

/// How many I/O queues to ask for: the configured number, or one per host CPU.
#[must_use]
pub fn wanted_queues(config: &MultipathConfig) -> u16 {
    config.transport.nr_io_queues.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        u16::try_from(cpus).unwrap_or(u16::MAX)
    })
}

impl Controller {
    /// Connects and sets up a controller for `config`'s namespace at `portal`;
    /// `events` receives its asynchronous events and its loss.
    ///
    /// # Errors
    /// [`ControllerError`] naming the step that failed.
    pub fn connect(
        portal: SocketAddr,
        config: &MultipathConfig,
        events: Sender<Event>,
    ) -> Result<Arc<Self>, ControllerError> {
        let Admin { queue: admin, cntlid, mqes } = enable_admin(portal, config)?;
        let kato_ms = u32::try_from(config.transport.keep_alive_tmo.as_millis()).unwrap_or(u32::MAX);
        let call = |step: &'static str, sqe: Sqe, expect: usize| admin_call(portal, config, &admin, step, sqe, expect);
        let (_, ctrl) = call("Identify controller", command::identify(1, 0), 4096)?;
        let nsid = config.namespace.nsid;
        let (_, ns) = call("Identify namespace", command::identify(0, nsid), 4096)?;
        let (_, descriptors) = call("Identify namespace descriptors", command::identify(3, nsid), 4096)?;
        let identity = parse_identity(portal, cntlid, &ctrl, &ns, &descriptors, &config.namespace)?;
        if !subnqn_matches(&ctrl, &config.subsystem_nqn) {
            return Err(ControllerError::Step {
                portal,
                step: "Identify controller",
                why: "the controller belongs to another subsystem".into(),
            });
        }
        let wanted = wanted_queues(config);
        let (queues, _) = call(
            "Set Features Number of Queues",
            command::set_features(0x07, u32::from(wanted - 1) | u32::from(wanted - 1) << 16),
            0,
        )?;
        let granted = u16::try_from((queues.result & 0xffff).min(queues.result >> 16)).unwrap_or(0).saturating_add(1);
        let count = wanted.min(granted);
        let depth = config.transport.queue_size.min(mqes);
        let max_data = if identity.max_transfer == 0 { 1 << 20 } else { identity.max_transfer as usize }.min(1 << 20);
        let mut io = Vec::new();
        for qid in 1..=count {
            // Setting a queue up (with authentication, on a slow host) can
            // take longer than KATO: keep the controller alive meanwhile.
            call("Keep Alive", command::plain(opcode::KEEP_ALIVE), 0)?;
            // Each I/O queue gets its own deadline, as each admin step does.
            let deadline = Instant::now() + config.transport.connect_timeout;
            let q = open_queue(portal, config, qid, depth - 1, deadline, identity.in_capsule as usize, max_data)?;
            let data = command::connect_data(&config.host.id, cntlid, &config.subsystem_nqn, &config.host.nqn);
            let (cqe, _) = q
                .call(command::connect(qid, depth, kato_ms, true), data, 0, deadline)
                .map_err(io_step(portal, "Fabrics Connect of an I/O queue"))?;
            check(portal, "Fabrics Connect of an I/O queue", &cqe)?;
            authenticate_if_asked(portal, &q, config, cqe.result, qid, deadline)?;
            io.push(IoQueue { queue: q });
        }
        // Notices: namespace attribute (bit 8) and ANA change (bit 11).
        let notices = if identity.ana { 1 << 8 | 1 << 11 } else { 1 << 8 };
        call("enabling asynchronous events", command::set_features(0x0b, notices), 0)?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let controller = Arc::new(Self {
            portal,
            identity,
            admin,
            io,
            next: AtomicUsize::new(0),
            stop: Mutex::new(Some(stop_tx)),
            nsid,
        });
        // A queue that dies is this controller's loss, told at once (no
        // polling of the queues' state).
        for queue in std::iter::once(&controller.admin).chain(controller.io.iter().map(|q| &q.queue)) {
            let events = events.clone();
            queue.on_death(Box::new(move |why| {
                let _ = events.send(Event::Lost(why));
            }));
        }
        controller.post_aer(events.clone());
        let keep = Arc::downgrade(&controller);
        let interval = config.transport.keep_alive_tmo / 2;
        let kato = config.transport.keep_alive_tmo;
        std::thread::Builder::new()
            .name(format!("nvme-ka-{portal}"))
            .spawn(move || keep_alive(&keep, &stop_rx, interval, kato, &events))
            .map_err(|e| ControllerError::Step { portal, step: "starting keep-alive", why: e.to_string() })?;
        Ok(controller)
    }

    fn post_aer(self: &Arc<Self>, events: Sender<Event>) {
        let me = Arc::downgrade(self);
        self.admin.submit(
            command::plain(opcode::ASYNC_EVENT),
            Vec::new(),
            0,
            Box::new(move |finished| {
                let Ok(cqe) = finished.outcome else { return };
                if cqe.code() != 0 {
                    return;
                }
                let info = cqe.result >> 8 & 0xff;
                let event = match (cqe.result & 0x7, info) {
                    (2, 0x03) => Event::AnaChange,
                    (2, 0x00) => Event::NamespaceChange,
                    _ => Event::NamespaceChange,
                };
                let _ = events.send(event);
                if let Some(me) = me.upgrade() {
                    // Re-posting from the reader thread would block it if the
                    // admin queue were full; it never is (one AER, keep-alive).
                    std::thread::spawn(move || me.post_aer(events));
                }
            }),
        );
    }

    /// Why the controller is unusable, if it is.
    #[must_use]
    pub fn dead(&self) -> Option<String> {
        self.admin.dead().or_else(|| self.io.iter().find_map(|q| q.queue.dead()))
    }

    /// Commands in flight on the I/O queues.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.io.iter().map(|q| q.queue.in_flight()).sum()
    }

    /// I/O queues connected.
    #[must_use]
    pub fn io_queues(&self) -> u16 {
        u16::try_from(self.io.len()).unwrap_or(u16::MAX)
    }

    /// Reads this namespace's ANA state from the ANA log page.
    ///
    /// # Errors
    /// [`QueueError`] when the log cannot be read, or a text when it is malformed.
    pub fn ana_state(&self) -> Result<Option<u8>, String> {
        if !self.identity.ana {
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let length = 4096;
        // LSP bit 0 (RGO): groups only, without the namespace lists.
        let (cqe, page) = self
            .admin
            .call(command::get_log_page(0x0c, 1, 0, 0, length), Vec::new(), length as usize, deadline)
            .map_err(|e| e.to_string())?;
        if cqe.code() != 0 {
            return Err(format!("ANA log: NVMe status {:#x}", cqe.code()));
        }
        Ok(parse_ana(&page, self.identity.anagrpid))
    }

    /// Identifies this controller's namespace again (after a namespace
    /// change event): still active, same UUID, same block size, or the
    /// reason it is not the namespace this controller was connected to.
    ///
    /// # Errors
    /// The reason, in words for the path's last error.
    pub fn recheck_namespace(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let nsid = self.nsid;
        let identify = |cns: u8| {
            let (cqe, page) = self
                .admin
                .call(command::identify(cns, nsid), Vec::new(), 4096, deadline)
                .map_err(|e| format!("re-identifying namespace {nsid}: {e}"))?;
            if cqe.code() != 0 {
                return Err(format!("re-identifying namespace {nsid} (CNS {cns}): NVMe status {:#x}", cqe.code()));
            }
            Ok(page)
        };
        let ns = identify(0)?;
        let descriptors = identify(3)?;
        if ns.len() < 4096 || le64(&ns, 0) == 0 {
            return Err(format!("namespace {nsid} is no longer active on this controller"));
        }
        let uuid = parse_uuid_descriptor(&descriptors);
        if uuid != self.identity.uuid {
            let shown = |u: Option<[u8; 16]>| {
                u.map_or_else(|| "none".to_owned(), |u| u.iter().map(|b| format!("{b:02x}")).collect())
            };
            return Err(format!(
                "namespace {nsid} changed identity (UUID {}, was {}): another namespace sits at this NSID; it is \
                 not served",
                shown(uuid),
                shown(self.identity.uuid)
            ));
        }
        let flbas = usize::from(ns[26] & 0x0f | (ns[26] >> 5 & 0x3) << 4);
        let lbads = ns[128 + 4 * flbas + 2];
        if !(9..=16).contains(&lbads) || 1u32 << lbads != self.identity.block_size {
            return Err(format!(
                "namespace {nsid} was reformatted: its logical block size is 2^{lbads}, it was {}",
                self.identity.block_size
            ));
        }
        Ok(())
    }

    /// Submits an I/O command on the next I/O queue.
    pub fn submit(&self, sqe: Sqe, data_out: Vec<u8>, expect: usize, done: OnFinish) {
        self.submit_into(sqe, data_out.into(), expect, None, done);
    }

    /// Submits an I/O command on the next I/O queue, a read's data going to
    /// `sink` when it can ([`Queue::submit_into`]).
    pub fn submit_into(
        &self,
        sqe: Sqe,
        data_out: Payload,
        expect: usize,
        sink: Option<Arc<dyn ReadSink>>,
        done: OnFinish,
    ) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.io.len().max(1);
        match self.io.get(i) {
            Some(q) => q.queue.submit_into(sqe, data_out, expect, sink, done),
            None => done(queue::Finished {
                outcome: Err(QueueError::Transport("no I/O queue".into())),
                data_in: Vec::new(),
                data_out,
            }),
        }
    }

    /// The namespace this controller serves.
    #[must_use]
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// Closes every queue; commands in flight fail with a transport error.
    pub fn shutdown(&self, why: &str) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(PoisonError::into_inner).take() {
            drop(stop);
        }
        for q in &self.io {
            q.queue.kill(why);
        }
        self.admin.kill(why);
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown("the controller was closed");
    }
}

fn keep_alive(
    controller: &std::sync::Weak<Controller>,
    stop: &Receiver<()>,
    interval: Duration,
    kato: Duration,
    events: &Sender<Event>,
) {
    let answered = Arc::new(Mutex::new(Instant::now()));
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(c) = controller.upgrade() else { return };
        if let Some(why) = c.dead() {
            let _ = events.send(Event::Lost(why));
            return;
        }
        let last = *answered.lock().unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() > kato + interval {
            let why = format!("no Keep Alive answer from {} within {kato:?}", c.portal);
            c.shutdown(&why);
            let _ = events.send(Event::Lost(why));
            return;
        }
        if let Some(age) = c.io.iter().filter_map(|q| q.queue.oldest(0xff)).max() {
            if age > IO_TIMEOUT {
                let why = format!("an I/O command to {} got no answer within {IO_TIMEOUT:?}", c.portal);
                c.shutdown(&why);
                let _ = events.send(Event::Lost(why));
                return;
            }
        }
        let answered = Arc::clone(&answered);
        c.admin.submit(
            command::plain(opcode::KEEP_ALIVE),
            Vec::new(),
            0,
            Box::new(move |finished| {
                if finished.outcome.is_ok_and(|c| c.code() == 0) {
                    *answered.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                }
            }),
        );
    }
}

/// How long an I/O command may go unanswered before its controller is
/// reset (the kernel's `nvme_core.io_timeout`).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
}

/// Whether Identify controller's SUBNQN is `nqn` (or empty, as old targets leave it).
fn subnqn_matches(ctrl: &[u8], nqn: &str) -> bool {
    let raw = &ctrl[768..1024];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let reported = String::from_utf8_lossy(&raw[..end]);
    reported.trim().is_empty() || reported.trim() == nqn
}

/// Decodes Identify controller, namespace and namespace descriptors.
fn parse_identity(
    portal: SocketAddr,
    cntlid: u16,
    ctrl: &[u8],
    ns: &[u8],
    descriptors: &[u8],
    expected: &NamespaceIdentity,
) -> Result<Identity, ControllerError> {
    let nsid = expected.nsid;
    let wrong = |why: String| ControllerError::Namespace { portal, nsid, why };
    if ctrl.len() < 4096 || ns.len() < 4096 {
        return Err(wrong("short Identify data".into()));
    }
    let mdts = ctrl[77];
    let max_transfer = if mdts == 0 { 0 } else { 4096u32.checked_shl(u32::from(mdts)).unwrap_or(u32::MAX) };
    let ioccsz = le32(ctrl, 1792);
    let in_capsule = ioccsz.saturating_mul(16).saturating_sub(64);
    let oncs = le16(ctrl, 520);
    let blocks = le64(ns, 0);
    if blocks == 0 {
        return Err(wrong("not active on this controller (size 0)".into()));
    }
    let flbas = usize::from(ns[26] & 0x0f | (ns[26] >> 5 & 0x3) << 4);
    let lbaf = 128 + 4 * flbas;
    if le16(ns, lbaf) != 0 {
        return Err(wrong("formatted with metadata, which this host does not handle".into()));
    }
    let lbads = ns[lbaf + 2];
    if !(9..=16).contains(&lbads) {
        return Err(wrong(format!("logical block size 2^{lbads} is not usable")));
    }
    let uuid = parse_uuid_descriptor(descriptors);
    if let (Some(want), Some(got)) = (expected.uuid, uuid) {
        if want != got {
            return Err(wrong("its UUID is not the expected one: another namespace sits at this NSID".into()));
        }
    }
    if expected.uuid.is_some() && uuid.is_none() {
        return Err(wrong("the controller gives no UUID to check its identity".into()));
    }
    Ok(Identity {
        cntlid,
        max_transfer,
        in_capsule,
        ana: ctrl[76] & 1 << 3 != 0,
        vwc: ctrl[525] & 1 != 0,
        dsm: oncs & 1 << 2 != 0,
        write_zeroes: oncs & 1 << 3 != 0,
        block_size: 1 << lbads,
        blocks,
        anagrpid: le32(ns, 92),
        uuid,
    })
}

fn parse_uuid_descriptor(list: &[u8]) -> Option<[u8; 16]> {
    let mut at = 0;
    while at + 4 <= list.len() {
        let (kind, len) = (list[at], usize::from(list[at + 1]));
        if kind == 0 || len == 0 {
            return None;
        }
        let value = list.get(at + 4..at + 4 + len)?;
        if kind == 3 && len == 16 {
            return value.try_into().ok();
        }
        at += 4 + len;
    }
    None
}

/// The ANA state of group `grpid` in an ANA log page (read without namespace lists).
fn parse_ana(page: &[u8], grpid: u32) -> Option<u8> {
    let groups = usize::from(le16(page, 8));
    let mut at = 16;
    for _ in 0..groups {
        if at + 32 > page.len() {
            return None;
        }
        let nnsids = le32(page, at + 4) as usize;
        if le32(page, at) == grpid {
            return Some(page[at + 16] & 0x0f);
        }
        at += 32 + 4 * nnsids;
    }
    None
}
