package nfq_test

import (
	"context"
	"log/slog"

	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
)

// A gateway loop: rewrite in place and accept, or hold a packet and answer
// it later from another goroutine.
func Example() {
	c, err := nfq.Open(nfq.Config{Queue: 47})
	if err != nil {
		slog.Error("open queue", "err", err) // e.g. "queue 47 is already bound by another process"
		return
	}
	defer c.Close()
	held := make(chan []byte, 16)
	err = c.Run(context.Background(), func(p *nfq.Packet) pkt.Verdict {
		if p.Hook == nfq.HookPrerouting && len(p.Payload) >= 28 && p.Payload[9] == 47 {
			p.Payload[26], p.Payload[27] = 0x12, 0x34 // new GRE key, in place
			p.Modified = true
			return pkt.Accept
		}
		if len(held) < cap(held) {
			held <- append([]byte(nil), p.Payload...) // keep a copy
			go func(id uint32) { c.SetVerdict(id, true, <-held) }(p.ID)
			return pkt.Hold
		}
		return pkt.Drop
	})
	if err != nil {
		slog.Error("queue", "err", err)
	}
}
