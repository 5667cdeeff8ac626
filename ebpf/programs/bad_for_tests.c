// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/* Deliberately rejected by the verifier (reads the packet without a bounds check). Only the
 * tests load it, to prove a verifier failure surfaces the verifier's log. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int unchecked_read(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;
	return data[64];
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
