//! Unique ids made without a system call: request ids and the names of
//! concurrency-slot holders, made for every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// 32 hex digits: a per-process random prefix and a counter run through a
/// random odd multiplier (a bijection, so ids stay unique without asking
/// the kernel for randomness each time, and do not reveal the count). The
/// prefix keeps ids of processes sharing one Redis apart.
pub fn next() -> [u8; 32] {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (prefix, multiplier) = *KEYS.get_or_init(|| {
        let (a, b) = swarmgate_core::random::uuid().as_u64_pair();
        (a, b | 1)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let value = (u128::from(prefix) << 64) | u128::from(n.wrapping_mul(multiplier));
    let mut text = [0u8; 32];
    // Sixteen bytes are exactly thirty-two hex digits: this cannot fail.
    let _ = hex::encode_to_slice(value.to_be_bytes(), &mut text);
    text
}

/// [`next`] as a string.
pub fn next_string() -> String {
    next().iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_and_distinct() {
        let (a, b) = (super::next_string(), super::next_string());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16], "one prefix per process");
    }
}
