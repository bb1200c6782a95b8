package nfq

import (
	"strings"
	"testing"
)

// TestParseProcQueues: lines as Linux 6.18 prints them in
// /proc/net/netfilter/nfnetlink_queue (recorded by TestKernelStatsNetns and
// by testbed's TestGatewayQueueOverflowCounted; the last one is made up),
// found by queue number and port ID.
func TestParseProcQueues(t *testing.T) {
	const (
		full   = "   22   5745     8 2 65531    42     0        8  1\n"                      // MaxQueueLen 8, 50 sent, nobody reading
		socket = "   22  13529    19 2 65531     0    31       50  1\n"                      // 16 KB socket buffer, 50 sent
		gw     = "   47  11451     0 2 65531   284     0       17  1\n"                      // the gateway's queue after a burst at a stopped daemon
		wide   = "65535 4294967295 4294967295 2 65535 4294967295 4294967295 4294967295  1\n" // made up: every field at its maximum
	)
	for _, tc := range []struct {
		name   string
		file   string
		queue  uint16
		portid uint32
		want   procQueueLine
		found  bool
		err    string
	}{
		{name: "empty file", file: "", queue: 47},
		{name: "queue full", file: full, queue: 22, portid: 5745, found: true,
			want: procQueueLine{queue: 22, portid: 5745, total: 8, dropped: 42}},
		{name: "socket full", file: socket, queue: 22, found: true,
			want: procQueueLine{queue: 22, portid: 13529, total: 19, userDropped: 31}},
		{name: "second of two lines", file: full + gw, queue: 47, portid: 11451, found: true,
			want: procQueueLine{queue: 47, portid: 11451, dropped: 284}},
		{name: "other queue only", file: gw, queue: 22},
		{name: "same queue, another socket", file: full, queue: 22, portid: 1},
		{name: "no final newline", file: strings.TrimSuffix(gw, "\n"), queue: 47, found: true,
			want: procQueueLine{queue: 47, portid: 11451, dropped: 284}},
		{name: "maximum values", file: wide, queue: 65535, found: true,
			want: procQueueLine{queue: 65535, portid: 1<<32 - 1, total: 1<<32 - 1, dropped: 1<<32 - 1, userDropped: 1<<32 - 1}},
		{name: "short line", file: "   47  11451     0 2 65531\n", queue: 47, err: "5 fields"},
		{name: "not a number", file: "   47  11451     x 2 65531   284     0       17  1\n", queue: 47, err: "field 3"},
		{name: "out of range", file: "   47  11451     0 2 65531 4294967296     0       17  1\n", queue: 47, err: "field 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := parseProcQueues([]byte(tc.file), tc.queue, tc.portid)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || found != tc.found || got != tc.want {
				t.Errorf("= %+v, %v, %v; want %+v, %v, nil", got, found, err, tc.want, tc.found)
			}
		})
	}
}

// TestKernelStatsWrap: the kernel's 32-bit counters are accumulated in 64
// bits, across a wrap too.
func TestKernelStatsWrap(t *testing.T) {
	var k KernelStats
	prev := procQueueLine{}
	for _, cur := range []procQueueLine{
		{total: 3, dropped: 1<<32 - 10, userDropped: 7},
		{total: 1, dropped: 5, userDropped: 7}, // wrapped: 15 more
		{total: 0, dropped: 6, userDropped: 9},
	} {
		k.add(prev, cur)
		prev = cur
	}
	if want := (KernelStats{Waiting: 0, QueueDropped: 1<<32 + 6, UserDropped: 9}); k != want {
		t.Errorf("= %+v, want %+v", k, want)
	}
}
