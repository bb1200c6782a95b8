package tun

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"pptpgw/internal/nstest"
)

func TestTUNRoundTrip(t *testing.T) {
	nstest.Run(t, func() {
		var rb [2]byte
		rand.Read(rb[:])
		name := "pt" + hex.EncodeToString(rb[:])
		d, err := Open(name, 1400)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		local := netip.MustParseAddr("10.77.0.1")
		peer := netip.MustParseAddr("10.77.0.10")
		if err := d.AddAddr(local); err != nil {
			t.Fatal(err)
		}
		if err := d.AddRoute(peer, local); err != nil {
			t.Fatal(err)
		}
		// A UDP datagram to the peer address must come out of the TUN.
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: peer.AsSlice(), Port: 9})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hello"))
		buf := make([]byte, 2000)
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			n, err := d.ReadPacket(buf)
			if err != nil {
				time.Sleep(5 * time.Millisecond) // non-blocking fd in a locked thread: poll
				continue
			}
			p := buf[:n]
			if n >= 20 && p[0]>>4 == 4 && p[9] == 17 && netip.AddrFrom4([4]byte(p[16:20])) == peer {
				if src := netip.AddrFrom4([4]byte(p[12:16])); src != local {
					t.Fatalf("source %s, want %s", src, local)
				}
				if err := d.DelRoute(peer); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
		t.Fatal("no packet from TUN")
	})
}
