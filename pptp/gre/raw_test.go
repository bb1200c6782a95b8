package gre

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"pptpgw/internal/nstest"
)

// TestRawSocketBatchNoAllocs: in a fresh namespace, packets written to the raw GRE
// socket come back through ReadBatch (IPv4 header cut off, source set), and
// WritePacket does not allocate.
func TestRawSocketBatchNoAllocs(t *testing.T) {
	nstest.Run(t, func() { rawSocketBatchNoAllocs(t) })
}

func rawSocketBatchNoAllocs(t *testing.T) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	pc, err := ListenRaw(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	br := pc.(BatchReader)
	dst := netip.MustParseAddr("127.0.0.1")
	pkt := []byte{0x30, 0x81, 0x88, 0x0b, 0, 3, 0, 7, 0, 0, 0, 1, 'a', 'b', 'c'}
	const n = 5
	for range n {
		if err := pc.WritePacket(pkt, dst); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	pkts, srcs := make([][]byte, 8), make([]netip.Addr, 8)
	got := 0
	deadline := time.Now().Add(2 * time.Second)
	for got < n && time.Now().Before(deadline) {
		k, err := br.ReadBatch(bufs, pkts, srcs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			if string(pkts[i]) != string(pkt) || srcs[i] != dst {
				t.Fatalf("got %x from %s", pkts[i], srcs[i])
			}
		}
		got += k
	}
	if got != n {
		t.Fatalf("read %d packets, want %d", got, n)
	}
	if a := testing.AllocsPerRun(100, func() { _ = pc.WritePacket(pkt, dst) }); a != 0 {
		t.Fatalf("WritePacket: %v allocs", a)
	}
}
