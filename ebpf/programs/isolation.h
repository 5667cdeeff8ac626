/* Shared layout of Stackpad's isolation maps. Mirrored by `ebpf/src/maps.rs`: change both. */
#ifndef STACKPAD_ISOLATION_H
#define STACKPAD_ISOLATION_H

#include <linux/types.h>

#define MAX_ENDPOINTS 65536
#define MAX_IFACES 16384
#define MAX_PAIRS 65536
#define MAX_DENY_CIDRS 1024
#define MAX_FLOWS 262144

/* Roles of an endpoint (bit set). */
#define ROLE_WEB 1   /* a `web` service: the proxy may reach it on its service port */
#define ROLE_PROXY 2 /* the ingress proxy */
#define ROLE_NODE 4  /* the node agent (health checks): may reach any service on its port */

/* Verdicts of `decide`: 0 allows, anything else is a drop reason (index into drops_*). */
#define ALLOW 0
#define DROP_SPOOF 1      /* source address is not the container's own */
#define DROP_DENY_CIDR 2  /* destination in the deny list (metadata, host addresses) */
#define DROP_POLICY 3     /* identities not allowed to talk */
#define DROP_UNKNOWN 4    /* interface attached but not configured */
#define DROP_NOT_IPV4 5   /* IPv6 or other non-IPv4, non-ARP traffic */
#define DROP_MALFORMED 6  /* truncated headers */
#define DROP_REASONS 7
/* Internal verdict of `decide`: allowed between equal identities, so a reply is allowed by
 * policy too and the flow need not be remembered. Never leaves the program. */
#define ALLOW_SYMMETRIC 100

/* The deny-list value: longest prefix wins, so an allow /32 can punch a hole in a denied /16. */
#define CIDR_ALLOW 0
#define CIDR_DENY 1

/* sp_endpoints: IPv4 (network order) -> identity and role. Also holds endpoints that are not
 * local containers (the proxy, containers on other nodes). */
struct endpoint {
	__u64 identity;     /* hash of (project, environment); never 0 */
	__u16 service_port; /* host order; 0 = no service port */
	__u8 roles;
	__u8 pad[5];
};

/* sp_ifaces: host-side veth ifindex -> the container's IPv4 (network order) and a copy of its
 * sp_endpoints entry, so each program looks up only the other side of a packet. */
struct iface {
	__u32 ip;
	__u32 slot; /* index into sp_counters, chosen by the loader */
	struct endpoint self;
};

/* sp_pairs: explicit allow rules between identities; port 0 + proto 0 = any. */
struct pair_key {
	__u64 src;
	__u64 dst;
	__u16 port;
	__u8 proto;
	__u8 pad[5];
};

/* sp_flows (LRU): the original direction of an allowed flow, written when it starts. */
struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr;
};

/* sp_counters (per-CPU array, indexed by iface.slot): one per attached veth. "out" leaves the container, "in" enters
 * it. Bytes count whole frames (skb->len), like the interface's own statistics. */
struct counters {
	__u64 out_bytes;
	__u64 out_packets;
	__u64 in_bytes;
	__u64 in_packets;
	__u64 drops_out[DROP_REASONS];
	__u64 drops_in[DROP_REASONS];
};

#endif
