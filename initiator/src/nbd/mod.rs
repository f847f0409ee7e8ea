//! The serving side: a [`crate::block::BlockDevice`] exported to the host
//! as a kernel NBD device, set up through the NBD generic-netlink interface
//! (Linux 4.12 and later, so every XCP-ng 8.x dom0), with one socket pair
//! per connection and this process as the NBD server.

pub mod budget;
pub mod export;
pub mod kernel;
pub mod netlink;
pub mod proto;
pub mod resend;
pub mod server;
