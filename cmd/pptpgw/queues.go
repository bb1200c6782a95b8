package main

import (
	"context"
	"fmt"
	"log/slog"

	"pptpgw/internal/metrics"
	"pptpgw/internal/pkt"
	"pptpgw/nat"
	"pptpgw/nat/nfq"
)

// queues are the NFQUEUE readers (issue 12: `queues: N`, default one per
// CPU): queue numbers first .. first+N-1, one nfq.Queue and one reader
// goroutine each, all feeding the one engine. The table's queue rules
// balance packets over them by IP address pair (rules.QueueBalanceExprs),
// so both directions of a control connection reach the same reader; the
// engine is safe for concurrent use anyway (its lock order: nat/doc.go).
// A held control segment's verdict goes back to the queue it came from
// (nfq.Packet.Queue, nat.Engine.SetQueueReleaser).
type queues struct {
	qs   []*queue
	last []nfq.KernelStats
}

// openQueues binds n queues from first; with n 1 it is openQueue.
func openQueues(first uint16, n int, maxLen uint32, wait nfq.WaitMode, engine *nat.Engine, log *slog.Logger) (*queues, error) {
	s := &queues{}
	for i := 0; i < max(n, 1); i++ {
		q, err := openQueue(first+uint16(i), maxLen, wait, engine, log)
		if err != nil {
			s.close()
			return nil, err
		}
		s.qs = append(s.qs, q)
	}
	s.last = make([]nfq.KernelStats, len(s.qs))
	engine.SetQueueReleaser(func(queue uint16, id uint32, data []byte, v pkt.Verdict) {
		i := int(queue) - int(first)
		if i < 0 || i >= len(s.qs) {
			log.Debug("held packet from an unknown queue", "queue", queue, "id", id)
			return
		}
		if err := s.qs[i].conn.SetVerdict(id, v == pkt.Accept, data); err != nil {
			log.Debug("nfqueue verdict for a held packet failed", "queue", queue, "id", id, "err", err)
		}
	})
	return s, nil
}

func (s *queues) start(ctx context.Context) {
	for _, q := range s.qs {
		q.start(ctx)
	}
}

func (s *queues) close() error {
	var first error
	for _, q := range s.qs {
		if err := q.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// warnKernelDrops is queue.warnKernelDrops for each queue; it returns the
// sum of their counters.
func (s *queues) warnKernelDrops(nfq.KernelStats) nfq.KernelStats {
	var sum nfq.KernelStats
	for i, q := range s.qs {
		s.last[i] = q.warnKernelDrops(s.last[i])
		sum.QueueDropped += s.last[i].QueueDropped
		sum.UserDropped += s.last[i].UserDropped
	}
	return sum
}

// Collect emits the queues' counters summed over the queues: one sample per
// key, as with one queue.
func (s *queues) Collect(emit func(metrics.Sample)) {
	var order []string
	sum := map[string]metrics.Sample{}
	for _, q := range s.qs {
		q.conn.Collect(func(x metrics.Sample) {
			id := x.Key + fmt.Sprint(x.LabelValues)
			if y, ok := sum[id]; ok {
				y.Value += x.Value
				sum[id] = y
				return
			}
			order = append(order, id)
			sum[id] = x
		})
	}
	for _, id := range order {
		emit(sum[id])
	}
}
