//! Finite-field Diffie-Hellman in the RFC 7919 groups (ffdhe2048 to
//! ffdhe8192, generator 2), as DH-HMAC-CHAP uses them (NVMe base
//! specification, "DH-HMAC-CHAP protocol"; the kernel's
//! `drivers/nvme/common/auth.c` through its `ffdheXXXX(dh)` KPP): the host
//! picks a private exponent, sends g^x mod p, and both sides derive the
//! session key (g^y)^x mod p, which augments each challenge.
//!
//! The arithmetic is a small Montgomery modular exponentiation over 64-bit
//! limbs: the only big-number operation DH needs, with no dependency.

/// A DH group the controller may pick in its Challenge (DH group ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// DH group identifier (1: ffdhe2048 … 5: ffdhe8192).
    pub id: u8,
    /// Prime size in bits.
    pub bits: usize,
    prime: &'static str,
    /// Private exponent size in bits: twice the group's security strength
    /// (NIST SP 800-56A, as the kernel's `dh_safe_prime_gen_privkey` does).
    private_bits: usize,
}

impl Group {
    /// The group of DH group identifier `id` (0, the NULL group, is none).
    #[must_use]
    pub fn by_id(id: u8) -> Option<Self> {
        let (bits, prime, private_bits) = match id {
            1 => (2048, FFDHE2048, 224),
            2 => (3072, FFDHE3072, 256),
            3 => (4096, FFDHE4096, 304),
            4 => (6144, FFDHE6144, 352),
            5 => (8192, FFDHE8192, 400),
            _ => return None,
        };
        Some(Self { id, bits, prime, private_bits })
    }

    /// Size of a public value and of the shared secret, in bytes.
    #[must_use]
    pub fn value_len(&self) -> usize {
        self.bits / 8
    }

    fn modulus(&self) -> Vec<u64> {
        from_hex(self.prime)
    }

    /// The public value g^x mod p of `private` (big-endian), `len()` bytes.
    #[must_use]
    pub fn public(&self, private: &[u8]) -> Vec<u8> {
        let p = self.modulus();
        let mut g = vec![0u64; p.len()];
        g[0] = 2;
        to_bytes(&Montgomery::new(p).pow(&g, &from_bytes(private)), self.value_len())
    }

    /// The shared secret (peer)^x mod p, `len()` bytes, after checking the
    /// peer's value is in range (1 < y < p - 1, RFC 7919 section 5.1).
    ///
    /// # Errors
    /// The peer's value is malformed or out of range.
    pub fn shared(&self, private: &[u8], peer: &[u8]) -> Result<Vec<u8>, String> {
        if peer.len() != self.value_len() {
            return Err(format!("a DH value of {} bytes in a {}-bit group", peer.len(), self.bits));
        }
        let p = self.modulus();
        let y = from_bytes(peer);
        let mut p_minus_1 = p.clone();
        p_minus_1[0] -= 1; // p is odd
        let mut two = vec![0u64; p.len()];
        two[0] = 2;
        if compare(&pad(&y, p.len()), &two) == std::cmp::Ordering::Less
            || compare(&pad(&y, p.len()), &p_minus_1) != std::cmp::Ordering::Less
        {
            return Err("the controller's DH value is out of range".into());
        }
        Ok(to_bytes(&Montgomery::new(p).pow(&pad(&y, self.bits / 64), &from_bytes(private)), self.value_len()))
    }

    /// Bytes of a private exponent.
    #[must_use]
    pub fn private_len(&self) -> usize {
        self.private_bits / 8
    }
}

/// Little-endian limbs of a big-endian hex text.
fn from_hex(hex: &str) -> Vec<u64> {
    let digits: Vec<u8> = hex.bytes().collect();
    digits
        .rchunks(16)
        .map(|chunk| u64::from_str_radix(std::str::from_utf8(chunk).unwrap_or("0"), 16).unwrap_or(0))
        .collect()
}

/// Little-endian limbs of big-endian bytes.
fn from_bytes(bytes: &[u8]) -> Vec<u64> {
    bytes
        .rchunks(8)
        .map(|chunk| {
            let mut limb = [0u8; 8];
            limb[8 - chunk.len()..].copy_from_slice(chunk);
            u64::from_be_bytes(limb)
        })
        .collect()
}

/// Big-endian bytes of `limbs`, exactly `len` long (the value fits).
fn to_bytes(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    if out.len() > len {
        out.drain(..out.len() - len);
    } else {
        let mut padded = vec![0u8; len - out.len()];
        padded.extend(out);
        out = padded;
    }
    out
}

fn pad(limbs: &[u64], len: usize) -> Vec<u64> {
    let mut out = limbs.to_vec();
    out.resize(len.max(limbs.len()), 0);
    out
}

/// Compares equal-length little-endian numbers.
fn compare(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// `a -= b` over equal lengths; returns the borrow.
fn subtract(a: &mut [u64], b: &[u64]) -> bool {
    let mut borrow = false;
    for (x, y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(*y);
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
    borrow
}

/// Arithmetic modulo an odd `n` in Montgomery form (R = 2^(64·limbs)).
struct Montgomery {
    n: Vec<u64>,
    /// -n^-1 mod 2^64.
    n_prime: u64,
    /// R^2 mod n.
    r2: Vec<u64>,
}

impl Montgomery {
    fn new(n: Vec<u64>) -> Self {
        // Newton's iteration for n[0]^-1 mod 2^64 (n is odd).
        let mut inverse: u64 = 1;
        for _ in 0..6 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(n[0].wrapping_mul(inverse)));
        }
        let k = n.len();
        // R mod n, doubled 64·k times: R^2 mod n.
        let mut r = vec![0u64; k];
        subtract(&mut r, &n); // 2^(64k) - n = R mod n, as n > R/2
        for _ in 0..64 * k {
            let carry = r[k - 1] >> 63 == 1;
            for i in (1..k).rev() {
                r[i] = r[i] << 1 | r[i - 1] >> 63;
            }
            r[0] <<= 1;
            if carry || compare(&r, &n) != std::cmp::Ordering::Less {
                subtract(&mut r, &n);
            }
        }
        Self { n, n_prime: inverse.wrapping_neg(), r2: r }
    }

    /// a·b·R^-1 mod n (CIOS), for a, b < n.
    #[allow(clippy::cast_possible_truncation)] // the low limb of a double-limb sum, by design
    fn mul(&self, a: &[u64], b: &[u64]) -> Vec<u64> {
        let k = self.n.len();
        let mut t = vec![0u64; k + 2];
        for &ai in a.iter().take(k) {
            let mut carry = 0u128;
            for j in 0..k {
                let s = u128::from(t[j]) + u128::from(ai) * u128::from(b[j]) + carry;
                t[j] = s as u64;
                carry = s >> 64;
            }
            let s = u128::from(t[k]) + carry;
            t[k] = s as u64;
            t[k + 1] = (s >> 64) as u64;
            let m = t[0].wrapping_mul(self.n_prime);
            let s = u128::from(t[0]) + u128::from(m) * u128::from(self.n[0]);
            let mut carry = s >> 64;
            for j in 1..k {
                let s = u128::from(t[j]) + u128::from(m) * u128::from(self.n[j]) + carry;
                t[j - 1] = s as u64;
                carry = s >> 64;
            }
            let s = u128::from(t[k]) + carry;
            t[k - 1] = s as u64;
            t[k] = t[k + 1] + (s >> 64) as u64;
            t[k + 1] = 0;
        }
        let mut out = t[..k].to_vec();
        if t[k] != 0 || compare(&out, &self.n) != std::cmp::Ordering::Less {
            subtract(&mut out, &self.n);
        }
        out
    }

    /// base^exp mod n, base < n.
    fn pow(&self, base: &[u64], exp: &[u64]) -> Vec<u64> {
        let k = self.n.len();
        let base = self.mul(&pad(base, k), &self.r2);
        let mut one = vec![0u64; k];
        one[0] = 1;
        let mut x = self.mul(&one, &self.r2);
        for limb in exp.iter().rev() {
            for bit in (0..64).rev() {
                x = self.mul(&x, &x);
                if limb >> bit & 1 == 1 {
                    x = self.mul(&x, &base);
                }
            }
        }
        self.mul(&x, &one)
    }
}

/// RFC 7919 ffdhe2048 prime (appendix A).
const FFDHE2048: &str = concat!(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695a9e13641146433fbcc939dce249b3ef9",
    "7d2fe363630c75d8f681b202aec4617ad3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935",
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797abc0ab182b324fb61d108a94bb2c8e3fb",
    "b96adab760d7f4681d4f42a3de394df4ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61",
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005c58ef1837d1683b2c6f34a26c1b2effa",
    "886b423861285c97ffffffffffffffff",
);

/// RFC 7919 ffdhe3072 prime (appendix A).
const FFDHE3072: &str = concat!(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695a9e13641146433fbcc939dce249b3ef9",
    "7d2fe363630c75d8f681b202aec4617ad3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935",
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797abc0ab182b324fb61d108a94bb2c8e3fb",
    "b96adab760d7f4681d4f42a3de394df4ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61",
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005c58ef1837d1683b2c6f34a26c1b2effa",
    "886b4238611fcfdcde355b3b6519035bbc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c",
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff5cae82ab9c9df69ee86d2bc522363a0d",
    "abc521979b0deada1dbf9a42d5c4484e0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b66c62e37ffffffffffffffff",
);

/// RFC 7919 ffdhe4096 prime (appendix A).
const FFDHE4096: &str = concat!(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695a9e13641146433fbcc939dce249b3ef9",
    "7d2fe363630c75d8f681b202aec4617ad3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935",
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797abc0ab182b324fb61d108a94bb2c8e3fb",
    "b96adab760d7f4681d4f42a3de394df4ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61",
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005c58ef1837d1683b2c6f34a26c1b2effa",
    "886b4238611fcfdcde355b3b6519035bbc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c",
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff5cae82ab9c9df69ee86d2bc522363a0d",
    "abc521979b0deada1dbf9a42d5c4484e0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b669e1ef16e6f52c3164df4fb",
    "7930e9e4e58857b6ac7d5f42d69f6d187763cf1d5503400487f55ba57e31cc7a7135c886efb4318aed6a1e012d9e6832",
    "a907600a918130c46dc778f971ad0038092999a333cb8b7a1a1db93d7140003c2a4ecea9f98d0acc0a8291cdcec97dcf",
    "8ec9b55a7f88a46b4db5a851f44182e1c68a007e5e655f6affffffffffffffff",
);

/// RFC 7919 ffdhe6144 prime (appendix A).
const FFDHE6144: &str = concat!(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695a9e13641146433fbcc939dce249b3ef9",
    "7d2fe363630c75d8f681b202aec4617ad3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935",
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797abc0ab182b324fb61d108a94bb2c8e3fb",
    "b96adab760d7f4681d4f42a3de394df4ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61",
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005c58ef1837d1683b2c6f34a26c1b2effa",
    "886b4238611fcfdcde355b3b6519035bbc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c",
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff5cae82ab9c9df69ee86d2bc522363a0d",
    "abc521979b0deada1dbf9a42d5c4484e0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b669e1ef16e6f52c3164df4fb",
    "7930e9e4e58857b6ac7d5f42d69f6d187763cf1d5503400487f55ba57e31cc7a7135c886efb4318aed6a1e012d9e6832",
    "a907600a918130c46dc778f971ad0038092999a333cb8b7a1a1db93d7140003c2a4ecea9f98d0acc0a8291cdcec97dcf",
    "8ec9b55a7f88a46b4db5a851f44182e1c68a007e5e0dd9020bfd64b645036c7a4e677d2c38532a3a23ba4442caf53ea6",
    "3bb454329b7624c8917bdd64b1c0fd4cb38e8c334c701c3acdad0657fccfec719b1f5c3e4e46041f388147fb4cfdb477",
    "a52471f7a9a96910b855322edb6340d8a00ef092350511e30abec1fff9e3a26e7fb29f8c183023c3587e38da0077d9b4",
    "763e4e4b94b2bbc194c6651e77caf992eeaac0232a281bf6b3a739c1226116820ae8db5847a67cbef9c9091b462d538c",
    "d72b03746ae77f5e62292c311562a846505dc82db854338ae49f5235c95b91178ccf2dd5cacef403ec9d1810c6272b04",
    "5b3b71f9dc6b80d63fdd4a8e9adb1e6962a69526d43161c1a41d570d7938dad4a40e329cd0e40e65ffffffffffffffff",
);

/// RFC 7919 ffdhe8192 prime (appendix A).
const FFDHE8192: &str = concat!(
    "ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695a9e13641146433fbcc939dce249b3ef9",
    "7d2fe363630c75d8f681b202aec4617ad3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935",
    "984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797abc0ab182b324fb61d108a94bb2c8e3fb",
    "b96adab760d7f4681d4f42a3de394df4ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61",
    "9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005c58ef1837d1683b2c6f34a26c1b2effa",
    "886b4238611fcfdcde355b3b6519035bbc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91c",
    "aefe130985139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff5cae82ab9c9df69ee86d2bc522363a0d",
    "abc521979b0deada1dbf9a42d5c4484e0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b669e1ef16e6f52c3164df4fb",
    "7930e9e4e58857b6ac7d5f42d69f6d187763cf1d5503400487f55ba57e31cc7a7135c886efb4318aed6a1e012d9e6832",
    "a907600a918130c46dc778f971ad0038092999a333cb8b7a1a1db93d7140003c2a4ecea9f98d0acc0a8291cdcec97dcf",
    "8ec9b55a7f88a46b4db5a851f44182e1c68a007e5e0dd9020bfd64b645036c7a4e677d2c38532a3a23ba4442caf53ea6",
    "3bb454329b7624c8917bdd64b1c0fd4cb38e8c334c701c3acdad0657fccfec719b1f5c3e4e46041f388147fb4cfdb477",
    "a52471f7a9a96910b855322edb6340d8a00ef092350511e30abec1fff9e3a26e7fb29f8c183023c3587e38da0077d9b4",
    "763e4e4b94b2bbc194c6651e77caf992eeaac0232a281bf6b3a739c1226116820ae8db5847a67cbef9c9091b462d538c",
    "d72b03746ae77f5e62292c311562a846505dc82db854338ae49f5235c95b91178ccf2dd5cacef403ec9d1810c6272b04",
    "5b3b71f9dc6b80d63fdd4a8e9adb1e6962a69526d43161c1a41d570d7938dad4a40e329ccff46aaa36ad004cf600c838",
    "1e425a31d951ae64fdb23fcec9509d43687feb69edd1cc5e0b8cc3bdf64b10ef86b63142a3ab8829555b2f747c932665",
    "cb2c0f1cc01bd70229388839d2af05e454504ac78b7582822846c0ba35c35f5c59160cc046fd8251541fc68c9c86b022",
    "bb7099876a460e7451a8a93109703fee1c217e6c3826e52c51aa691e0e423cfc99e9e31650c1217b624816cdad9a95f9",
    "d5b8019488d9c0a0a1fe3075a577e23183f81d4a3f2fa4571efc8ce0ba8a4fe8b6855dfe72b0a66eded2fbabfbe58a30",
    "fafabe1c5d71a87e2f741ef8c1fe86fea6bbfde530677f0d97d11d49f7a8443d0822e506a9f4614e011e2a94838ff88c",
    "d68c8bb7c5c6424cffffffffffffffff",
);

#[cfg(test)]
mod tests;
