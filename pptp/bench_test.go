package pptp

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"pptpgw/internal/pkt"
)

// udpPacket builds an IPv4/UDP packet of total length size (no UDP checksum).
func udpPacket(src, dst netip.Addr, size int) []byte {
	p := make([]byte, size)
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	binary.BigEndian.PutUint16(p[10:], pkt.Checksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 5001)
	binary.BigEndian.PutUint16(p[24:], uint16(size-20))
	return p
}

// benchThroughput: one session, client -> server, the whole userspace pipeline in
// memory: ppp.Session.SendIP (MPPE-128 encrypt) -> gre.Call.Send (header, seq/ack) ->
// in-memory packet pipe -> gre.Mux (demux, seq check) -> ppp.Session.Input (MPPE-128
// decrypt) -> server glue (source check, MSS clamp) -> Net.WritePacket. Flow control
// like a window-limited sender: at most 32 packets in flight.
func benchThroughput(b *testing.B, stateless bool) {
	r := newRig(b, nil)
	c, err := r.dial(b, "alice", "s3cret pass", func(cc *ClientConfig) { cc.StatelessOnly, cc.StatefulOnly = stateless, !stateless })
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ping(b, c, localIP, 100)                                   // the server side is up too
	pkt := udpPacket(c.Session().Info().LocalIP, behind, 1396) // MRU 1400 - 4 bytes MPPE
	base := r.net.written.Load()
	var sent, lost uint64
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		for in, w := c.call.InFlight(); w != 0 && in >= w; in, w = c.call.InFlight() {
			runtime.Gosched() // sender-side flow control: wait for the peer's acks
		}
		if err := c.SendIP(pkt); err != nil {
			b.Fatal(err)
		}
		sent++
		for spins := 0; sent-lost-(r.net.written.Load()-base) > 32; spins++ {
			if spins > 10000 { // a loss: stop waiting for it
				lost = sent - (r.net.written.Load() - base)
				break
			}
			runtime.Gosched()
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for r.net.written.Load()-base < sent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	got := r.net.written.Load() - base
	b.ReportMetric(float64(got)/float64(sent)*100, "delivered_%")
	if testing.Verbose() {
		b.Logf("client call %+v server %v", c.call.Stats(), r.srv.Counters())
	}
	b.ReportMetric(float64(got)*float64(len(pkt))*8/el.Seconds()/1e9, "Gbit/s")
}

func BenchmarkThroughputMPPE128Stateless(b *testing.B) { benchThroughput(b, true) }
func BenchmarkThroughputMPPE128Stateful(b *testing.B)  { benchThroughput(b, false) }

// BenchmarkSessionSetup: full setups per second (TCP control, SCCRQ, OCRQ, LCP,
// MS-CHAPv2, CCP/MPPE-128, IPCP) and clean teardown (LCP Terminate, CCRQ/CDN,
// StopCCRQ/RP), sequentially, one client at a time.
func BenchmarkSessionSetup(b *testing.B) {
	r := newRig(b, func(c *Config) { c.PoolEnd = netip.MustParseAddr("10.8.0.250") })
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		c, err := r.dial(b, "alice", "s3cret pass", nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "setups/s")
}
