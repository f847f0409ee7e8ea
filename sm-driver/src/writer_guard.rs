//! The on-disk guard against a second LVM metadata writer.
//!
//! [`crate::pool_role`] keeps every host but the one whose `pool.conf` says
//! exactly `master` from writing. That still leaves two masters: an
//! emergency transition (`xe pool-emergency-transition-to-master`) on a
//! member while the old master lives, or two machines outside any pool
//! sharing a namespace. Both would commit the same VG and lose volumes. So
//! the VG names its writer in a tag ([`WRITER_TAG`]`<host uuid>`), and every
//! metadata-writing call checks it first ([`guard`]):
//!
//! * it names this host, or no host: write (claiming it, in the second case);
//! * it names another host: that host may still be writing. The writer
//!   moves to this host only when that host is provably not the master any
//!   more: XAPI no longer lists it, reports it not live (HA has fenced it, or
//!   it is down), or its own plugin answers that it is not the master (a
//!   normal `xe pool-designate-new-master`). If it still says `master`, or
//!   cannot be asked, nothing is written (`NVMETCP_SECOND_WRITER`).
//!
//! Why a tag rather than lvmlockd: lvmlockd needs a lock manager daemon
//! (sanlock or dlm) running on every host, which XCP-ng's dom0 does not ship
//! or run, and a lease manager of our own would need a lease area and a
//! clock discipline on the array. The tag needs nothing but LVM, lives with
//! the metadata it protects, and is checked where the damage would happen.
//! It is a guard, not a lock: two masters that both pass the check at the
//! same instant can still race once, and the first check afterwards on
//! either stops one of them; the rule that keeps that from happening is
//! XAPI's: no emergency transition while the old master lives.

use std::collections::BTreeMap;
use std::time::Duration;

use xapi_client::api::host;
use xapi_client::{Client, Credentials, Endpoint, Timeouts};

use crate::host::HostRoot;
use crate::lvm::{Lvm, LvmError, Vg};
use crate::pool_role::{role, Role};
use crate::secrets::XAPI_SOCKET;

/// The VG tag naming the host that writes the SR's metadata.
pub const WRITER_TAG: &str = "nvmetcp.writer=";
/// The host plugin's function answering this host's pool role.
pub const ROLE_FUNCTION: &str = "pool_role";

/// Another host may be writing the SR's metadata.
#[derive(Debug, thiserror::Error)]
pub enum SecondWriter {
    /// The other host still says it is the master.
    #[error(
        "host {writer} also acts as pool master and writes this SR's LVM metadata; two writers would lose volumes, \
         so nothing was written. Make sure only one host is master (no emergency transition while the old master \
         lives), then retry on the real master"
    )]
    OtherMaster {
        /// The host named in the VG.
        writer: String,
    },
    /// The other host cannot be asked.
    #[error(
        "host {writer} wrote this SR's LVM metadata last and cannot tell whether it still does ({why}); nothing was \
         written. Bring it back, or shut it down (XAPI then reports it not live) before retrying"
    )]
    Unknown {
        /// The host named in the VG.
        writer: String,
        /// Why.
        why: String,
    },
    /// The tag could not be written.
    #[error("cannot record this host as the SR's metadata writer")]
    Claim(#[source] LvmError),
}

/// What the host named in the tag is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// It still says it is the master.
    StillMaster,
    /// It is gone, down, or no longer the master.
    NotMaster,
}

/// The writer tag this host would set.
#[must_use]
pub fn tag_for(me: &str) -> String {
    format!("{WRITER_TAG}{me}")
}

/// Decides from the VG's tag: `Ok(None)` to write as is, `Ok(Some(old))` to
/// claim the writer first (`old` the tag to replace, if any).
///
/// # Errors
/// [`SecondWriter`] when another host may be writing.
pub fn decide(
    me: &str,
    tags: &[String],
    ask: impl FnOnce(&str) -> Result<Writer, String>,
) -> Result<Option<Option<String>>, SecondWriter> {
    let current = tags.iter().find(|t| t.starts_with(WRITER_TAG));
    match current.map(|t| &t[WRITER_TAG.len()..]) {
        Some(writer) if writer == me => Ok(None),
        None => Ok(Some(None)),
        Some(writer) => match ask(writer) {
            Ok(Writer::NotMaster) => Ok(Some(current.cloned())),
            Ok(Writer::StillMaster) => Err(SecondWriter::OtherMaster { writer: writer.to_owned() }),
            Err(why) => Err(SecondWriter::Unknown { writer: writer.to_owned(), why }),
        },
    }
}

/// Checks (and if needed claims) the writer of `vg` before a metadata write.
///
/// # Errors
/// [`SecondWriter`] when another host may be writing, or the claim fails.
pub fn guard(root: &HostRoot, lvm: &Lvm<'_>, vg: &Vg) -> Result<(), SecondWriter> {
    let me = this_host(root);
    let standalone = role(root) == Role::Standalone;
    let decision = decide(&me, &vg.tags, |writer| {
        if standalone {
            Err("this machine is in no XCP-ng pool, so no pool can say who the master is".to_owned())
        } else {
            ask_pool(root, writer)
        }
    })?;
    if let Some(old) = decision {
        if let Some(old) = &old {
            tracing::warn!(vg = %vg.name, previous = %old, "the previous metadata writer is not the master any more; this host takes over");
        }
        let old: Vec<String> = old.into_iter().collect();
        lvm.retag(&vg.name, &old, &[tag_for(&me)]).map_err(SecondWriter::Claim)?;
    }
    Ok(())
}

/// This host's identity in the tag: its XAPI uuid on XCP-ng, else its NVMe
/// host ID.
#[must_use]
pub fn this_host(root: &HostRoot) -> String {
    crate::pool_mappings::this_host_uuid(root)
        .or_else(|| root.read_trimmed("/etc/nvme/hostid").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Asks XAPI, then the host itself, whether `writer` is still the master.
fn ask_pool(root: &HostRoot, writer: &str) -> Result<Writer, String> {
    let endpoint = Endpoint::Unix(root.path(XAPI_SOCKET));
    let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(30) };
    let session = Client::new(endpoint, timeouts)
        .login(&Credentials::local_root(), "nvmetcp-plugin")
        .map_err(|e| format!("XAPI: {e}"))?;
    let hosts = host::get_all_records(&session).map_err(|e| format!("XAPI: {e}"))?;
    let Some((reference, record)) = hosts.into_iter().find(|(_, h)| h.uuid == writer) else {
        return Ok(Writer::NotMaster);
    };
    if !host::is_live(&session, &record.metrics).map_err(|e| format!("XAPI: {e}"))? {
        return Ok(Writer::NotMaster);
    }
    let answer = host::call_plugin(&session, &reference, "nvmetcp", ROLE_FUNCTION, &BTreeMap::new())
        .map_err(|e| format!("its plugin: {e}"))?;
    Ok(if answer == "master" { Writer::StillMaster } else { Writer::NotMaster })
}

/// The host plugin's side: this host's role as one word.
#[must_use]
pub fn role_answer(root: &HostRoot) -> String {
    match role(root) {
        Role::Master => "master",
        Role::Member(_) => "member",
        Role::Standalone => "standalone",
        Role::Unknown(_) => "unknown",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::{decide, tag_for, SecondWriter, Writer};

    fn tags(writer: Option<&str>) -> Vec<String> {
        let mut tags = vec!["nvmetcp_sr".to_owned()];
        tags.extend(writer.map(tag_for));
        tags
    }

    #[test]
    fn this_host_writes_what_it_wrote_and_claims_what_nobody_claimed() {
        assert_eq!(decide("a", &tags(Some("a")), |_| unreachable!("nobody to ask")).unwrap(), None);
        assert_eq!(decide("a", &tags(None), |_| unreachable!("nobody to ask")).unwrap(), Some(None));
    }

    #[test]
    fn another_writer_is_replaced_only_when_provably_not_master() {
        let taken = decide("b", &tags(Some("a")), |w| {
            assert_eq!(w, "a");
            Ok(Writer::NotMaster)
        })
        .unwrap();
        assert_eq!(taken, Some(Some(tag_for("a"))), "a normal designation of a new master");
        let err = decide("b", &tags(Some("a")), |_| Ok(Writer::StillMaster)).unwrap_err();
        assert!(matches!(err, SecondWriter::OtherMaster { ref writer } if writer == "a"));
        assert!(err.to_string().contains("no emergency transition while the old master lives"), "{err}");
        let err = decide("b", &tags(Some("a")), |_| Err("timed out".to_owned())).unwrap_err();
        assert!(err.to_string().contains("(timed out); nothing was written"), "{err}");
    }
}
