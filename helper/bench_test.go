package helper

import (
	"bytes"
	"testing"

	"pptpgw/pptp/wire"
)

// BenchmarkProcessEcho: the steady state of a control connection, one
// Echo-Request segment per op.
func BenchmarkProcessEcho(b *testing.B) {
	m := newFakeMapper()
	m.noRecord = true
	c := NewTranslator(m, Config{Strict: true})
	c.Process(Outbound, 0, true, false, false, nil)
	echo := (&wire.EchoRQ{ID: 1}).Append(nil)
	seq := uint32(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(echo)))
	for b.Loop() {
		c.Process(Outbound, seq, false, false, false, echo)
		seq += uint32(len(echo))
	}
}

// rewriteConn returns an inbound connection that knows one call, and a
// WAN-Error-Notify for it whose Peer's Call ID the connection rewrites.
func rewriteConn() (*Translator, []byte) {
	m := newFakeMapper()
	m.noRecord = true
	c := NewTranslator(m, Config{Strict: true})
	c.Process(Inbound, 0, true, false, false, nil)
	m.AllocOutside(0x0101)
	return c, (&wire.WEN{PeerCallID: 0x0101 ^ 0xFFFF}).Append(nil)
}

// BenchmarkProcessRewrite: an inbound message whose Peer's Call ID is
// rewritten (WAN-Error-Notify of a known call), one segment per op.
func BenchmarkProcessRewrite(b *testing.B) {
	c, orig := rewriteConn()
	p := bytes.Clone(orig)
	seq := uint32(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		copy(p, orig)
		if res := c.Process(Inbound, seq, false, false, false, p); len(res.Patches) != 2 {
			b.Fatal("not rewritten")
		}
		seq += uint32(len(p))
	}
}

// BenchmarkProcessSplit: the same message in 1-byte segments (the worst
// case of reassembly, including a hold and release per message).
func BenchmarkProcessSplit(b *testing.B) {
	c, orig := rewriteConn()
	p := bytes.Clone(orig)
	seq := uint32(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		copy(p, orig)
		for i := range p {
			c.Process(Inbound, seq, false, false, false, p[i:i+1])
			seq++
		}
	}
}

// BenchmarkConversation: a whole PNS-inside control connection (SYN to
// Stop-Control-Connection, five calls, every message type), one segment
// per turn. Allocates for call records and the fake Mapper's maps.
func BenchmarkConversation(b *testing.B) {
	cv := pnsInside()
	var bufs [][]byte
	for _, tn := range cv.turns {
		bufs = append(bufs, tn.wireIn())
	}
	total := 0
	for _, p := range bufs {
		total += len(p)
	}
	work := make([][]byte, len(bufs))
	for i := range bufs {
		work[i] = bytes.Clone(bufs[i])
	}
	b.ReportAllocs()
	b.SetBytes(int64(total))
	for b.Loop() {
		m := newFakeMapper()
		m.noRecord = true
		c := NewTranslator(m, Config{Strict: true})
		seq := cv.isn
		for d := range 2 {
			c.Process(Dir(d), seq[d], true, false, false, nil)
			seq[d]++
		}
		for i, tn := range cv.turns {
			copy(work[i], bufs[i])
			c.Process(tn.dir, seq[tn.dir], false, tn.fin, false, work[i])
			seq[tn.dir] += uint32(len(work[i]))
		}
	}
}
