package pkt

// Verdict is what happens to a packet the gateway was handed: the one
// decision type of the NFQUEUE reader (nat/nfq), the engine (nat) and the
// control ALG (helper).
type Verdict uint8

const (
	// Accept lets the packet go, rewritten in place if its handler did so.
	Accept Verdict = iota
	// Drop discards it.
	Drop
	// Hold keeps it: the handler copied what it needs and the verdict
	// comes later (nfq.Queue.SetVerdict; the engine's releaser; the
	// helper's Result.Released). The kernel counts it against the queue
	// length until then.
	Hold
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Hold:
		return "hold"
	}
	return "unknown"
}
