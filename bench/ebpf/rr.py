"""UDP request/response latency: `rr.py server IP PORT` echoes; `rr.py client IP PORT N`
prints the median and p99 round trip in microseconds over N exchanges."""
import socket
import sys
import time

mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "server":
    s.bind((ip, port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
else:
    n = int(sys.argv[4])
    s.settimeout(1.0)
    rtts = []
    for i in range(n + 100):
        t0 = time.perf_counter_ns()
        s.sendto(b"x" * 64, (ip, port))
        s.recvfrom(2048)
        if i >= 100:  # warm-up
            rtts.append(time.perf_counter_ns() - t0)
    rtts.sort()
    print(f"{rtts[len(rtts) // 2] / 1000:.1f} {rtts[int(len(rtts) * 0.99)] / 1000:.1f}")
