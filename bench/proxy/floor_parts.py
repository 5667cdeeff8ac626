#!/usr/bin/env python3
"""Splits a proxy's CPU per request into parts from its folded stacks (bench/proxy/flamegraph.py's
.folded output of a perf record with call graphs), each sample counted once:
- a sample in the kernel goes to the first kernel part found anywhere in its stack (waking the
  peer that the data was sent to, epoll_wait, recvfrom, send, getpeername/getsockopt, other);
- a sample in user space goes to the part of the nearest frame from the leaf that names one
  (allocator, memcpy, TLS, the upstream pool, h1 parsing and serialisation, http::HeaderMap, tokio's
  channels, I/O driver and scheduler, nginx's own code, the rest of Pingora's proxy).

usage: floor_parts.py FOLDED FREQ REQUESTS_PER_S SECS
(us per request = samples / FREQ / (REQUESTS_PER_S * SECS); cpu-clock samples only count while
the process runs, so this is its CPU per request.)
"""

import collections
import re
import sys

KERNEL = [
    ("kernel: wake the peer (sock_def_readable)", r"sock_def_readable"),
    ("kernel: epoll_wait", r"__x64_sys_epoll_wait|do_epoll_wait"),
    ("kernel: recvfrom", r"__x64_sys_recvfrom|__sys_recvfrom"),
    ("kernel: sendto/writev (the rest)", r"__x64_sys_sendto|__sys_sendto|do_writev|__x64_sys_writev|vfs_writev|tcp_sendmsg"),
    ("kernel: getpeername/getsockopt", r"getpeername|getsockopt"),
]
USER = [
    ("allocator", r"^mi_|^_mi_|malloc|^free$|cfree|^__rust_alloc|^__rust_dealloc|_int_free"),
    ("memcpy/memset (moves of futures and sessions)", r"memcpy|memmove|memset"),
    ("TLS (rustls and ring; OpenSSL)", r"rustls|ring_core|^ring::|<ring::|aws_lc|libssl|libcrypto|^SSL_|^ssl3_|^tls13_|^EVP_|^aes|gcm|^ngx_ssl"),
    ("upstream pool (checkout, return, idle task)", r"pingora_pool|TransportConnector|test_reusable|release_http_session|reused_http_session|get_http_session|idle_poll"),
    ("downstream request read + parse", r"v1::server::HttpSession::read_request|parse_req"),
    ("response to downstream (serialise + send)", r"v1::server::HttpSession::(write_response|write_body|response_duplex|write_resp|finish|prepare_response_header)|header_to_h1_wire|http_resp_header_to_buf"),
    ("request to upstream (serialise + send)", r"v1::client::HttpSession::write_request|http_req_header_to_wire"),
    ("upstream response read + parse", r"v1::client::HttpSession::(read_resp|read_response|read_body|do_read_body)|parse_resp"),
    ("http::HeaderMap (hash, insert, clone)", r"http::header|HeaderMap|CaseHeaderName|case_header"),
    ("h2 crate (frames, HPACK, streams, flow control)", r"^h2::|<h2::|h2::proto|h2::codec|h2::hpack"),
    ("tokio channels (two mpsc per request)", r"tokio::sync::"),
    ("tokio I/O driver", r"tokio::runtime::io|mio::"),
    ("tokio scheduler (poll, wake, park)", r"tokio::runtime::(scheduler|task|context|park)|tokio::task"),
    ("nginx (its own code)", r"^ngx_|\[nginx\]"),
    ("pingora proxy state machines (the rest)", r"pingora"),
    ("libc (send/recv wrappers, clock)", r"__libc|__vdso|epoll_wait$|^__GI_|libc"),
]
IN_KERNEL = re.compile(r"\[kernel\]|^entry_SYSCALL|^asm_")


def main():
    folded, freq, rps, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    kernel = [(n, re.compile(p)) for n, p in KERNEL]
    user = [(n, re.compile(p)) for n, p in USER]
    parts = collections.Counter()
    total = 0
    for line in open(folded):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        total += n
        frames = stack.split(";")
        if IN_KERNEL.search(frames[-1]):
            name = next((k for k, rx in kernel if any(rx.search(f) for f in frames)), "kernel: other")
        else:
            name = "other"
            for f in reversed(frames):
                hit = next((k for k, rx in user if rx.search(f)), None)
                if hit:
                    name = hit
                    break
        parts[name] += n
    us_per_sample = 1e6 / freq / max(rps * secs, 1)
    print(f"CPU per request by part ({total} samples, {total * us_per_sample:.1f} us per request):")
    for name in [k for k, _ in KERNEL] + ["kernel: other"] + [k for k, _ in USER] + ["other"]:
        if parts[name]:
            print(f"  {name:<48} {100 * parts[name] / total:6.2f}%  {parts[name] * us_per_sample:6.2f} us")


if __name__ == "__main__":
    main()
