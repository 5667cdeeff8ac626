// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/* Calibration for bench/ebpf/run: an empty classifier, to measure what kernel.bpf_stats_enabled
 * itself adds to run_time_ns/run_cnt on this machine. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int pass_all(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
