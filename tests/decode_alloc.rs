//! Decoders allocate in proportion to the bytes they were given, not to the
//! lengths those bytes claim: measured with a counting allocator (bytes
//! allocated by this thread while decoding).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchyard::wire::codec;
use switchyard::wire::messages::{AuthRequest, Credentials, RequestEnvelope};
use switchyard::wire::relay::{RelayHello, RelayRequest};

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the
// thread-local counter is a const-initialized `Cell` (no allocation, no
// re-entrance).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes this thread allocated while running `f`.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

/// A bincode varint claiming `n` (marker 0xfd, then 8 bytes).
fn huge(n: u64) -> Vec<u8> {
    let mut v = vec![0xfd];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

/// Generous room for the error message and bookkeeping; far below what
/// any claim here would cost.
const SMALL: usize = 4096;

#[test]
fn a_pre_login_auth_request_of_seven_bytes_claiming_16_mib_allocates_almost_nothing() {
    // Credentials::Password (variant 0), a username claiming 16 MiB
    // (marker 0xfc, u32 LE), then one byte of it.
    let body = [0x00, 0xfc, 0x00, 0x00, 0x00, 0x01, b'a'];
    let (result, bytes) = allocated_by(|| codec::decode::<AuthRequest>(&body));
    assert!(result.is_err());
    assert!(bytes < SMALL, "{bytes} bytes allocated for a 7-byte body");
}

#[test]
fn a_relay_hello_claiming_a_huge_token_allocates_almost_nothing() {
    // RelayHello::Client, Some(token), token length 16 MiB (within what
    // bincode's own largest limit would admit).
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&huge(16 << 20));
    let (result, bytes) = allocated_by(|| codec::decode::<RelayHello>(&body));
    assert!(result.is_err());
    assert!(
        bytes < SMALL,
        "{bytes} bytes allocated for {} bytes",
        body.len()
    );
}

#[test]
fn a_request_claiming_a_billion_devices_preallocates_nothing() {
    // RequestEnvelope { deadline: None, Request::Exec { devices: 2^30 ... } }
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&huge(1 << 30));
    body.extend_from_slice(&[0x01, b'x']);
    let (result, bytes) = allocated_by(|| codec::decode::<RequestEnvelope>(&body));
    assert!(result.is_err());
    assert!(
        bytes < SMALL,
        "{bytes} bytes allocated for {} bytes",
        body.len()
    );
}

#[test]
fn a_certificate_request_claiming_megabytes_allocates_almost_nothing() {
    // RelayRequest::IssueClientCert (variant 4), csr_der claiming 8 MiB.
    let mut body = vec![0x04];
    body.extend_from_slice(&huge(8 << 20));
    let (result, bytes) = allocated_by(|| codec::decode::<RelayRequest>(&body));
    assert!(result.is_err());
    assert!(
        bytes < SMALL,
        "{bytes} bytes allocated for {} bytes",
        body.len()
    );
}

#[test]
fn an_honest_message_still_decodes_and_the_counter_sees_its_size() {
    // The control: a 300 KB password decodes (the limit for its body
    // admits it) and costs about its size, so the counter counts.
    let request = AuthRequest {
        credentials: Credentials::Password {
            username: "alice".into(),
            password: "p".repeat(300_000),
        },
        client: "test".into(),
    };
    let body = codec::encode(&request).unwrap();
    let (decoded, bytes) = allocated_by(|| codec::decode::<AuthRequest>(&body));
    match decoded.unwrap().credentials {
        Credentials::Password { ref password, .. } => assert_eq!(password.len(), 300_000),
        _ => panic!("wrong variant"),
    }
    assert!(bytes >= 300_000, "counted {bytes}");
    assert!(
        bytes < 2 * body.len(),
        "{bytes} bytes for a {}-byte body",
        body.len()
    );
}
