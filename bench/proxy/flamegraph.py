#!/usr/bin/env python3
"""Folds `perf script` output into stacks and draws them as a flame graph (SVG), with a summary
of the hottest frames split by who owns them (ours, Pingora, tokio, TLS, allocator, kernel...).

usage: perf script | flamegraph.py OUT.svg [TITLE]   (summary on stdout, OUT.folded beside OUT.svg)
       flamegraph.py --diff FREQ A.folded A_REQUESTS B.folded B_REQUESTS
           two profiles of the same load in CPU microseconds per request (samples taken at FREQ
           per second, A_REQUESTS/B_REQUESTS served while sampled): B's cost above A's by owner,
           by frame (self time), by our functions (inclusive) and the allocator's by caller.
"""

import collections
import html
import re
import sys

# Who owns a frame, by its symbol; the first match wins.
OWNERS = [
    # The proxy's library crate is `proxy` (our impls of Pingora's traits are ours too); a
    # Pingora or tokio function generic over our types (`poll<proxy::...>`) is not.
    ("ours", re.compile(r"^<?proxy::|^<?stackpad_")),
    ("pingora", re.compile(r"pingora")),
    ("h2/http", re.compile(r"^h2::|<h2::|^http::|<http::|httparse|^hyper|<hyper")),
    ("tls", re.compile(r"rustls|ring_core|^ring::|<ring::|aws_lc")),
    ("tokio", re.compile(r"tokio|mio::")),
    ("allocator", re.compile(r"malloc|free|realloc|calloc|_int_|unlink_chunk|^mi_|^_mi_|^je_|alloc::alloc|__rust_alloc|__rust_dealloc|cfree")),
    ("kernel", re.compile(r"\[kernel|^entry_|^__x64_sys|^do_syscall|^tcp_|^__tcp|^ip_|^__ip|^sock_|^__sys|^ep_|^__schedule|^__softirq|^net_rx|^__netif|^loopback|^__dev_")),
    ("libc", re.compile(r"libc\.so|^__libc|^__GI_|^epoll_wait|^__send|^__recv|^write$|^read$|^memcpy|^memmove|^memset|^__memcpy|^__memmove|^__memset")),
]


def owner(frame):
    for name, pattern in OWNERS:
        if pattern.search(frame):
            return name
    return "other"


def clean(symbol):
    symbol = re.sub(r"\+0x[0-9a-f]+$", "", symbol)
    symbol = re.sub(r"::h[0-9a-f]{16}$", "", symbol)
    return symbol.replace(";", ":")


def fold(lines):
    """perf script (with call graphs) -> Counter of 'root;...;leaf' stacks."""
    stacks = collections.Counter()
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                stacks[";".join(reversed(frames))] += 1
                frames = []
            continue
        if line[0] not in " \t":
            continue  # the sample's header line (comm, pid, time, event)
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        symbol, dso = parts[1], ""
        m = re.match(r"(.*) \(([^)]*)\)$", parts[1])
        if m:
            symbol, dso = m.group(1), m.group(2)
        if symbol == "[unknown]":
            symbol = f"[{dso.rsplit('/', 1)[-1] or 'unknown'}]"
        if "kernel.kallsyms" in dso and not symbol.startswith("["):
            symbol = f"{symbol} [kernel]"
        frames.append(clean(symbol))
    if frames:
        stacks[";".join(reversed(frames))] += 1
    return stacks


COLOURS = {
    "ours": (230, 90, 60), "pingora": (240, 170, 50), "h2/http": (220, 200, 80),
    "tls": (120, 180, 80), "tokio": (90, 160, 220), "allocator": (200, 110, 200),
    "kernel": (160, 160, 160), "libc": (130, 200, 200), "other": (210, 210, 150),
}


def svg(stacks, title, width=1600, row=16):
    tree = {"n": 0, "c": {}}
    for stack, count in stacks.items():
        node = tree
        node["n"] += count
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += count
    total = max(tree["n"], 1)

    def depth(node):
        return 1 + max((depth(c) for c in node["c"].values()), default=0)

    height = (depth(tree) + 2) * row
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="4" y="{row - 4}">{html.escape(title)} ({total} samples; colour = owner: '
        + ", ".join(f"{k}" for k in COLOURS)
        + ")</text>",
    ]

    def draw(name, node, x, level):
        w = node["n"] / total * width
        if w < 0.3:
            return
        y = height - (level + 1) * row
        r, g, b = COLOURS[owner(name)]
        label = html.escape(name)
        share = 100 * node["n"] / total
        out.append(
            f'<g><title>{label} ({node["n"]} samples, {share:.2f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="rgb({r},{g},{b})"/>'
        )
        chars = int(w / 7)
        if chars > 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + row - 4}">{html.escape(text)}</text>')
        out.append("</g>")
        for child_name, child in sorted(node["c"].items()):
            draw(child_name, child, x, level + 1)
            x += child["n"] / total * width

    x = 0.0
    for name, child in sorted(tree["c"].items()):
        draw(name, child, x, 0)
        x += child["n"] / total * width
    out.append("</svg>")
    return "\n".join(out)


def summary(stacks, top=25):
    total = max(sum(stacks.values()), 1)
    leaf = collections.Counter()
    by_owner = collections.Counter()
    inclusive = collections.Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        leaf[frames[-1]] += count
        by_owner[owner(frames[-1])] += count
        for frame in set(frames):
            if owner(frame) == "ours":
                inclusive[frame] += count
    print(f"{total} samples")
    print("self time by owner of the frame:")
    for name, count in by_owner.most_common():
        print(f"  {100 * count / total:6.2f}%  {name}")
    print(f"top {top} frames by self time:")
    for frame, count in leaf.most_common(top):
        print(f"  {100 * count / total:6.2f}%  [{owner(frame)}] {frame[:150]}")
    print("our functions by time spent in them and below:")
    for frame, count in inclusive.most_common(15):
        print(f"  {100 * count / total:6.2f}%  {frame[:150]}")


def read_folded(path):
    stacks = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            stacks[stack] += int(count)
    return stacks


def allocator_callers(stacks):
    """Allocator self time by the first frame above the allocator's own (who allocates)."""
    callers = collections.Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        if owner(frames[-1]) != "allocator":
            continue
        caller = next((f for f in reversed(frames) if owner(f) != "allocator"), "?")
        callers[caller] += count
    return callers


def diff(freq, a_path, a_requests, b_path, b_requests, top=30):
    a, b = read_folded(a_path), read_folded(b_path)

    def us(count, requests):
        return count / freq / max(requests, 1) * 1e6

    def table(title, ca, cb, n, only_b=False, tag=True):
        print(title)
        print(f"  {'A us/req':>9} {'B us/req':>9} {'B-A':>7}  frame")
        names = set(cb) if only_b else set(ca) | set(cb)
        rows = sorted(names, key=lambda k: us(cb[k], b_requests) - us(ca[k], a_requests), reverse=True)
        for name in rows[:n]:
            ua, ub = us(ca[name], a_requests), us(cb[name], b_requests)
            label = f"[{owner(name)}] {name[:140]}" if tag else name
            print(f"  {ua:9.2f} {ub:9.2f} {ub - ua:+7.2f}  {label}")

    ta, tb = sum(a.values()), sum(b.values())
    print(f"A: {a_path}: {ta} samples, {a_requests} requests, {us(ta, a_requests):.2f} us CPU per request")
    print(f"B: {b_path}: {tb} samples, {b_requests} requests, {us(tb, b_requests):.2f} us CPU per request")
    print(f"B above A: {us(tb, b_requests) - us(ta, a_requests):+.2f} us per request")
    print()

    def self_by(stacks, key):
        out = collections.Counter()
        for stack, count in stacks.items():
            out[key(stack.split(";")[-1])] += count
        return out

    table("self time by owner:", self_by(a, owner), self_by(b, owner), 20, tag=False)
    print()
    table(f"top {top} frames by self time, largest B-A first:", self_by(a, str), self_by(b, str), top)
    print()

    def inclusive_ours(stacks):
        out = collections.Counter()
        for stack, count in stacks.items():
            for frame in set(stack.split(";")):
                if owner(frame) == "ours":
                    out[frame] += count
        return out

    table("our functions, time in them and below (B only):", collections.Counter(), inclusive_ours(b), 25, True)
    print()
    table("allocator self time by caller:", allocator_callers(a), allocator_callers(b), 20)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--diff":
        if len(sys.argv) != 7:
            sys.exit(__doc__)
        freq, a, a_requests, b, b_requests = sys.argv[2:]
        diff(float(freq), a, int(a_requests), b, int(b_requests))
        return
    out = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else "stackpad-proxy"
    stacks = fold(sys.stdin)
    if not stacks:
        sys.exit("flamegraph.py: no samples with call graphs in the input (perf record -g?)")
    folded = re.sub(r"\.svg$", "", out) + ".folded"
    with open(folded, "w") as f:
        for stack, count in stacks.most_common():
            f.write(f"{stack} {count}\n")
    with open(out, "w") as f:
        f.write(svg(stacks, title))
    summary(stacks)


if __name__ == "__main__":
    main()
