//! A scripted NVMe/TCP discovery target on loopback, to exercise the
//! client's protocol handling where the kernel target cannot be made to
//! misbehave: a generation counter that moves between reads, and hostile PDUs.

#![allow(clippy::cast_possible_truncation)] // test fixture: sizes here are small and known

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use super::{read_log, DiscoveryError};
use crate::nvme::names::Portal;
use crate::nvme::options::tests::options;

/// How the fake target answers Get Log Page.
#[derive(Clone, Copy)]
enum Behaviour {
    /// The first header says generation 1, the re-read 2; later reads say 2.
    GenerationMoves,
    /// Answers the first command with a PDU claiming 4 GiB.
    HugePdu,
    /// Rejects Connect with "invalid host".
    RefuseHost,
}

fn entry(nqn: &str, addr: &str) -> Vec<u8> {
    let mut e = vec![0u8; 1024];
    e[0] = 3;
    e[1] = 1;
    e[2] = 2;
    e[32..36].copy_from_slice(b"4420");
    e[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
    e[512..512 + addr.len()].copy_from_slice(addr.as_bytes());
    e
}

fn serve(behaviour: Behaviour) -> Portal {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let portal = Portal { addr: listener.local_addr().unwrap().ip(), port: listener.local_addr().unwrap().port() };
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut icreq = [0u8; 128];
        stream.read_exact(&mut icreq).unwrap();
        let mut icresp = [0u8; 128];
        icresp[0] = 1;
        icresp[2] = 128;
        icresp[4..8].copy_from_slice(&128u32.to_le_bytes());
        stream.write_all(&icresp).unwrap();
        let mut header_reads = 0;
        loop {
            let mut head = [0u8; 8];
            if stream.read_exact(&mut head).is_err() {
                return;
            }
            let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len - 8];
            stream.read_exact(&mut body).unwrap();
            let sqe = &body[..64];
            let cid = [sqe[2], sqe[3]];
            let respond = |stream: &mut std::net::TcpStream, status: u16, dw0: u32| {
                let mut resp = vec![5u8, 0, 24, 0];
                resp.extend_from_slice(&24u32.to_le_bytes());
                let mut cqe = [0u8; 16];
                cqe[0..4].copy_from_slice(&dw0.to_le_bytes());
                cqe[12..14].copy_from_slice(&cid);
                cqe[14..16].copy_from_slice(&(status << 1).to_le_bytes());
                resp.extend_from_slice(&cqe);
                stream.write_all(&resp).unwrap();
            };
            match (behaviour, sqe[0], sqe[4]) {
                (Behaviour::HugePdu, _, _) => {
                    stream.write_all(&[5, 0, 24, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
                    return;
                }
                (Behaviour::RefuseHost, 0x7f, 0x01) => respond(&mut stream, 0x184, 0),
                (_, 0x7f, 0x04) => respond(&mut stream, 0, 1), // CSTS.RDY
                (_, 0x7f, _) => respond(&mut stream, 0, 0),
                (_, 0x02, _) => {
                    let offset = u64::from_le_bytes(sqe[48..56].try_into().unwrap()) as usize;
                    let length = u32::from_le_bytes(sqe[32..36].try_into().unwrap()) as usize;
                    let mut page = vec![0u8; 1024];
                    let generation: u64 = if header_reads >= 1 { 2 } else { 1 };
                    page[0..8].copy_from_slice(&generation.to_le_bytes());
                    page[8..16].copy_from_slice(&1u64.to_le_bytes());
                    let addr = if generation == 1 { "10.0.0.1" } else { "10.0.0.2" };
                    page.extend(entry("nqn.2024-01.io.example:array", addr));
                    if offset == 0 {
                        header_reads += 1;
                    }
                    let data = &page[offset..offset + length];
                    let mut pdu = vec![7u8, 0x04, 24, 24];
                    pdu.extend_from_slice(&(24 + length as u32).to_le_bytes());
                    pdu.extend_from_slice(&cid);
                    pdu.extend_from_slice(&[0, 0]);
                    pdu.extend_from_slice(&0u32.to_le_bytes());
                    pdu.extend_from_slice(&(length as u32).to_le_bytes());
                    pdu.extend_from_slice(&[0; 4]);
                    pdu.extend_from_slice(data);
                    stream.write_all(&pdu).unwrap();
                    respond(&mut stream, 0, 0);
                }
                _ => respond(&mut stream, 0x1, 0),
            }
        }
    });
    portal
}

#[test]
fn the_log_is_reread_while_its_generation_counter_moves() {
    let portal = serve(Behaviour::GenerationMoves);
    let entries = read_log(portal, &options().host, Duration::from_secs(5)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].traddr, "10.0.0.2", "the entry of the stable generation, not the stale one");
}

#[test]
fn a_hostile_pdu_length_is_refused_without_allocating_it() {
    let portal = serve(Behaviour::HugePdu);
    let err = read_log(portal, &options().host, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, DiscoveryError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("PDU length 4294967295 out of range"), "{err}");
}

#[test]
fn a_refused_host_is_told_to_check_the_allow_list() {
    let portal = serve(Behaviour::RefuseHost);
    let err = read_log(portal, &options().host, Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().contains("check its allow-list for our host NQN"), "{err}");
}
