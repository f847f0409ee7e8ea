//! DH-HMAC-CHAP in-band authentication (NVMe base specification, section
//! "Authentication"; the kernel's `drivers/nvme/host/auth.c` and
//! `drivers/nvme/common/auth.c`), with the same `DHHC-1` secrets the
//! kernel path takes: SHA-256/384/512, the NULL DH group and the RFC 7919
//! groups ffdhe2048 to ffdhe8192 ([`crate::dh`]), optionally bidirectional
//! (the controller proves it knows its key too).
//!
//! One transaction per queue, right after its Fabrics Connect says
//! authentication is required: Negotiate → Challenge → Reply → Success1
//! (→ Success2 when bidirectional), carried by Authentication Send and
//! Receive.

use std::io::Read;
use std::time::Instant;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

use crate::command::{self, fctype, opcode, Sqe};
use crate::config::{AuthKeys, DhchapSecret};
use crate::dh::Group;
use crate::queue::{Queue, QueueError};

/// Hash function identifiers.
const SHA256: u8 = 1;
const SHA384: u8 = 2;
const SHA512: u8 = 3;
/// Message types.
const COMMON_MESSAGES: u8 = 0x00;
const DHCHAP_MESSAGES: u8 = 0x01;
const NEGOTIATE: u8 = 0x00;
const CHALLENGE: u8 = 0x01;
const REPLY: u8 = 0x02;
const SUCCESS1: u8 = 0x03;
const SUCCESS2: u8 = 0x04;
const FAILURE2: u8 = 0xf0;
const FAILURE1: u8 = 0xf1;
/// Security protocol of DH-HMAC-CHAP.
const SECP_DHCHAP: u8 = 0xe9;
/// Largest message received.
const RECEIVE_LEN: usize = 4096;

/// A secret decoded from its `DHHC-1:hh:base64:` form.
pub struct Secret {
    key: Vec<u8>,
    /// 0: used as is; 1/2/3: transformed with HMAC-SHA-256/384/512 first.
    transform: u8,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Decodes a secret: base64 of the key and its CRC-32 (little-endian), the
/// key 32, 48 or 64 bytes long.
///
/// # Errors
/// A text naming what is wrong (the secret itself is never quoted).
pub fn decode(secret: &DhchapSecret) -> Result<Secret, String> {
    let text = secret.expose();
    let mut parts = text.split(':');
    let (_, hh, b64) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let transform = match hh {
        "00" => 0,
        "01" => SHA256,
        "02" => SHA384,
        "03" => SHA512,
        _ => return Err("unknown key transformation (expected 00 to 03)".into()),
    };
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "the key is not base64".to_owned())?;
    if ![36, 52, 68].contains(&raw.len()) {
        return Err(format!("the key is {} bytes, expected 32, 48 or 64 plus its CRC", raw.len().saturating_sub(4)));
    }
    let (key, crc) = raw.split_at(raw.len() - 4);
    if crc32_ieee(key).to_le_bytes() != crc {
        return Err("the key's CRC does not match (a mistyped secret?)".into());
    }
    Ok(Secret { key: key.to_vec(), transform })
}

/// CRC-32 (IEEE 802.3), as the secret format uses it.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { crc >> 1 ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().to_vec())
}

/// HMAC with hash function `id` over the concatenation of `parts`.
fn hmac(id: u8, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    match id {
        SHA256 => hmac_with::<Hmac<Sha256>>(key, parts),
        SHA384 => hmac_with::<Hmac<Sha384>>(key, parts),
        SHA512 => hmac_with::<Hmac<Sha512>>(key, parts),
        _ => None,
    }
}

/// The hash of `data` with hash function `id`.
fn digest(id: u8, data: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    match id {
        SHA256 => Some(Sha256::digest(data).to_vec()),
        SHA384 => Some(Sha384::digest(data).to_vec()),
        SHA512 => Some(Sha512::digest(data).to_vec()),
        _ => None,
    }
}

/// A challenge augmented with the DH session key: HMAC(H(key), challenge),
/// as the kernel's `nvme_auth_augmented_challenge` computes it.
fn augmented(hash: u8, session_key: &[u8], challenge: &[u8]) -> Option<Vec<u8>> {
    hmac(hash, &digest(hash, session_key)?, &[challenge])
}

fn hash_len(id: u8) -> Option<usize> {
    match id {
        SHA256 => Some(32),
        SHA384 => Some(48),
        SHA512 => Some(64),
        _ => None,
    }
}

impl Secret {
    /// The key as used in responses: transformed with the NQN of its owner.
    fn transformed(&self, nqn: &str) -> Option<Vec<u8>> {
        if self.transform == 0 {
            return Some(self.key.clone());
        }
        hmac(self.transform, &self.key, &[nqn.as_bytes(), b"NVMe-over-Fabrics"])
    }
}

/// The response to a challenge (`who` is `HostHost` or `Controller`).
#[allow(clippy::too_many_arguments)] // the fields the specification hashes, in its order
fn response(
    hash: u8,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    t_id: u16,
    who: &[u8],
    first_nqn: &str,
    second_nqn: &str,
) -> Option<Vec<u8>> {
    hmac(
        hash,
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &t_id.to_le_bytes(),
            &[0],
            who,
            first_nqn.as_bytes(),
            &[0],
            second_nqn.as_bytes(),
        ],
    )
}

fn auth_sqe(kind: u8, length: usize) -> Sqe {
    let mut sqe = command::plain(opcode::FABRICS);
    sqe[4] = kind;
    sqe[41] = 0x01; // SPSP0
    sqe[42] = 0x01; // SPSP1
    sqe[43] = SECP_DHCHAP;
    sqe[44..48].copy_from_slice(&u32::try_from(length).unwrap_or(0).to_le_bytes());
    sqe
}

fn random(n: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(out)
}

struct Transaction<'a> {
    queue: &'a Queue,
    t_id: u16,
    deadline: Instant,
}

impl Transaction<'_> {
    fn send(&self, message: Vec<u8>) -> Result<(), String> {
        let sqe = auth_sqe(fctype::AUTH_SEND, message.len());
        let what = message[1];
        let (cqe, _) =
            self.queue.call(sqe, message, 0, self.deadline).map_err(|e| format!("sending message {what:#x}: {e}"))?;
        if cqe.code() != 0 {
            return Err(format!("Authentication Send: NVMe status {:#x}", cqe.code()));
        }
        Ok(())
    }

    fn receive(&self, expected: u8) -> Result<Vec<u8>, String> {
        let sqe = auth_sqe(fctype::AUTH_RECEIVE, RECEIVE_LEN);
        let (cqe, data) = self.queue.call(sqe, Vec::new(), RECEIVE_LEN, self.deadline).map_err(|e| match e {
            // nvmet tears the controller down right after its Failure1,
            // so the refusal may arrive as a closed connection.
            QueueError::Transport(_) if expected == SUCCESS1 => {
                "the controller closed the connection after the host's response: it refused the host's credentials; check the host key (dhchap_secret)".to_owned()
            }
            other => format!("receiving message {expected:#x}: {other}"),
        })?;
        if cqe.code() != 0 {
            return Err(format!("Authentication Receive: NVMe status {:#x}", cqe.code()));
        }
        if data.len() < 16 {
            return Err("a short authentication message".into());
        }
        if data[0] == COMMON_MESSAGES && data[1] == FAILURE1 {
            return Err(format!(
                "the controller refused the host's credentials (reason {:#x}, {}): check the host key (dhchap_secret)",
                data[7],
                failure_reason(data[7])
            ));
        }
        if data[0] != DHCHAP_MESSAGES || data[1] != expected {
            return Err(format!("unexpected authentication message {:#x}/{:#x}", data[0], data[1]));
        }
        if u16::from_le_bytes([data[4], data[5]]) != self.t_id {
            return Err("an authentication message of another transaction".into());
        }
        Ok(data)
    }

    fn failure2(&self, reason: u8) {
        let mut m = vec![0u8; 16];
        m[0] = COMMON_MESSAGES;
        m[1] = FAILURE2;
        m[4..6].copy_from_slice(&self.t_id.to_le_bytes());
        m[6] = 0x01; // authentication failure
        m[7] = reason;
        let _ = self.send(m);
    }
}

fn failure_reason(code: u8) -> &'static str {
    match code {
        1 => "authentication failed",
        2 => "protocol not usable",
        3 => "secure channel concatenation mismatch",
        4 => "hash function not usable",
        5 => "DH group not usable",
        6 => "incorrect payload",
        7 => "incorrect protocol message",
        _ => "unknown",
    }
}

/// Authenticates one queue right after its Connect.
///
/// # Errors
/// A text saying what failed (never containing a key).
pub fn authenticate(
    queue: &Queue,
    keys: &AuthKeys,
    host_nqn: &str,
    subsys_nqn: &str,
    t_id: u16,
    deadline: Instant,
) -> Result<(), String> {
    let host_secret = decode(&keys.host).map_err(|e| format!("dhchap_secret: {e}"))?;
    let ctrl_secret = keys.ctrl.as_ref().map(decode).transpose().map_err(|e| format!("dhchap_ctrl_secret: {e}"))?;
    let t = Transaction { queue, t_id, deadline };
    // Negotiate: DH-HMAC-CHAP with SHA-256/384/512 and the NULL DH group.
    let mut negotiate = vec![0u8; 8 + 64];
    negotiate[0] = COMMON_MESSAGES;
    negotiate[1] = NEGOTIATE;
    negotiate[4..6].copy_from_slice(&t_id.to_le_bytes());
    negotiate[7] = 1; // one protocol descriptor
    let d = &mut negotiate[8..];
    d[0] = 0x01; // DH-HMAC-CHAP
    d[2] = 3;
    d[4..7].copy_from_slice(&[SHA256, SHA384, SHA512]);
    // The NULL group first, then the ffdhe groups, as the kernel host offers
    // them: nvmet's negotiation (fabrics-cmd-auth.c, nvmet_auth_negotiate)
    // only keeps its configured group when the host lists another one too.
    d[3] = 6;
    d[4 + 30..4 + 36].copy_from_slice(&[0, 1, 2, 3, 4, 5]);
    t.send(negotiate)?;
    let challenge = t.receive(CHALLENGE)?;
    let (hl, hash, dhgid) = (usize::from(challenge[6]), challenge[8], challenge[9]);
    let dhvlen = usize::from(u16::from_le_bytes([challenge[10], challenge[11]]));
    let seqnum = u32::from_le_bytes([challenge[12], challenge[13], challenge[14], challenge[15]]);
    if hash_len(hash) != Some(hl) {
        t.failure2(4);
        return Err(format!("the controller chose hash function {hash} with length {hl}, which this host does not do"));
    }
    let c1 = challenge.get(16..16 + hl).ok_or("a short challenge")?;
    // With a DH group: the controller's public value follows the challenge;
    // ours goes in the reply, and the session key augments both challenges.
    let (host_public, session_key) = match (dhgid, Group::by_id(dhgid)) {
        (0, _) if dhvlen == 0 => (Vec::new(), None),
        (_, Some(group)) if dhvlen == group.value_len() => {
            let peer = challenge.get(16 + hl..16 + hl + dhvlen).ok_or("a short challenge")?;
            let private = random(group.private_len())?;
            let shared = group.shared(&private, peer).inspect_err(|_| t.failure2(6))?;
            (group.public(&private), Some(shared))
        }
        _ => {
            t.failure2(5);
            return Err(format!(
                "the controller chose DH group {dhgid} with a {dhvlen}-byte value; this host does the NULL group and ffdhe2048 to ffdhe8192 (groups 0 to 5)"
            ));
        }
    };
    let augment = |challenge: &[u8]| -> Result<Vec<u8>, String> {
        match &session_key {
            Some(key) => augmented(hash, key, challenge).ok_or_else(|| "HMAC failed".to_owned()),
            None => Ok(challenge.to_vec()),
        }
    };
    let host_key = host_secret.transformed(host_nqn).ok_or("cannot transform the host key")?;
    let r1 = response(hash, &host_key, &augment(c1)?, seqnum, t_id, b"HostHost", host_nqn, subsys_nqn)
        .ok_or("HMAC failed")?;
    let mut reply = vec![0u8; 16 + 2 * hl + host_public.len()];
    reply[0] = DHCHAP_MESSAGES;
    reply[1] = REPLY;
    reply[4..6].copy_from_slice(&t_id.to_le_bytes());
    reply[6] = u8::try_from(hl).unwrap_or(0);
    reply[10..12].copy_from_slice(&u16::try_from(host_public.len()).unwrap_or(0).to_le_bytes());
    reply[16..16 + hl].copy_from_slice(&r1);
    reply[16 + 2 * hl..].copy_from_slice(&host_public);
    let mut expected_r2 = None;
    if let Some(secret) = &ctrl_secret {
        let c2 = random(hl)?;
        let s2 = u32::from_le_bytes(random(4)?.try_into().unwrap_or([1, 0, 0, 0])).max(1);
        reply[8] = 1; // CVALID
        reply[12..16].copy_from_slice(&s2.to_le_bytes());
        reply[16 + hl..16 + 2 * hl].copy_from_slice(&c2);
        let ctrl_key = secret.transformed(subsys_nqn).ok_or("cannot transform the controller key")?;
        expected_r2 = Some(
            response(hash, &ctrl_key, &augment(&c2)?, s2, t_id, b"Controller", subsys_nqn, host_nqn)
                .ok_or("HMAC failed")?,
        );
    }
    t.send(reply)?;
    let success1 = t.receive(SUCCESS1)?;
    if let Some(r2) = expected_r2 {
        let rvalid = success1[8] & 1 != 0;
        if !rvalid || success1.get(16..16 + hl) != Some(r2.as_slice()) {
            t.failure2(1);
            return Err("the controller failed to prove its key (check dhchap_ctrl_secret): refusing it".into());
        }
        let mut success2 = vec![0u8; 16];
        success2[0] = DHCHAP_MESSAGES;
        success2[1] = SUCCESS2;
        success2[4..6].copy_from_slice(&t_id.to_le_bytes());
        t.send(success2)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{augmented, crc32_ieee, decode, response, SHA256, SHA384};
    use crate::config::DhchapSecret;
    use base64::Engine;

    fn secret(hh: &str, key: &[u8]) -> DhchapSecret {
        let mut raw = key.to_vec();
        raw.extend(crc32_ieee(key).to_le_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        DhchapSecret::new("dhchap_secret", &format!("DHHC-1:{hh}:{b64}:")).unwrap()
    }

    #[test]
    fn secrets_decode_and_bad_ones_are_named_without_the_key() {
        assert_eq!(crc32_ieee(b"123456789"), 0xcbf4_3926, "the standard CRC-32 check value");
        let s = decode(&secret("01", &[7u8; 32])).unwrap();
        assert_eq!((s.key.len(), s.transform), (32, SHA256));
        assert!(!format!("{s:?}").contains('7'));
        let mut bad = secret("00", &[7u8; 32]).expose().to_owned();
        bad.replace_range(10..11, if &bad[10..11] == "A" { "B" } else { "A" });
        let e = decode(&DhchapSecret::new("k", &bad).unwrap()).unwrap_err();
        assert!(e.contains("CRC") || e.contains("base64"), "{e}");
        assert!(decode(&secret("00", &[1u8; 20])).unwrap_err().contains("expected 32, 48 or 64"));
    }

    #[test]
    fn a_challenge_is_augmented_with_the_hash_of_the_session_key() {
        // HMAC(H(key), C), computed independently (Python's hashlib and hmac).
        let key: Vec<u8> = (0..=255).collect();
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(augmented(SHA256, &key, &[0x5a; 32]).unwrap()),
            "9a50ac6d849ee8034f34d2086ad4f8f5cf7e814a469b6e1aa7bd067b0aadf1f5"
        );
        assert_eq!(
            hex(augmented(SHA384, &key, &[0x5a; 48]).unwrap()),
            "be24598ae49ee21604b6196cc285b04d630278e45dc51423ea2470057d8d3b20aef3a9f3a895eddd1215ada9d9ad05cc"
        );
    }

    #[test]
    fn the_response_covers_every_field_the_specification_names() {
        let base = response(SHA256, &[1; 32], &[2; 32], 5, 9, b"HostHost", "nqn.h", "nqn.s").unwrap();
        assert_eq!(base.len(), 32);
        assert_ne!(base, response(SHA256, &[1; 32], &[2; 32], 6, 9, b"HostHost", "nqn.h", "nqn.s").unwrap());
        assert_ne!(base, response(SHA256, &[1; 32], &[2; 32], 5, 8, b"HostHost", "nqn.h", "nqn.s").unwrap());
        assert_ne!(base, response(SHA256, &[1; 32], &[2; 32], 5, 9, b"HostHost", "nqn.s", "nqn.h").unwrap());
    }
}
