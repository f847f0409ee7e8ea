//! Known vectors, computed independently (Python's `pow` over the primes
//! OpenSSL 3 ships as its named groups ffdhe2048 … ffdhe8192, which are
//! RFC 7919's): for each group, a fixed private exponent's public value and
//! the secret it shares with another fixed exponent's public value.

#![allow(clippy::cast_possible_truncation)] // test data bytes

use super::Group;
use sha2::{Digest, Sha256};

fn exponent(len: usize, mul: usize, add: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * mul + add) % 256) as u8).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn public_values_and_shared_secrets_match_known_vectors_in_every_group() {
    // (group, SHA-256 of g^a, SHA-256 of (g^b)^a, first bytes of g^a)
    let vectors = [
        (
            1,
            "93681f35ff4a4f03bc91a6e1bc55d9bb6a67e9a91dd6b572820d5476cc2b3eca",
            "c6b670fa47d4e51f523f9ca363931aafabcd82bd6917124fd178e849139f3a4c",
            "6ced0e83dc1169d2",
        ),
        (
            2,
            "4ca5061ebb26b2adfa9bd67e1fcba686471726abebef781117e04b18c65438a5",
            "ea13fac715679b9bbcdba3c02e5e07a7109721b59be854b667951310a77aeb0b",
            "ab2887a8f21533b9",
        ),
        (
            3,
            "3389f47b47c046289f3b12c9aeb255aab2a160741ca08c7ab43cd9790fdc0a12",
            "e47292d16fab729b4b0fe03c58518699a9d4344f872ac6b79cb3fbeff4ce6850",
            "2a240d6a0417f80f",
        ),
        (
            4,
            "d9762119f2d154bea0d0debf3a9a5aa34ec96bf320fe7d06f185af8d440dbd3b",
            "8b454276a578a6edfccbd27f4331113b63b57f9172ff1784b5a5dabb21681108",
            "74fc8b52ac9e9d3c",
        ),
        (
            5,
            "25e833f0b9b73ba2da46f773dfb9641db93a5bba942dd37aa537656fa419502b",
            "d9a239a258507448274b706caeaf6243fbdd9a07f76a268b91d7cabc022d0f22",
            "d9e29866cb2feb40",
        ),
    ];
    for (id, public_digest, shared_digest, head) in vectors {
        let group = Group::by_id(id).unwrap();
        let a = exponent(group.private_len(), 7, usize::from(id));
        let b = exponent(group.private_len(), 11, 3 * usize::from(id));
        let ga = group.public(&a);
        assert_eq!(ga.len(), group.bits / 8);
        assert_eq!(hex(&ga[..8]), head, "ffdhe{}", group.bits);
        assert_eq!(hex(&Sha256::digest(&ga)), public_digest, "ffdhe{}: g^a", group.bits);
        let gb = group.public(&b);
        let shared = group.shared(&a, &gb).unwrap();
        assert_eq!(hex(&Sha256::digest(&shared)), shared_digest, "ffdhe{}: (g^b)^a", group.bits);
        assert_eq!(group.shared(&b, &ga).unwrap(), shared, "ffdhe{}: both sides agree", group.bits);
    }
}

#[test]
fn out_of_range_or_misshapen_peer_values_are_refused() {
    let group = Group::by_id(1).unwrap();
    let private = exponent(group.private_len(), 3, 1);
    let mut one = vec![0u8; 256];
    one[255] = 1;
    assert!(group.shared(&private, &one).is_err(), "1 is refused");
    assert!(group.shared(&private, &[0xff; 256]).is_err(), "a value above p is refused");
    assert!(group.shared(&private, &[2; 255]).is_err(), "a short value is refused");
    assert!(Group::by_id(0).is_none() && Group::by_id(6).is_none());
}
