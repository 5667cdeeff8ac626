//! The one socket call the standard library does not offer on a raw descriptor: `shutdown(2)`
//! of an upstream socket owned by Pingora, used to end a long-lived connection at the drain
//! deadline.
#![allow(
    unsafe_code,
    reason = "shutdown(2) on a descriptor Pingora owns; see SAFETY below"
)]

use std::os::fd::RawFd;

/// Shuts both directions of `fd` down; true on success. Pingora then sees EOF on the upstream
/// side and ends the session, which closes the descriptor itself.
pub fn shutdown(fd: RawFd) -> bool {
    // SAFETY: shutdown(2) does not touch memory; it only acts on the descriptor number. The
    // caller passes a descriptor registered by a live request guard (unregistered before the
    // request's context is dropped), so it still names that request's upstream socket.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) == 0 }
}
