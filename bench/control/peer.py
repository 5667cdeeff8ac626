#!/usr/bin/env python3
"""The peer of bench/control/run's deploy latency: the same deploy done by hand with the
lowest-level tools and no control plane. For each run: `ctr run -d` of the same busybox httpd
image with the same command (host network: no bridge, netns or address to set up), our own wait
for the container's first 200 (its health check, polled every 2 ms like the bench polls the
proxy), then one `stackpad-proxy routes switch` to the new container on the same proxy, timed to
the proxy answering with the new container's content. The previous container is removed after
the measurement (not timed), as the platform drains and stops the old version after it serves.

usage: peer.py NAMESPACE IMAGE PROXY_HTTPS_PORT ADMIN TOKEN_FILE PROXY_BIN RUNS
Prints the median and p99 and a last line `peer_median_ms=<ms>`.
"""

import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request

ns, image, https_port, admin, token_file, proxy_bin, runs = sys.argv[1:]
https_port, runs = int(https_port), int(runs)
HOST = "bench-peer.stackpad.localhost"
SERVICE = "bench-peer"

# Loopback only; the run script's certificate is self-signed.
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE


def ctr(*args, check=True):
    return subprocess.run(["ctr", "-n", ns, *args], capture_output=True, text=True, check=check)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=1) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def through_proxy():
    # SNI and Host name the route; the connection goes to the proxy on loopback.
    try:
        with socket.create_connection(("127.0.0.1", https_port), timeout=2) as raw:
            with tls.wrap_socket(raw, server_hostname=HOST) as s:
                s.sendall(f"GET /index.html HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body.decode().strip()


def wait(what, deadline, probe):
    while not probe():
        if time.monotonic() > deadline:
            sys.exit(f"peer: {what} did not happen within 60 s")
        time.sleep(0.002)


def remove(cid):
    ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    for _ in range(250):
        if ctr("task", "rm", cid, check=False).returncode == 0:
            break
        time.sleep(0.02)
    ctr("container", "rm", cid, check=False)


def admin_cli(*args):
    subprocess.run([proxy_bin, "routes", *args, "--admin", admin, "--token-file", token_file],
                   check=True, stdout=subprocess.DEVNULL)


def deploy(i):
    """One deploy by hand; returns seconds from `ctr run` to the proxy serving it."""
    cid, port = f"peer-{i}", free_port()
    started = time.monotonic()
    deadline = started + 60
    ctr("run", "-d", "--net-host", image, cid, "sh", "-c",
        f"echo {cid} > /tmp/index.html && exec httpd -f -p 127.0.0.1:{port} -h /tmp")
    wait(f"{cid} answering on 127.0.0.1:{port}", deadline, lambda: direct(port) == cid)
    admin_cli("switch", "--service", SERVICE, "--upstream", f"127.0.0.1:{port}", "--skip-health")
    wait(f"the proxy serving {cid}", deadline, lambda: through_proxy() == cid)
    return cid, time.monotonic() - started


ctr("images", "pull", "--plain-http", image, check=True)
admin_cli("set", "--id", SERVICE, "--host", HOST, "--service", SERVICE)
previous = None
times = []
try:
    # Run 0 is the warm-up (the snapshot gets unpacked), as the platform's bench warms up too.
    for i in range(runs + 1):
        cid, took = deploy(i)
        if previous:
            remove(previous)
        previous = cid
        if i > 0:
            times.append(took)
finally:
    if previous:
        remove(previous)
    subprocess.run([proxy_bin, "routes", "remove", "--id", SERVICE, "--admin", admin, "--token-file", token_file],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

times.sort()
median = statistics.median(times) * 1000
p99 = times[max(0, -(-len(times) * 99 // 100) - 1)] * 1000
print(f"peer: ctr run -d + wait for 200 + routes switch -> new version answering through the proxy, {runs} deploys:")
print(f"  median {median:.0f} ms  p99 {p99:.0f} ms")
print(f"peer_median_ms={median:.1f}")
