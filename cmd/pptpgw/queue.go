package main

import (
	"context"
	"fmt"
	"log/slog"

	"pptpgw/nat"
	"pptpgw/nat/nfq"
)

// queueLen is how many packets the kernel keeps waiting for a verdict.
// Bursts beyond it are dropped, deliberately not accepted: fail-open on
// overflow (NFQA_CFG_F_FAIL_OPEN) would let GRE leave untranslated, with
// an inside source address. Fail-open when no daemon is bound is the
// rule's bypass flag (rules.Plan.FailOpen), which is a different thing.
const queueLen = 8192

// queue binds one NFQUEUE number and feeds every packet to the engine.
//
// It uses nat/nfq, not github.com/florianl/go-nfqueue: this is the hot path
// (every GRE packet of every tunnel), and nfq reads a batch of packets per
// recvmmsg and answers the whole batch with one sendmsg, without allocating;
// measured on this machine it drains a queue 4-5x faster (nat/nfq tests).
//
// A packet's way through the gateway:
//  1. nftables (table installed by rules.Install) notracks GRE and queues
//     TCP 1723 and GRE crossing the WAN: from the WAN in prerouting (after
//     conntrack undid the masquerade, before routing: DNAT-like), to the WAN
//     in postrouting (after routing, before the kernel's SNAT: SNAT-like), so
//     the engine sees inside addresses in both directions.
//  2. nfq hands each packet to onPacket as a view over its receive buffer,
//     with ingress/egress interface and hook.
//  3. nat.Engine.Process rewrites it in place (GRE: IPs and key; TCP 1723: call
//     IDs inside the control messages via the helper ALG) and decides.
//  4. nfq sends the verdicts of the batch, with the rewritten bytes, in one
//     message; a held control segment is answered later through the
//     engine's releaser (SetVerdict).
//  5. Everything else never leaves the kernel (masquerade in postrouting).
type queue struct {
	conn   *nfq.Conn
	engine *nat.Engine
	log    *slog.Logger
}

// openQueue binds queue num; from here on the kernel queues packets to us
// (they wait until start runs the reader).
func openQueue(num uint16, engine *nat.Engine, log *slog.Logger) (*queue, error) {
	conn, err := nfq.Open(nfq.Config{Queue: num, MaxQueueLen: queueLen})
	if err != nil {
		return nil, fmt.Errorf("NFQUEUE %d: %w", num, err)
	}
	q := &queue{conn: conn, engine: engine, log: log}
	engine.SetReleaser(func(id uint32, data []byte, v nat.Verdict) {
		if err := conn.SetVerdict(id, v == nat.Accept, data); err != nil {
			log.Debug("nfqueue verdict for a held packet failed", "id", id, "err", err)
		}
	})
	return q, nil
}

// start runs the reader until ctx ends.
func (q *queue) start(ctx context.Context) {
	go func() {
		if err := q.conn.Run(ctx, q.onPacket); err != nil && ctx.Err() == nil {
			q.log.Error("NFQUEUE reader stopped", "err", err)
		}
	}()
}

func (q *queue) onPacket(p *nfq.Packet) nfq.Verdict {
	np := nat.Packet{ID: p.ID, Data: p.Payload, InIf: p.InDev, OutIf: p.OutDev, Hook: nat.Prerouting}
	switch p.Hook {
	case nfq.HookOutput:
		np.Hook = nat.Output
	case nfq.HookPostrouting:
		// Queued on the way out of the WAN; the kernel gives no ingress
		// interface here, and none is needed.
		np.Hook = nat.Postrouting
	}
	switch v, _ := q.engine.Process(&np); v {
	case nat.Hold:
		return nfq.Hold // the engine kept a copy; its releaser answers
	case nat.Drop:
		return nfq.Drop
	}
	p.Modified = true // GRE always is; a control segment's rewrite is in place
	return nfq.Accept
}

// counters are the reader's own, for `pptpgw calls --json`.
func (q *queue) counters() map[string]uint64 {
	s := q.conn.Stats()
	return map[string]uint64{
		"nfqueue_packets":        s.Packets,
		"nfqueue_batches":        s.Batches,
		"nfqueue_recv_errors":    s.RecvErrors,
		"nfqueue_malformed":      s.Malformed,
		"nfqueue_verdict_errors": s.VerdictErrors,
	}
}

func (q *queue) close() error { return q.conn.Close() }
