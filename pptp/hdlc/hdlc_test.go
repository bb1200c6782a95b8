package hdlc

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// Rows of the FCS-16 lookup table printed in RFC 1662 §C.2.
func TestFCSTableMatchesRFC1662(t *testing.T) {
	want := map[int][]uint16{
		0:   {0x0000, 0x1189, 0x2312, 0x329b, 0x4624, 0x57ad, 0x6536, 0x74bf},
		8:   {0x8c48, 0x9dc1, 0xaf5a, 0xbed3, 0xca6c, 0xdbe5, 0xe97e, 0xf8f7},
		16:  {0x1081, 0x0108, 0x3393, 0x221a, 0x56a5, 0x472c, 0x75b7, 0x643e},
		248: {0x7bc7, 0x6a4e, 0x58d5, 0x495c, 0x3de3, 0x2c6a, 0x1ef1, 0x0f78},
	}
	for start, row := range want {
		for i, v := range row {
			if got := fcsTab[start+i]; got != v {
				t.Errorf("fcstab[%d] = %#04x, want %#04x", start+i, got, v)
			}
		}
	}
}

// naiveFCS is the bit-at-a-time definition, as a reference for the table.
func naiveFCS(b []byte) uint16 {
	fcs := uint16(0xFFFF)
	for _, c := range b {
		fcs ^= uint16(c)
		for i := 0; i < 8; i++ {
			if fcs&1 != 0 {
				fcs = fcs>>1 ^ 0x8408
			} else {
				fcs >>= 1
			}
		}
	}
	return fcs
}

func TestFCS16(t *testing.T) {
	// CRC-16/X-25 (the PPP FCS) check value of "123456789" is 0x906E.
	if got := ^FCS16(InitFCS16, []byte("123456789")); got != 0x906E {
		t.Fatalf("FCS(123456789) = %#04x, want 0x906e", got)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200; n++ {
		b := make([]byte, r.IntN(300))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := FCS16(InitFCS16, b), naiveFCS(b); got != want {
			t.Fatalf("len %d: table %#04x naive %#04x", len(b), got, want)
		}
		fcs := ^FCS16(InitFCS16, b)
		if FCS16(InitFCS16, append(b, byte(fcs), byte(fcs>>8))) != GoodFCS16 {
			t.Fatal("frame+FCS does not give GoodFCS16")
		}
	}
}

// An LCP Configure-Request (id 1, no options), framed by hand:
// FF 03 C0 21 01 01 00 04, FCS over it, all control chars escaped.
func TestEncodeKnownFrame(t *testing.T) {
	frame := []byte{0xFF, 0x03, 0xC0, 0x21, 0x01, 0x01, 0x00, 0x04}
	fcs := ^naiveFCS(frame)
	want := []byte{0x7E, 0xFF, 0x7D, 0x23, 0xC0, 0x21, 0x7D, 0x21, 0x7D, 0x21, 0x7D, 0x20, 0x7D, 0x24}
	for _, c := range []byte{byte(fcs), byte(fcs >> 8)} {
		if c < 0x20 || c == 0x7E || c == 0x7D {
			want = append(want, 0x7D, c^0x20)
		} else {
			want = append(want, c)
		}
	}
	want = append(want, 0x7E)
	if got := Encode(frame); !bytes.Equal(got, want) {
		t.Fatalf("Encode = % x\nwant     % x", got, want)
	}
	var d Decoder
	fs := d.Feed(want)
	if len(fs) != 1 || !bytes.Equal(fs[0], frame) {
		t.Fatalf("decode = % x", fs)
	}
}

func TestACCM(t *testing.T) {
	frame := []byte{0x00, 0x11, 0x13, 0x1F, 0x20, 0x7E, 0x7D}
	e := Encoder{ACCM: 1<<0x11 | 1<<0x13} // XON/XOFF only
	enc := e.Append(nil, frame)
	body := enc[1 : len(enc)-1]
	// 0x00 and 0x1F pass raw, 0x11/0x13/0x7E/0x7D escaped.
	wantPrefix := []byte{0x00, 0x7D, 0x31, 0x7D, 0x33, 0x1F, 0x20, 0x7D, 0x5E, 0x7D, 0x5D}
	if !bytes.HasPrefix(body, wantPrefix) {
		t.Fatalf("body % x, want prefix % x", body, wantPrefix)
	}
	var d Decoder
	if fs := d.Feed(enc); len(fs) != 1 || !bytes.Equal(fs[0], frame) {
		t.Fatalf("round trip failed: % x", fs)
	}
}

func TestDecoderStreaming(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var frames [][]byte
	var stream []byte
	for i := 0; i < 50; i++ {
		f := make([]byte, 1+r.IntN(200))
		for j := range f {
			f[j] = byte(r.Uint32())
		}
		frames = append(frames, f)
		stream = NewEncoder().Append(stream, f)
	}
	// Feed in random chunk sizes, including 1 byte at a time in the middle.
	var d Decoder
	var got [][]byte
	for len(stream) > 0 {
		n := 1 + r.IntN(17)
		if n > len(stream) {
			n = len(stream)
		}
		got = append(got, d.Feed(stream[:n])...)
		stream = stream[n:]
	}
	if len(got) != len(frames) {
		t.Fatalf("got %d frames, want %d", len(got), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if s := d.Stats(); s.Frames != 50 || s.BadFCS != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDecoderDrops(t *testing.T) {
	good := Encode([]byte("hello"))
	bad := Encode([]byte("world"))
	bad[3] ^= 0x01 // corrupt a payload byte
	var stream []byte
	stream = append(stream, bad...)
	stream = append(stream, 0x7E, 0x7E, 0x7E)       // fill
	stream = append(stream, 0x7E, 0x41, 0x7E)       // short (1 byte)
	stream = append(stream, 0x7E, 0x41, 0x7D, 0x7E) // aborted
	stream = append(stream, good...)
	d := Decoder{MaxFrame: 8}
	long := Encode(bytes.Repeat([]byte{'x'}, 20))
	stream = append(stream, long...)
	stream = append(stream, good...)
	fs := d.Feed(stream)
	if len(fs) != 2 || string(fs[0]) != "hello" || string(fs[1]) != "hello" {
		t.Fatalf("frames %q", fs)
	}
	want := Stats{Frames: 2, BadFCS: 1, Short: 1, TooLong: 1, Aborted: 1}
	if s := d.Stats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
}

func TestNoFlagStart(t *testing.T) {
	enc := Encode([]byte("abc"))
	var d Decoder
	if fs := d.Feed(enc[1:]); len(fs) != 1 || string(fs[0]) != "abc" {
		t.Fatalf("frames %q", fs)
	}
}

func TestFeedFuncNoAllocs(t *testing.T) {
	enc := Encode(bytes.Repeat([]byte{0x7E, 0x01, 'a'}, 100))
	var d Decoder
	n := 0
	fn := func([]byte) { n++ }
	d.FeedFunc(enc, fn) // warm the buffer
	allocs := testing.AllocsPerRun(100, func() { d.FeedFunc(enc, fn) })
	if allocs != 0 {
		t.Fatalf("FeedFunc allocates %v per run", allocs)
	}
	var dst []byte
	e := NewEncoder()
	dst = e.Append(dst[:0], enc)
	if a := testing.AllocsPerRun(100, func() { dst = e.Append(dst[:0], enc) }); a != 0 {
		t.Fatalf("Append allocates %v per run", a)
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add(Encode([]byte{0xFF, 0x03, 0xC0, 0x21, 0x01, 0x01, 0x00, 0x04}), uint8(3))
	f.Add([]byte{0x7E, 0x7D, 0x7E, 0x7D}, uint8(1))
	f.Add([]byte{}, uint8(0))
	f.Add(bytes.Repeat([]byte{0x7D}, 50), uint8(7))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		// Invariant 1: chunking does not change the result.
		var whole, parts Decoder
		a := whole.Feed(stream)
		var b [][]byte
		step := int(chunk%32) + 1
		for i := 0; i < len(stream); i += step {
			j := min(i+step, len(stream))
			b = append(b, parts.Feed(stream[i:j])...)
		}
		if len(a) != len(b) || whole.Stats() != parts.Stats() {
			t.Fatalf("chunked decode differs: %d vs %d frames", len(a), len(b))
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("frame %d differs", i)
			}
			if len(a[i]) > DefaultMaxFrame {
				t.Fatalf("frame over MaxFrame")
			}
		}
		// Invariant 2: every payload re-encodes and decodes to itself.
		for _, f := range a {
			var d Decoder
			got := d.Feed(Encode(f))
			if len(got) != 1 || !bytes.Equal(got[0], f) {
				t.Fatalf("re-encode round trip failed")
			}
		}
		// Invariant 3: a payload encodes with no raw flag or control byte inside.
		enc := Encode(stream)
		for _, c := range enc[1 : len(enc)-1] {
			if c == Flag || c < 0x20 {
				t.Fatalf("unescaped byte %#x in encoding", c)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	frame := make([]byte, 1400)
	for i := range frame {
		frame[i] = byte(i)
	}
	e := NewEncoder()
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		dst = e.Append(dst[:0], frame)
	}
}

func BenchmarkDecode(b *testing.B) {
	frame := make([]byte, 1400)
	for i := range frame {
		frame[i] = byte(i)
	}
	enc := Encode(frame)
	var d Decoder
	fn := func([]byte) {}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		d.FeedFunc(enc, fn)
	}
}

// Control characters the line inserted unescaped (here XON/XOFF) are dropped
// when the receive ACCM flags them, and kept otherwise.
func TestDecoderReceiveACCM(t *testing.T) {
	frame := []byte{0xFF, 0x03, 0x11, 0x41}
	enc := Encode(frame) // 0x11 is escaped by the default ACCM
	noisy := append([]byte{enc[0], 0x13}, enc[1:]...)
	noisy = append(noisy[:len(noisy)-1], 0x11, Flag)
	d := Decoder{ACCM: 1<<0x11 | 1<<0x13}
	fs := d.Feed(noisy)
	if len(fs) != 1 || !bytes.Equal(fs[0], frame) {
		t.Fatalf("frames % x", fs)
	}
	if s := d.Stats(); s.Discarded != 2 || s.BadFCS != 0 {
		t.Fatalf("stats %+v", s)
	}
	var plain Decoder
	if fs := plain.Feed(noisy); len(fs) != 0 || plain.Stats().BadFCS != 1 {
		t.Fatalf("without receive ACCM the inserted bytes must break the FCS: %q %+v", fs, plain.Stats())
	}
}
