package pptp

import (
	"io"
	"net"
	"testing"
	"time"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/wire"
)

// FuzzControlStream feeds arbitrary bytes to a control connection: the server must
// never panic, and when the connection ends every call it created is gone (no session,
// no pool address, no GRE call, no count against the pre-authentication limits left
// behind).
func FuzzControlStream(f *testing.F) {
	sccrq := (&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion}).Append(nil)
	ocrq := (&wire.OCRQ{CallID: 9, RecvWindow: 8}).Append(nil)
	f.Add(append(append([]byte{}, sccrq...), ocrq...))
	f.Add(append(append(append([]byte{}, sccrq...), ocrq...), (&wire.CCRQ{CallID: 9}).Append(nil)...))
	f.Add(append(append(append([]byte{}, sccrq...), ocrq...), (&wire.StopCCRQ{Reason: 1}).Append(nil)...))
	f.Add(append(append([]byte{}, sccrq...), (&wire.EchoRQ{ID: 1}).Append(nil)...))
	f.Add(append(append([]byte{}, sccrq...), (&wire.SLI{PeerCallID: 1}).Append(nil)...))
	f.Add(sccrq[:20])
	f.Add([]byte("\x00\x10\x00\x01\x1a\x2b\x3c\x4d\x00\x05\x00\x00garbage"))
	a, _ := gre.Pipe(loopback, loopback, 16)
	n := newMemNet()
	srv, err := NewServer(Config{PoolStart: poolStart, PoolEnd: poolEnd, Secrets: mapSecrets{"a": "b"}}, a, n)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		sc, cc := net.Pipe()
		go io.Copy(io.Discard, cc)
		srv.accept(sc)
		cc.SetWriteDeadline(time.Now().Add(time.Second))
		cc.Write(stream)
		cc.Close()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			srv.mu.Lock()
			idle := len(srv.conns) == 0 && len(srv.sessions) == 0 && len(srv.unauthBySource) == 0 &&
				srv.authed == 0 && srv.preauth.all.Len() == 0
			srv.mu.Unlock()
			if idle && srv.pool.InUse() == 0 && srv.mux.Len() == 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("state left behind: sessions %d pool %d gre %d", len(srv.Sessions()), srv.pool.InUse(), srv.mux.Len())
	})
}
