//! Connect parameters and their one rendering into the kernel's option string.
//!
//! Every field is a validated type ([`super::names`]) or a number, so the
//! rendered string can only ever contain the options written here. The
//! defaults are chosen for VMs on shared storage:
//!
//! * `ctrl_loss_tmo=-1`: a controller whose path is lost keeps reconnecting
//!   forever, so the namespace never disappears under running VMs (the kernel
//!   default of 600 s removes it after a 10-minute outage);
//! * `keep_alive_tmo=5`, `reconnect_delay=5`: a silent path is noticed within
//!   seconds and retried often, so a restored path is back quickly;
//! * `fast_io_fail_tmo=90`: I/O does not hang forever either (like
//!   dm-multipath's `no_path_retry` in XCP-ng's other SRs), but it waits long
//!   enough that an outage of [`DOCUMENTED_OUTAGE`] seconds (an array
//!   controller failover, a switch reboot) ends with no error at all;
//! * `nr_io_queues`: the kernel's choice (one per CPU) unless configured.
//!
//! The outage arithmetic ([`Timers::survived_outage`]): the failfast timer
//! starts when the controller starts reconnecting, at the earliest the moment
//! the path drops (a reset connection is noticed at once; silence within
//! `keep_alive_tmo`), and fails queued I/O `fast_io_fail_tmo` seconds later.
//! A path that returns at second D is back after the next reconnect attempt
//! (at most `reconnect_delay` later) has completed; an attempt that was
//! already waiting on an unreachable address needs a TCP retransmission and
//! the queue set-up, which [`RECONNECT_MARGIN`] covers. So an outage of D
//! seconds passes without error when
//! `D + reconnect_delay + RECONNECT_MARGIN <= fast_io_fail_tmo`: with the
//! defaults, 60 + 5 + 25 = 90. The old default of 60 raced a 60 s outage.
//!
//! The host NQN and host ID are always passed (the kernel's default identity is
//! random per module load), identically on every connect.

use std::fmt;
use std::net::IpAddr;

use super::kernel_options::{self, KernelOptions};
use super::names::{DhchapKey, HostId, InterfaceName, InvalidValue, Nqn, Portal, Transport};

/// Reconnect and queue tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Seconds before a lost controller is removed; -1 = never.
    pub ctrl_loss_tmo: i32,
    /// Seconds between reconnect attempts.
    pub reconnect_delay: u32,
    /// Keep-alive timeout in seconds.
    pub keep_alive_tmo: u32,
    /// Seconds after which I/O fails while no path is usable; -1 = never.
    pub fast_io_fail_tmo: i32,
    /// I/O queues per controller; `None` = the kernel's choice.
    pub nr_io_queues: Option<u32>,
}

/// The outage (seconds with no path at all) the defaults survive with no
/// I/O error, as documented.
pub const DOCUMENTED_OUTAGE: u32 = 60;

/// Seconds a reconnect may take once the target is back: a TCP SYN
/// retransmission from an attempt that started while the address was
/// unreachable, plus the admin and I/O queues' connect.
pub const RECONNECT_MARGIN: u32 = 25;

impl Default for Timers {
    fn default() -> Self {
        Self { ctrl_loss_tmo: -1, reconnect_delay: 5, keep_alive_tmo: 5, fast_io_fail_tmo: 90, nr_io_queues: None }
    }
}

impl Timers {
    /// The longest outage (seconds with no path) survived with no I/O
    /// error; `None` when I/O never fails (it waits for as long as the outage
    /// lasts, or until `ctrl_loss_tmo` removes the controller).
    #[must_use]
    pub fn survived_outage(&self) -> Option<u32> {
        let fail = u32::try_from(self.fast_io_fail_tmo).ok()?;
        Some(fail.saturating_sub(self.reconnect_delay + RECONNECT_MARGIN))
    }

    /// The names [`Timers::set`] accepts (they are also device-config keys).
    pub const NAMES: [&'static str; 5] =
        ["ctrl_loss_tmo", "reconnect_delay", "keep_alive_tmo", "fast_io_fail_tmo", "nr_io_queues"];

    /// Sets one timer from its text, checking its range.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the setting and its allowed range.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), InvalidValue> {
        let number = |min: i64, max: i64, what: &'static str| {
            value.trim().parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| InvalidValue {
                what,
                value: value.to_owned(),
                why: format!("use a whole number of seconds from {min} to {max}"),
            })
        };
        let narrow = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
        let unsigned = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        match name {
            "ctrl_loss_tmo" => self.ctrl_loss_tmo = narrow(number(-1, 86_400 * 365, "ctrl_loss_tmo")?),
            "reconnect_delay" => self.reconnect_delay = unsigned(number(1, 3600, "reconnect_delay")?),
            "keep_alive_tmo" => self.keep_alive_tmo = unsigned(number(1, 3600, "keep_alive_tmo")?),
            "fast_io_fail_tmo" => self.fast_io_fail_tmo = narrow(number(-1, 86_400 * 365, "fast_io_fail_tmo")?),
            "nr_io_queues" => {
                let queues = value.trim().parse::<u32>().ok().filter(|n| (1..=1024).contains(n));
                self.nr_io_queues = Some(queues.ok_or_else(|| InvalidValue {
                    what: "nr_io_queues",
                    value: value.to_owned(),
                    why: "use a number of queues from 1 to 1024".to_owned(),
                })?);
            }
            other => {
                return Err(InvalidValue {
                    what: "setting",
                    value: other.to_owned(),
                    why: format!("known settings: {}", Self::NAMES.join(", ")),
                })
            }
        }
        if self.ctrl_loss_tmo >= 0 && self.fast_io_fail_tmo > self.ctrl_loss_tmo {
            return Err(InvalidValue {
                what: "fast_io_fail_tmo",
                value: self.fast_io_fail_tmo.to_string(),
                why: format!("it must not exceed ctrl_loss_tmo ({})", self.ctrl_loss_tmo),
            });
        }
        Ok(())
    }
}

/// This host's identity towards targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// Host NQN.
    pub nqn: Nqn,
    /// Host ID (the kernel insists on a 1:1 pairing with the NQN).
    pub id: HostId,
}

/// DH-HMAC-CHAP keys for one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authentication {
    /// The host's key: the target authenticates the host.
    pub host_key: Option<DhchapKey>,
    /// The controller's key: the host also authenticates the target.
    pub ctrl_key: Option<DhchapKey>,
}

/// Everything needed to connect one path to an I/O controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// TCP or RDMA.
    pub transport: Transport,
    /// Target address and port.
    pub portal: Portal,
    /// Subsystem NQN.
    pub subsystem: Nqn,
    /// Our identity.
    pub host: HostIdentity,
    /// Bind to this interface (`host_iface`).
    pub host_iface: Option<InterfaceName>,
    /// Bind to this source address (`host_traddr`).
    pub host_traddr: Option<IpAddr>,
    /// Tuning.
    pub timers: Timers,
    /// In-band authentication.
    pub auth: Authentication,
}

/// What identifies one path (controller), as the kernel's duplicate check
/// does: kept in the registry of who uses which path, and matched against
/// controllers in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PathKey {
    /// `tcp` or `rdma`.
    pub transport: Transport,
    /// Target address.
    pub traddr: IpAddr,
    /// Target port.
    pub trsvcid: u16,
    /// Subsystem NQN.
    pub subsysnqn: Nqn,
    /// Host NQN.
    pub hostnqn: Nqn,
    /// Source interface binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_iface: Option<InterfaceName>,
    /// Source address binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_traddr: Option<IpAddr>,
}

impl fmt::Display for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let portal = Portal { addr: self.traddr, port: self.trsvcid };
        write!(f, "{} {portal} {}", self.transport, self.subsysnqn)
    }
}

/// An option the running kernel does not take, and what its absence changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// The option's name.
    pub option: &'static str,
    /// Why it was left out and what that changes.
    pub why: String,
}

/// A rendered option string: shown redacted, exposed only to the fabrics device.
pub struct OptionString {
    text: String,
    shown: String,
    sent_optional: Vec<&'static str>,
    left_out: Vec<LeftOut>,
}

impl OptionString {
    /// The string to write to `/dev/nvme-fabrics`.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Options wanted but not sent, because the kernel does not take them.
    #[must_use]
    pub fn left_out(&self) -> &[LeftOut] {
        &self.left_out
    }

    /// The options sent that a kernel may not know ([`kernel_options::OPTIONAL`]).
    #[must_use]
    pub fn sent_optional(&self) -> &[&'static str] {
        &self.sent_optional
    }
}

impl fmt::Display for OptionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for OptionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OptionString({})", self.shown)
    }
}

impl ConnectOptions {
    /// The identity of the path these options connect.
    #[must_use]
    pub fn key(&self) -> PathKey {
        PathKey {
            transport: self.transport,
            traddr: self.portal.addr,
            trsvcid: self.portal.port,
            subsysnqn: self.subsystem.clone(),
            hostnqn: self.host.nqn.clone(),
            host_iface: self.host_iface.clone(),
            host_traddr: self.host_traddr,
        }
    }

    /// Renders the kernel option string: the only place it is built. Options
    /// `kernel` does not take are left out, each with what that changes.
    #[must_use]
    pub fn render(&self, kernel: &KernelOptions) -> OptionString {
        let mut plain: Vec<String> = vec![
            format!("transport={}", self.transport),
            format!("traddr={}", self.portal.addr),
            format!("trsvcid={}", self.portal.port),
            format!("nqn={}", self.subsystem),
            format!("hostnqn={}", self.host.nqn),
            format!("hostid={}", self.host.id),
        ];
        let mut sent_optional = Vec::new();
        let mut left_out = Vec::new();
        let optional = |name: &'static str,
                        value: String,
                        plain: &mut Vec<String>,
                        sent_optional: &mut Vec<&'static str>,
                        left_out: &mut Vec<LeftOut>| {
            if kernel.accepts(name) {
                sent_optional.push(name);
                plain.push(format!("{name}={value}"));
            } else if let Some(known) = kernel_options::optional(name) {
                let why = format!(
                    "kernel {} does not take {name} (Linux {}.{}, commit {}): {}",
                    kernel.release, known.since.0, known.since.1, known.commit, known.without
                );
                left_out.push(LeftOut { option: name, why });
            }
        };
        if let Some(iface) = &self.host_iface {
            if self.transport == Transport::Tcp {
                optional("host_iface", iface.as_str().to_owned(), &mut plain, &mut sent_optional, &mut left_out);
            } else {
                // Only nvme-tcp lists host_iface among its allowed options.
                left_out.push(LeftOut {
                    option: "host_iface",
                    why: format!(
                        "host_iface binds NVMe/TCP connections only; this {} connection is not bound to {} (use \
                         host_traddr in /etc/nvmetcp/host.conf)",
                        self.transport,
                        iface.as_str()
                    ),
                });
            }
        }
        if let Some(addr) = self.host_traddr {
            plain.push(format!("host_traddr={addr}"));
        }
        let t = &self.timers;
        plain.push(format!("keep_alive_tmo={}", t.keep_alive_tmo));
        plain.push(format!("reconnect_delay={}", t.reconnect_delay));
        plain.push(format!("ctrl_loss_tmo={}", t.ctrl_loss_tmo));
        if t.fast_io_fail_tmo >= 0 {
            optional("fast_io_fail_tmo", t.fast_io_fail_tmo.to_string(), &mut plain, &mut sent_optional, &mut left_out);
        }
        if let Some(queues) = t.nr_io_queues {
            plain.push(format!("nr_io_queues={queues}"));
        }
        let mut text = plain.join(",");
        let mut shown = text.clone();
        for (name, key) in [("dhchap_secret", &self.auth.host_key), ("dhchap_ctrl_secret", &self.auth.ctrl_key)] {
            if let Some(key) = key {
                text.push_str(&format!(",{name}={}", key.expose()));
                shown.push_str(&format!(",{name}=<redacted>"));
            }
        }
        OptionString { text, shown, sent_optional, left_out }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Authentication, ConnectOptions, HostIdentity, Timers};
    use crate::nvme::kernel_options::KernelOptions;
    use crate::nvme::names::{Portal, Transport};

    /// A kernel that takes every option.
    pub(crate) fn current() -> KernelOptions {
        KernelOptions { release: "6.12.0".to_owned(), listed: None, rejected: vec![] }
    }

    pub(crate) fn options() -> ConnectOptions {
        ConnectOptions {
            transport: Transport::Tcp,
            portal: Portal::parse("10.0.0.1", 4420).unwrap(),
            subsystem: "nqn.2024-01.io.example:array".parse().unwrap(),
            host: HostIdentity {
                nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".parse().unwrap(),
                id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".parse().unwrap(),
            },
            host_iface: None,
            host_traddr: None,
            timers: Timers::default(),
            auth: Authentication::default(),
        }
    }

    #[test]
    fn renders_every_field_in_one_place() {
        let mut opts = options();
        assert_eq!(
            opts.render(&current()).expose(),
            "transport=tcp,traddr=10.0.0.1,trsvcid=4420,nqn=nqn.2024-01.io.example:array,\
             hostnqn=nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427,\
             hostid=1b4e28ba-2fa1-11d2-883f-0016d3cca427,keep_alive_tmo=5,reconnect_delay=5,ctrl_loss_tmo=-1,\
             fast_io_fail_tmo=90"
        );
        opts.portal = Portal::parse("[fd00::7]:4421", 4420).unwrap();
        opts.host_iface = Some("eth1".parse().unwrap());
        opts.host_traddr = Some("fd00::1".parse().unwrap());
        opts.timers.set("nr_io_queues", "4").unwrap();
        opts.timers.set("fast_io_fail_tmo", "-1").unwrap();
        let text = opts.render(&current()).expose().to_owned();
        assert!(text.contains(",traddr=fd00::7,trsvcid=4421,"), "{text}");
        assert!(text.contains(",host_iface=eth1,host_traddr=fd00::1,"), "{text}");
        assert!(text.ends_with(",ctrl_loss_tmo=-1,nr_io_queues=4"), "{text}");
    }

    #[test]
    fn secrets_are_rendered_but_never_shown() {
        let mut opts = options();
        let key = "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:";
        opts.auth.host_key = Some(key.parse().unwrap());
        opts.auth.ctrl_key = Some(key.parse().unwrap());
        let rendered = opts.render(&current());
        assert!(rendered.expose().ends_with(&format!(",dhchap_secret={key},dhchap_ctrl_secret={key}")));
        let shown = format!("{rendered} {rendered:?} {opts:?}");
        assert!(!shown.contains("ia6z"), "{shown}");
        assert!(shown.contains("dhchap_secret=<redacted>,dhchap_ctrl_secret=<redacted>"));
    }

    #[test]
    fn every_rendered_option_is_one_known_token() {
        let mut opts = options();
        opts.host_iface = Some("eth1".parse().unwrap());
        opts.auth.host_key = Some("DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:".parse().unwrap());
        let known = [
            "transport",
            "traddr",
            "trsvcid",
            "nqn",
            "hostnqn",
            "hostid",
            "host_iface",
            "host_traddr",
            "keep_alive_tmo",
            "reconnect_delay",
            "ctrl_loss_tmo",
            "fast_io_fail_tmo",
            "nr_io_queues",
            "dhchap_secret",
            "dhchap_ctrl_secret",
        ];
        let rendered = opts.render(&current());
        let tokens: Vec<&str> = rendered.expose().split(',').collect();
        assert!(!rendered.expose().contains('\n'));
        for token in &tokens {
            let (name, _) = token.split_once('=').unwrap();
            assert!(known.contains(&name), "unexpected option {name}");
        }
        let mut names: Vec<&str> = tokens.iter().map(|t| t.split_once('=').unwrap().0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), tokens.len(), "no option twice");
    }

    #[test]
    fn the_defaults_survive_the_documented_outage() {
        let defaults = Timers::default();
        let survived = defaults.survived_outage().unwrap();
        assert!(survived >= super::DOCUMENTED_OUTAGE, "defaults survive only {survived} s");
        // The arithmetic, spelled out: 60 s outage + 5 s to the next attempt + 25 s margin.
        assert_eq!(super::DOCUMENTED_OUTAGE + defaults.reconnect_delay + super::RECONNECT_MARGIN, 90);
        let old = Timers { fast_io_fail_tmo: 60, ..defaults };
        assert!(old.survived_outage().unwrap() < super::DOCUMENTED_OUTAGE, "the old default raced a 60 s outage");
        assert_eq!(Timers { fast_io_fail_tmo: -1, ..defaults }.survived_outage(), None);
    }

    #[test]
    fn timers_are_range_checked() {
        let mut timers = Timers::default();
        timers.set("keep_alive_tmo", "10").unwrap();
        assert_eq!(timers.keep_alive_tmo, 10);
        for (name, bad) in [
            ("keep_alive_tmo", "0"),
            ("reconnect_delay", "-5"),
            ("ctrl_loss_tmo", "-2"),
            ("nr_io_queues", "0"),
            ("keep_alive_tmo", "5,nqn=x"),
            ("bogus", "1"),
        ] {
            let mut copy = timers;
            let err = copy.set(name, bad).unwrap_err();
            assert!(err.to_string().contains(bad) || name == "bogus", "{err}");
        }
        timers.set("ctrl_loss_tmo", "600").unwrap();
        let err = timers.set("fast_io_fail_tmo", "900").unwrap_err();
        assert!(err.to_string().contains("must not exceed ctrl_loss_tmo (600)"), "{err}");
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::tests::options;
    use crate::nvme::kernel_options::KernelOptions;
    use crate::nvme::names::Transport;

    #[test]
    fn options_the_kernel_does_not_take_are_left_out_and_explained() {
        let mut opts = options();
        opts.host_iface = Some("eth1".parse().unwrap());
        let old = KernelOptions {
            release: "4.19.0+1".to_owned(),
            listed: None,
            rejected: vec!["fast_io_fail_tmo".to_owned(), "host_iface".to_owned()],
        };
        let rendered = opts.render(&old);
        assert!(!rendered.expose().contains("fast_io_fail_tmo") && !rendered.expose().contains("host_iface"));
        assert!(rendered.expose().contains(",ctrl_loss_tmo=-1"), "{rendered}");
        let why: Vec<&str> = rendered.left_out().iter().map(|l| l.why.as_str()).collect();
        assert_eq!(rendered.left_out().len(), 2, "{why:?}");
        assert!(
            why[0].contains("kernel 4.19.0+1 does not take host_iface (Linux 5.14, commit 3ede8f72a9a2"),
            "{why:?}"
        );
        assert!(why[1].contains("fast_io_fail_tmo (Linux 5.10") && why[1].contains("waits until a path returns"));
        assert!(rendered.sent_optional().is_empty());
        // host_iface is an nvme-tcp option: never sent on RDMA.
        opts.transport = Transport::Rdma;
        let rdma = opts.render(&super::tests::current());
        assert!(!rdma.expose().contains("host_iface") && rdma.left_out()[0].why.contains("NVMe/TCP connections only"));
    }
}
