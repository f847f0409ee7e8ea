//! Test fixture: a host root whose dom0 XAPI socket is served by the
//! in-process XAPI emulator, logged in as dom0's root, with this host named
//! in `/etc/xensource-inventory` as on an XCP-ng host. Behind the `testing`
//! feature (the test bed and the admin tests use it too), never in the dom0
//! binary.

use xapi_client::api::HostRef;
use xapi_client::{Client, Credentials, Endpoint, Session, Timeouts};
use xapi_emulator::Emulator;

use crate::agent::INVENTORY;
use crate::host::HostRoot;
use crate::pool_role::POOL_CONF;
use crate::secrets::XAPI_SOCKET;

/// An emulated XAPI serving one host root (see the module documentation).
pub struct XapiHost {
    /// The host this XAPI runs on.
    pub root: HostRoot,
    /// The emulator (its records, its HTTP listener).
    pub emulator: Emulator,
    /// A session logged in over the dom0 socket.
    pub session: Session,
    /// This host's record.
    pub me: HostRef,
    /// This host's uuid, as the inventory names it.
    pub uuid: String,
    _dir: Option<tempfile::TempDir>,
}

impl XapiHost {
    /// Serves `emulator` on `root`'s dom0 socket (a stale one is replaced)
    /// and makes `root` the pool's host named `me`: its uuid is written to
    /// the inventory.
    ///
    /// # Panics
    /// If the socket cannot be served, the login fails or the pool has no
    /// host named `me`: a fixture that cannot be set up fails the test.
    #[allow(clippy::unwrap_used)] // test fixture: a failed step is a failed test
    pub fn serve(root: HostRoot, emulator: Emulator, me: &str) -> Self {
        let socket = root.path(XAPI_SOCKET);
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&socket);
        emulator.listen_unix(&socket).unwrap();
        let session =
            Client::new(Endpoint::Unix(socket), Timeouts::default()).login(&Credentials::local_root(), "test").unwrap();
        let (host, record) = xapi_client::api::host::get_all_records(&session)
            .unwrap()
            .into_iter()
            .find(|(_, h)| h.name_label == me)
            .unwrap_or_else(|| panic!("the emulated pool has no host {me}"));
        let inventory = root.path(INVENTORY);
        std::fs::create_dir_all(inventory.parent().unwrap()).unwrap();
        std::fs::write(inventory, format!("INSTALLATION_UUID='{}'\n", record.uuid)).unwrap();
        Self { root, emulator, session, me: host, uuid: record.uuid, _dir: None }
    }

    /// [`Self::serve`] on a fresh temporary root that is the pool master
    /// (`/etc/xensource/pool.conf` says `master`); the root lives as long as
    /// the fixture.
    ///
    /// # Panics
    /// As [`Self::serve`].
    #[allow(clippy::unwrap_used)] // test fixture: a failed step is a failed test
    pub fn master(emulator: Emulator, me: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::at(dir.path());
        write_master_role(&root);
        Self { _dir: Some(dir), ..Self::serve(root, emulator, me) }
    }
}

/// Makes `root` a pool master as xapi leaves it (`pool.conf` says `master`).
#[allow(clippy::unwrap_used)] // test fixture: a failed step is a failed test
fn write_master_role(root: &HostRoot) {
    let conf = root.path(POOL_CONF);
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(conf, "master").unwrap();
}
