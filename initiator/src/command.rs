//! Submission queue entries the host sends (NVMe base specification and
//! NVMe over Fabrics; the kernel's `include/linux/nvme.h`), without the
//! command identifier and data pointer, which the queue fills in.

/// A 64-byte submission queue entry.
pub type Sqe = [u8; 64];

/// Admin and fabrics opcodes.
pub mod opcode {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT: u8 = 0x0c;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics commands (the type is in byte 4).
    pub const FABRICS: u8 = 0x7f;
    /// NVM: Flush.
    pub const FLUSH: u8 = 0x00;
    /// NVM: Write.
    pub const WRITE: u8 = 0x01;
    /// NVM: Read.
    pub const READ: u8 = 0x02;
    /// NVM: Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// NVM: Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// Fabrics command types.
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECEIVE: u8 = 0x06;
}

/// Controller properties.
pub mod property {
    /// Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Configuration.
    pub const CC: u32 = 0x14;
    /// Status.
    pub const CSTS: u32 = 0x1c;
}

/// The discovery subsystem's well-known NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

fn base(opcode: u8) -> Sqe {
    let mut sqe = [0u8; 64];
    sqe[0] = opcode;
    sqe[1] = 0x40; // PSDT: SGL for data, as fabrics require
    sqe
}

fn put32(sqe: &mut Sqe, at: usize, value: u32) {
    sqe[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(sqe: &mut Sqe, at: usize, value: u64) {
    sqe[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Sets the command identifier.
pub fn set_cid(sqe: &mut Sqe, cid: u16) {
    sqe[2..4].copy_from_slice(&cid.to_le_bytes());
}

/// SGL data block for data carried in the capsule (offset 0).
pub fn set_sgl_in_capsule(sqe: &mut Sqe, length: u32) {
    sqe[24..40].fill(0);
    sqe[32..36].copy_from_slice(&length.to_le_bytes());
    sqe[39] = 0x01;
}

/// SGL transport data block (type 5, subtype 0xA): data moved by C2HData or R2T/H2CData.
pub fn set_sgl_transport(sqe: &mut Sqe, length: u32) {
    sqe[24..40].fill(0);
    sqe[32..36].copy_from_slice(&length.to_le_bytes());
    sqe[39] = 0x5a;
}

/// Fabrics Connect; its 1024 bytes of data come from [`connect_data`].
#[must_use]
pub fn connect(qid: u16, sqsize: u16, kato_ms: u32, disable_sqflow: bool) -> Sqe {
    let mut sqe = base(opcode::FABRICS);
    sqe[4] = fctype::CONNECT;
    sqe[42..44].copy_from_slice(&qid.to_le_bytes());
    sqe[44..46].copy_from_slice(&sqsize.saturating_sub(1).to_le_bytes()); // 0's based
    sqe[46] = if disable_sqflow { 0x04 } else { 0 };
    put32(&mut sqe, 48, kato_ms);
    sqe
}

/// The data of Fabrics Connect.
#[must_use]
pub fn connect_data(host_id: &[u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Vec<u8> {
    let mut data = vec![0u8; 1024];
    data[..16].copy_from_slice(host_id);
    data[16..18].copy_from_slice(&cntlid.to_le_bytes());
    put_str(&mut data[256..512], subnqn);
    put_str(&mut data[512..768], hostnqn);
    data
}

fn put_str(field: &mut [u8], text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(field.len() - 1);
    field[..n].copy_from_slice(&bytes[..n]);
}

/// Property Get of a 4-byte (or, with `eight`, 8-byte) property.
#[must_use]
pub fn property_get(offset: u32, eight: bool) -> Sqe {
    let mut sqe = base(opcode::FABRICS);
    sqe[4] = fctype::PROPERTY_GET;
    sqe[40] = u8::from(eight);
    put32(&mut sqe, 44, offset);
    sqe
}

/// Property Set of a 4-byte property.
#[must_use]
pub fn property_set(offset: u32, value: u32) -> Sqe {
    let mut sqe = base(opcode::FABRICS);
    sqe[4] = fctype::PROPERTY_SET;
    put32(&mut sqe, 44, offset);
    put64(&mut sqe, 48, u64::from(value));
    sqe
}

/// Identify with controller or namespace structure `cns`.
#[must_use]
pub fn identify(cns: u8, nsid: u32) -> Sqe {
    let mut sqe = base(opcode::IDENTIFY);
    put32(&mut sqe, 4, nsid);
    put32(&mut sqe, 40, u32::from(cns));
    sqe
}

/// Get Log Page `lid` (with log specific field `lsp`), `length` bytes at `offset`.
#[must_use]
pub fn get_log_page(lid: u8, lsp: u8, nsid: u32, offset: u64, length: u32) -> Sqe {
    let mut sqe = base(opcode::GET_LOG_PAGE);
    put32(&mut sqe, 4, nsid);
    let dwords = (length / 4).saturating_sub(1);
    put32(&mut sqe, 40, u32::from(lid) | u32::from(lsp & 0x7f) << 8 | (dwords & 0xffff) << 16);
    put32(&mut sqe, 44, dwords >> 16);
    put64(&mut sqe, 48, offset);
    sqe
}

/// Set Features `fid` with dword 11 `value`.
#[must_use]
pub fn set_features(fid: u8, value: u32) -> Sqe {
    let mut sqe = base(opcode::SET_FEATURES);
    put32(&mut sqe, 40, u32::from(fid));
    put32(&mut sqe, 44, value);
    sqe
}

/// A command with no fields (Keep Alive, Asynchronous Event Request).
#[must_use]
pub fn plain(op: u8) -> Sqe {
    base(op)
}

/// Read or Write of `blocks` logical blocks at `lba`, with forced unit access.
#[must_use]
pub fn read_write(op: u8, nsid: u32, lba: u64, blocks: u32, fua: bool) -> Sqe {
    let mut sqe = base(op);
    put32(&mut sqe, 4, nsid);
    put64(&mut sqe, 40, lba);
    put32(&mut sqe, 48, blocks.saturating_sub(1) & 0xffff | if fua { 1 << 30 } else { 0 });
    sqe
}

/// Flush.
#[must_use]
pub fn flush(nsid: u32) -> Sqe {
    let mut sqe = base(opcode::FLUSH);
    put32(&mut sqe, 4, nsid);
    sqe
}

/// Write Zeroes of `blocks` logical blocks at `lba`.
#[must_use]
pub fn write_zeroes(nsid: u32, lba: u64, blocks: u32) -> Sqe {
    read_write(opcode::WRITE_ZEROES, nsid, lba, blocks, false)
}

/// Dataset Management, deallocate, with one range (its 16-byte data from [`dsm_range`]).
#[must_use]
pub fn deallocate(nsid: u32) -> Sqe {
    let mut sqe = base(opcode::DSM);
    put32(&mut sqe, 4, nsid);
    put32(&mut sqe, 40, 0); // NR: one range, 0's based
    put32(&mut sqe, 44, 1 << 2); // AD: deallocate
    sqe
}

/// One Dataset Management range.
#[must_use]
pub fn dsm_range(lba: u64, blocks: u32) -> Vec<u8> {
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&blocks.to_le_bytes());
    range[8..16].copy_from_slice(&lba.to_le_bytes());
    range
}
