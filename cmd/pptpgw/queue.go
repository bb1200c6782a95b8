package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"

	"pptpgw/nat"
)

// Netfilter hook numbers as NFQUEUE reports them (NF_INET_*).
const (
	nfInetLocalOut    = 3
	nfInetPostRouting = 4
)

// queue binds one NFQUEUE number and feeds every packet to the engine.
//
// A packet's way through the gateway:
//  1. nftables (table installed by rules.Install) notracks GRE and queues
//     TCP 1723 and GRE crossing the WAN: from the WAN in prerouting (after
//     conntrack undid the masquerade, before routing: DNAT-like), to the WAN
//     in postrouting (after routing, before the kernel's SNAT: SNAT-like), so
//     the engine sees inside addresses in both directions.
//  2. The kernel hands the packet to this socket; onPacket wraps it as a
//     nat.Packet with its ingress/egress interface and hook.
//  3. nat.Engine.Process rewrites it in place (GRE: IPs and key; TCP 1723: call
//     IDs inside the control messages via the helper ALG) and decides.
//  4. The verdict goes back with the rewritten bytes; a held control segment
//     is answered later through the engine's releaser.
//  5. Everything else never leaves the kernel (masquerade in postrouting).
type queue struct {
	nf     *nfqueue.Nfqueue
	engine *nat.Engine
	log    *slog.Logger

	recvErrors    atomic.Uint64
	verdictErrors atomic.Uint64
}

// queueLen is how many packets the kernel keeps waiting for a verdict.
// Bursts beyond it are dropped, deliberately not accepted: fail-open on
// overflow (NFQA_CFG_F_FAIL_OPEN) would let GRE leave untranslated, with
// an inside source address. Fail-open when no daemon is bound is the
// rule's bypass flag (rules.Plan.FailOpen), which is a different thing.
const queueLen = 8192

// queueSocketBuffer is the netlink receive buffer: a burst of queueLen
// full-size packets must fit, or the kernel reports ENOBUFS and drops.
const queueSocketBuffer = 16 << 20

func openQueue(num uint16, engine *nat.Engine, log *slog.Logger) (*queue, error) {
	cfg := nfqueue.Config{
		NfQueue:      num,
		MaxPacketLen: 0xffff,
		MaxQueueLen:  queueLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
	}
	nf, err := nfqueue.Open(&cfg)
	if err != nil {
		return nil, fmt.Errorf("open NFQUEUE %d: %w", num, err)
	}
	if err := nf.Con.SetReadBuffer(queueSocketBuffer); err != nil {
		log.Warn("cannot enlarge the NFQUEUE socket buffer; bursts may be dropped", "err", err)
	}
	// Keep running when the kernel reports ENOBUFS (we fell behind); the
	// lost packets are retransmitted by their senders.
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		log.Debug("NoENOBUFS not available", "err", err)
	}
	q := &queue{nf: nf, engine: engine, log: log}
	engine.SetReleaser(func(id uint32, data []byte, v nat.Verdict) {
		q.verdict(id, data, v)
	})
	return q, nil
}

// start registers the callback; packets flow once it returns nil.
func (q *queue) start(ctx context.Context) error {
	return q.nf.RegisterWithErrorFunc(ctx, q.onPacket, func(err error) int {
		var op *netlink.OpError
		if errors.As(err, &op) && (op.Timeout() || op.Temporary()) {
			return 0
		}
		if ctx.Err() != nil {
			return 1
		}
		q.recvErrors.Add(1)
		q.log.Warn("nfqueue receive error", "err", err)
		return 0
	})
}

func (q *queue) onPacket(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	id := *a.PacketID
	if a.Payload == nil {
		q.verdict(id, nil, nat.Accept)
		return 0
	}
	p := nat.Packet{ID: id, Data: *a.Payload, Hook: nat.Prerouting}
	if a.InDev != nil {
		p.InIf = *a.InDev
	}
	if a.OutDev != nil {
		p.OutIf = *a.OutDev
	}
	if a.Hook != nil {
		switch *a.Hook {
		case nfInetLocalOut:
			p.Hook = nat.Output
		case nfInetPostRouting:
			// Queued on the way out of the WAN; the kernel gives no
			// ingress interface here, and none is needed.
			p.Hook = nat.Postrouting
		}
	}
	v, _ := q.engine.Process(&p)
	if v != nat.Hold {
		q.verdict(id, p.Data, v)
	}
	return 0
}

func (q *queue) verdict(id uint32, data []byte, v nat.Verdict) {
	var err error
	switch {
	case v == nat.Drop:
		err = q.nf.SetVerdict(id, nfqueue.NfDrop)
	case data != nil:
		err = q.nf.SetVerdictModPacket(id, nfqueue.NfAccept, data)
	default:
		err = q.nf.SetVerdict(id, nfqueue.NfAccept)
	}
	if err != nil {
		q.verdictErrors.Add(1)
		q.log.Debug("nfqueue verdict failed", "id", id, "err", err)
	}
}

func (q *queue) close() error { return q.nf.Close() }
