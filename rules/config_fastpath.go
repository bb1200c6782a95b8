package rules

import (
	"encoding/binary"
	"runtime"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// MaxQueues bounds `queues`: each queue is a reader goroutine and a netlink
// socket with its buffers.
const MaxQueues = 64

// validateFastPath checks the keys of the kernel fast path and the queue
// readers (issue 12); Validate calls it with its error collector.
func (c *Config) validateFastPath(bad func(field, format string, a ...any)) {
	switch c.GREPath {
	case GREPathAuto, GREPathKernel, GREPathUserspace:
	case "":
		c.GREPath = GREPathAuto
	default:
		bad("gre_path", "%q is not one of kernel, userspace, auto", c.GREPath)
	}
	if c.Queues < 0 || c.Queues > MaxQueues {
		bad("queues", "%d out of range 0..%d (0: one per CPU)", c.Queues, MaxQueues)
	} else if c.Queues > 0 && int(c.Queue)+c.Queues-1 > 65535 {
		bad("queues", "queues %d..%d run past 65535", c.Queue, int(c.Queue)+c.EffectiveQueues()-1)
	}
}

// EffectiveQueues is the number of queues the daemon reads: Queues, or one
// per CPU when 0 (at most MaxQueues, and not past queue number 65535).
func (c *Config) EffectiveQueues() int {
	if c.Queues > 0 {
		return c.Queues
	}
	return max(1, min(runtime.NumCPU(), MaxQueues, 65536-int(c.Queue)))
}

// QueueBalanceExprs is `queue num N-M [bypass]` over total queues from num
// (total 0 or 1: QueueExprs). The kernel picks the queue by a hash of the
// IPv4 address pair that is the same both ways (nfqueue_hash orders the two
// addresses), so both directions of a control connection, as the queue
// rules see them (inside and peer address, before SNAT and after de-NAT),
// meet the same queue and reader. The CPU fanout flag is deliberately not
// set: it picks the queue by the CPU the packet is on, which would split a
// connection's segments across readers.
func QueueBalanceExprs(impl QueueImpl, num, total uint16, bypass bool) []expr.Any {
	if total <= 1 {
		return QueueExprs(impl, num, bypass)
	}
	if impl == QueueNative {
		q := &expr.Queue{Num: num, Total: total}
		if bypass {
			q.Flag = expr.QueueFlagBypass
		}
		return []expr.Any{q}
	}
	b := NFQInfoV3(num, bypass)
	binary.NativeEndian.PutUint16(b[2:], total)
	info := xt.Unknown(b)
	return []expr.Any{&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}}
}
