// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Stackpad isolation: tc classifiers on each container's host-side veth.
 *
 *   from_container: tc ingress of the host veth = every packet the container sends.
 *   to_container:   tc egress of the host veth  = every packet delivered into the container.
 *
 * Every decision is a handful of hash-map lookups (see ARCHITECTURE.md, "Isolation (ebpf)"):
 * anti-spoof (source must be the veth's endpoint address), identity of source and destination,
 * allowed pairs, the deny-CIDR trie for destinations outside the platform, and the flow table
 * for replies. Policy is re-evaluated on every packet, so a revoked pair stops at once, and a
 * reply is only allowed while its original direction still is.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "isolation.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sp_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);
	__type(value, struct iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sp_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PAIRS);
	__type(key, struct pair_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sp_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_DENY_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sp_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sp_counters SEC(".maps");

#define ETH_HLEN_ 14
#define ARP_SPA_OFF 14 /* sender protocol address inside an Ethernet/IPv4 ARP body */
#define ICMP_ECHOREPLY_ 0
#define ICMP_ECHO_ 8
#define TCP_FLAG_SYN_ 0x02
#define TCP_FLAG_ACK_ 0x10

struct pkt {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 starts_flow; /* TCP SYN, UDP, ICMP echo request */
};

enum parsed { PARSED_IPV4, PARSED_ARP, PARSED_OTHER, PARSED_BAD };

/* Makes the first `len` bytes direct-accessible; returns 0 when they are. */
static __always_inline int need(struct __sk_buff *skb, __u32 len)
{
	if ((long)skb->data + len <= (long)skb->data_end)
		return 0;
	if (skb->len < len)
		return -1;
	if (bpf_skb_pull_data(skb, len))
		return -1;
	return (long)skb->data + len <= (long)skb->data_end ? 0 : -1;
}

static __always_inline enum parsed parse(struct __sk_buff *skb, struct pkt *p, __u32 *arp_spa)
{
	if (need(skb, ETH_HLEN_))
		return PARSED_BAD;
	struct ethhdr *eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return PARSED_BAD;
	__u16 proto = eth->h_proto;

	if (proto == bpf_htons(ETH_P_ARP)) {
		if (need(skb, ETH_HLEN_ + ARP_SPA_OFF + 4))
			return PARSED_BAD;
		void *data = (void *)(long)skb->data;
		if (data + ETH_HLEN_ + ARP_SPA_OFF + 4 > (void *)(long)skb->data_end)
			return PARSED_BAD;
		*arp_spa = *(__u32 *)(data + ETH_HLEN_ + ARP_SPA_OFF);
		return PARSED_ARP;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return PARSED_OTHER;

	if (need(skb, ETH_HLEN_ + sizeof(struct iphdr)))
		return PARSED_BAD;
	struct iphdr *ip = (void *)(long)skb->data + ETH_HLEN_;
	if ((void *)(ip + 1) > (void *)(long)skb->data_end)
		return PARSED_BAD;
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(struct iphdr))
		return PARSED_BAD;
	p->src = ip->saddr;
	p->dst = ip->daddr;
	p->proto = ip->protocol;
	p->sport = 0;
	p->dport = 0;
	p->starts_flow = 0;
	/* Later fragments carry no ports: they are judged on addresses with port 0. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return PARSED_IPV4;

	__u32 l4 = ETH_HLEN_ + ihl;
	if (l4 > ETH_HLEN_ + 60)
		return PARSED_BAD;
	if (p->proto == IPPROTO_TCP) {
		if (need(skb, l4 + 14))
			return PARSED_BAD;
	} else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_ICMP) {
		if (need(skb, l4 + 8))
			return PARSED_BAD;
	} else {
		return PARSED_IPV4;
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *l4p = data + l4;
	if ((void *)(l4p + 8) > end)
		return PARSED_BAD;
	if (p->proto == IPPROTO_ICMP) {
		__u8 type = l4p[0];
		__u16 id = *(__u16 *)(l4p + 4);
		if (type == ICMP_ECHO_) {
			p->sport = id;
			p->starts_flow = 1;
		} else if (type == ICMP_ECHOREPLY_) {
			p->dport = id;
		}
		return PARSED_IPV4;
	}
	p->sport = *(__u16 *)l4p;
	p->dport = *(__u16 *)(l4p + 2);
	if (p->proto == IPPROTO_UDP) {
		p->starts_flow = 1;
	} else if ((void *)(l4p + 14) <= end) {
		__u8 flags = l4p[13];
		p->starts_flow = (flags & TCP_FLAG_SYN_) && !(flags & TCP_FLAG_ACK_);
	}
	return PARSED_IPV4;
}

/* ALLOW_SYMMETRIC, ALLOW or DROP_POLICY. */
static __always_inline int pair_verdict(const struct endpoint *s, const struct endpoint *d,
					__u8 proto, __u16 dport_net)
{
	if (s->identity == d->identity)
		return ALLOW_SYMMETRIC;
	__u16 dport = bpf_ntohs(dport_net);
	if (proto == IPPROTO_TCP && d->service_port && d->service_port == dport) {
		if ((s->roles & ROLE_PROXY) && (d->roles & ROLE_WEB))
			return ALLOW;
		if (s->roles & ROLE_NODE)
			return ALLOW;
	}
	struct pair_key k = {};
	k.src = s->identity;
	k.dst = d->identity;
	k.port = dport;
	k.proto = proto;
	if (bpf_map_lookup_elem(&sp_pairs, &k))
		return ALLOW;
	k.port = 0;
	k.proto = 0;
	return bpf_map_lookup_elem(&sp_pairs, &k) ? ALLOW : DROP_POLICY;
}

static __always_inline int decide_to_world(__u32 dst)
{
	struct lpm_v4_key lk = {.prefixlen = 32, .addr = dst};
	__u8 *v = bpf_map_lookup_elem(&sp_deny, &lk);
	if (v && *v == CIDR_DENY)
		return DROP_DENY_CIDR;
	return ALLOW;
}

/* The verdict for a packet src -> dst as the original direction of a flow. `s` and `d` are the
 * endpoints when the caller knows them already (its own side), else NULL to look them up. */
static __always_inline int decide(__u32 src, __u32 dst, __u8 proto, __u16 dport_net,
				  const struct endpoint *s, const struct endpoint *d)
{
	if (!s)
		s = bpf_map_lookup_elem(&sp_endpoints, &src);
	if (!s)
		return DROP_POLICY; /* only endpoints start flows; the world gets replies */
	if (!d)
		d = bpf_map_lookup_elem(&sp_endpoints, &dst);
	if (d)
		return pair_verdict(s, d, proto, dport_net);
	return decide_to_world(dst);
}

static __always_inline void remember_flow(const struct pkt *p)
{
	struct flow_key k = {};
	k.src = p->src;
	k.dst = p->dst;
	k.sport = p->sport;
	k.dport = p->dport;
	k.proto = p->proto;
	if (p->proto == IPPROTO_TCP) {
		__u8 one = 1;
		bpf_map_update_elem(&sp_flows, &k, &one, BPF_ANY);
	} else if (!bpf_map_lookup_elem(&sp_flows, &k)) {
		__u8 one = 1;
		bpf_map_update_elem(&sp_flows, &k, &one, BPF_NOEXIST);
	}
}

/* A reply: its reverse was recorded as a flow and that direction is still allowed. */
static __always_inline int is_reply(const struct pkt *p)
{
	struct flow_key k = {};
	k.src = p->dst;
	k.dst = p->src;
	k.sport = p->dport;
	k.dport = p->sport;
	k.proto = p->proto;
	if (!bpf_map_lookup_elem(&sp_flows, &k))
		return 0;
	int v = decide(p->dst, p->src, p->proto, p->sport, 0, 0);
	return v == ALLOW || v == ALLOW_SYMMETRIC;
}

/* `s`/`d`: the local container's own endpoint on the side it is on, NULL on the other. */
static __always_inline int verdict(struct pkt *p, const struct endpoint *s,
				   const struct endpoint *d)
{
	int v = decide(p->src, p->dst, p->proto, p->dport, s, d);
	if (v == ALLOW_SYMMETRIC)
		return ALLOW; /* the reply is allowed by policy as well: no flow entry needed */
	if (v == ALLOW) {
		if (p->starts_flow)
			remember_flow(p);
		return ALLOW;
	}
	return is_reply(p) ? ALLOW : v;
}

static __always_inline int finish(struct __sk_buff *skb, struct counters *c, int v, int out)
{
	if (c) {
		if (v == ALLOW) {
			if (out) {
				c->out_bytes += skb->len;
				c->out_packets += 1;
			} else {
				c->in_bytes += skb->len;
				c->in_packets += 1;
			}
		} else if (v > 0 && v < DROP_REASONS) {
			if (out)
				c->drops_out[v] += 1;
			else
				c->drops_in[v] += 1;
		}
	}
	return v == ALLOW ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("classifier")
int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface *me = bpf_map_lookup_elem(&sp_ifaces, &ifindex);
	if (!me)
		return TC_ACT_SHOT; /* attached but not configured: no counters to charge */
	struct counters *c = bpf_map_lookup_elem(&sp_counters, &me->slot);

	struct pkt p = {};
	__u32 arp_spa = 0;
	switch (parse(skb, &p, &arp_spa)) {
	case PARSED_BAD:
		return finish(skb, c, DROP_MALFORMED, 1);
	case PARSED_OTHER:
		return finish(skb, c, DROP_NOT_IPV4, 1);
	case PARSED_ARP:
		return finish(skb, c, arp_spa == me->ip ? ALLOW : DROP_SPOOF, 1);
	case PARSED_IPV4:
		break;
	}
	if (p.src != me->ip)
		return finish(skb, c, DROP_SPOOF, 1);
	return finish(skb, c, verdict(&p, &me->self, 0), 1);
}

SEC("classifier")
int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface *me = bpf_map_lookup_elem(&sp_ifaces, &ifindex);
	if (!me)
		return TC_ACT_SHOT; /* attached but not configured: no counters to charge */
	struct counters *c = bpf_map_lookup_elem(&sp_counters, &me->slot);

	struct pkt p = {};
	__u32 arp_spa = 0;
	switch (parse(skb, &p, &arp_spa)) {
	case PARSED_BAD:
		return finish(skb, c, DROP_MALFORMED, 0);
	case PARSED_OTHER:
		return finish(skb, c, DROP_NOT_IPV4, 0);
	case PARSED_ARP:
		return finish(skb, c, ALLOW, 0);
	case PARSED_IPV4:
		break;
	}
	/* Frames flooded by a bridge for another address are not this container's business. */
	if (p.dst != me->ip)
		return finish(skb, c, DROP_POLICY, 0);
	return finish(skb, c, verdict(&p, 0, &me->self), 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
