package fakeppp

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"pptpgw/pptp/hdlc"
)

func TestFrameRoundTrip(t *testing.T) {
	f := MakeFrame("pg1234-c3", 77, 40)
	tag, seq, ok := ParseFrame(f)
	if !ok || tag != "pg1234-c3" || seq != 77 {
		t.Fatalf("ParseFrame = %q %d %v", tag, seq, ok)
	}
	if !bytes.HasPrefix(f, []byte{0xFF, 0x03, 0x00, 0x21}) {
		t.Fatalf("frame does not start with PPP-in-HDLC IPv4 header: % x", f[:4])
	}
	for _, bad := range [][]byte{nil, f[:8], f[:12], append([]byte{0xFF, 0x03, 0x00, 0x57}, f[4:]...)} {
		if _, _, ok := ParseFrame(bad); ok {
			t.Fatalf("ParseFrame accepted % x", bad)
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(MakeFrame("c0", 1, 0))
	f.Add(MakeFrame("", 0, 3))
	f.Add([]byte{0xFF, 0x03, 0x00, 0x21, 'P', 'G', 'T', 'B', 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		tag, seq, ok := ParseFrame(b)
		if !ok {
			return
		}
		g := MakeFrame(tag, seq, 0)
		if !bytes.HasPrefix(b, g) {
			t.Fatalf("parsed (%q,%d) does not re-encode to a prefix of the input", tag, seq)
		}
	})
}

// pipe returns two connected in-memory byte streams.
func pipe(t *testing.T) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestClientAgainstEcho(t *testing.T) {
	a, b := pipe(t)
	go Echo(context.Background(), b, 5*time.Second)
	s := Client(context.Background(), a, ClientConfig{Tag: "c0", Frames: 30, Timeout: 3 * time.Second})
	if !s.OK() || s.Good != 30 || s.Hello != 1 {
		t.Fatalf("summary %s", s.JSON())
	}
}

// A crossed "server" that answers with another client's tag: the client must
// report the cross-talk, not success.
func TestClientDetectsCrossTalk(t *testing.T) {
	a, b := pipe(t)
	go func() {
		var dec hdlc.Decoder
		buf := make([]byte, 4096)
		enc := hdlc.NewEncoder()
		for {
			n, err := b.Read(buf)
			for _, f := range dec.Feed(buf[:n]) {
				_, seq, _ := ParseFrame(f)
				b.Write(enc.Append(nil, MakeFrame("c1", seq, 0)))
			}
			if err != nil {
				return
			}
		}
	}()
	s := Client(context.Background(), a, ClientConfig{Tag: "c0", Frames: 5, Timeout: 700 * time.Millisecond})
	if s.OK() || s.Foreign == 0 || s.Good != 0 {
		t.Fatalf("cross-talk not detected: %s", s.JSON())
	}
}

// Corrupted echoes are counted as bad FCS, not as good frames.
func TestClientCountsBadFCS(t *testing.T) {
	a, b := pipe(t)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			if n > 0 {
				out := append([]byte(nil), buf[:n]...)
				out[len(out)/2] ^= 0x01
				if out[len(out)/2] == hdlc.Flag || out[len(out)/2] == hdlc.Escape {
					out[len(out)/2] ^= 0x03
				}
				b.Write(out)
			}
			if err != nil {
				return
			}
		}
	}()
	s := Client(context.Background(), a, ClientConfig{Tag: "c0", Frames: 3, Timeout: 600 * time.Millisecond})
	if s.OK() || s.BadFCS == 0 || s.Good != 0 {
		t.Fatalf("bad FCS not counted: %s", s.JSON())
	}
}

func TestEchoStopsOnEOF(t *testing.T) {
	a, b := pipe(t)
	done := make(chan int)
	go func() {
		n, _ := Echo(context.Background(), b, 0)
		done <- n
	}()
	var dec hdlc.Decoder
	buf := make([]byte, 512)
	n, _ := a.Read(buf) // hello
	if fs := dec.Feed(buf[:n]); len(fs) != 1 {
		t.Fatalf("no hello frame first")
	}
	a.Write(hdlc.Encode(MakeFrame("x", 1, 0)))
	n, _ = io.ReadAtLeast(a, buf, 1)
	if fs := dec.Feed(buf[:n]); len(fs) != 1 {
		t.Fatalf("no echo")
	}
	a.Close()
	select {
	case got := <-done:
		if got != 1 {
			t.Fatalf("echoed %d, want 1", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Echo did not return after EOF")
	}
}
