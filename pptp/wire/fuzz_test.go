package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// FuzzDecode: Decode never panics; a message that decodes re-encodes to
// the same bytes except in the reserved ranges, which Append zeroes; and
// PeekHeader agrees with Decode.
func FuzzDecode(f *testing.F) {
	for _, m := range samples() {
		f.Add(m.Append(nil))
	}
	f.Add([]byte{0, 16, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0, 5, 0xff, 0xff, 1, 2, 3, 4})
	for _, name := range []string{"long", "clear"} {
		for _, s := range loadSegments(f, name) {
			for _, m := range splitMessages(f, s.Payload) {
				f.Add(m)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		n, typ, perr := PeekHeader(b)
		if err != nil {
			if m != nil {
				t.Fatal("message with error")
			}
			return
		}
		if perr != nil || n != len(b) || typ != m.Type() {
			t.Fatalf("PeekHeader %d %v %v disagrees with Decode", n, typ, perr)
		}
		want := append([]byte(nil), b...)
		for _, r := range ReservedRanges(typ) {
			clear(want[r[0]:r[1]])
		}
		if got := m.Append(nil); !bytes.Equal(got, want) {
			t.Fatalf("re-encoded\n% x\nwant\n% x", got, want)
		}
	})
}

// FuzzParseGRE: ParseGRE never panics; a header that parses re-encodes to
// the same bytes and the payload lies within the input.
func FuzzParseGRE(f *testing.F) {
	f.Add(GREHeader{CallID: 1, PayloadLen: 2, HasSeq: true, Seq: 3, HasAck: true, Ack: 4}.Append(nil))
	f.Add(append(GREHeader{CallID: 9, PayloadLen: 1, HasSeq: true}.Append(nil), 0x7e))
	f.Add([]byte{0x20, 0x81, 0x88, 0x0b, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := ParseGRE(b)
		if err != nil {
			return
		}
		hb := h.Append(nil)
		if len(hb) != h.Len() || !bytes.Equal(hb, b[:h.Len()]) {
			t.Fatalf("re-encoded % x, input % x", hb, b[:min(len(b), h.Len())])
		}
		if len(payload) != int(h.PayloadLen) || h.Len()+len(payload) > len(b) {
			t.Fatalf("payload %d bytes, header says %d, input %d", len(payload), h.PayloadLen, len(b))
		}
		if len(payload) > 0 && &payload[0] != &b[h.Len()] {
			t.Fatal("payload does not alias the input")
		}
	})
}

// chunkReader returns at most n bytes per Read, as a TCP stream may.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}

// FuzzReadMessage: ReadMessage, reading a stream in chunks of any size,
// agrees message by message with a reference that cuts the whole stream by
// PeekHeader and Decode: the same messages, each consuming exactly its
// length, then the documented error (io.EOF at a message boundary or after
// a whole header, io.ErrUnexpectedEOF inside a header or body, PeekHeader's
// error for a bad header); and no message refers to the reused buffer.
func FuzzReadMessage(f *testing.F) {
	var all []byte
	for _, m := range samples() {
		all = m.Append(all)
	}
	f.Add(all, byte(0))
	f.Add(all[:len(all)-3], byte(6))
	for _, name := range []string{"long", "clear"} {
		for _, s := range loadSegments(f, name) {
			f.Add(s.Payload, byte(len(s.Payload)))
		}
	}
	f.Add([]byte{0, 16, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0, 5, 0xff, 0xff, 1, 2, 3, 4}, byte(3))
	f.Fuzz(func(t *testing.T, stream []byte, chunk byte) {
		r := &chunkReader{b: stream, n: 1 + int(chunk)%64}
		buf := make([]byte, MaxMsgLen)
		for pos := 0; ; {
			m, err := ReadMessage(r, buf)
			rest := stream[pos:]
			var want error
			var n int
			switch {
			case len(rest) == 0:
				want = io.EOF
			case len(rest) < HeaderLen:
				want = io.ErrUnexpectedEOF
			default:
				var perr error
				n, _, perr = PeekHeader(rest[:HeaderLen])
				switch {
				case perr != nil:
					want = perr
				case len(rest) == HeaderLen && n > HeaderLen:
					want = io.EOF
				case len(rest) < n:
					want = io.ErrUnexpectedEOF
				}
			}
			if want != nil {
				if m != nil || !errors.Is(err, want) {
					t.Fatalf("at %d: %v, %v; want %v", pos, m, err, want)
				}
				return
			}
			ref, rerr := Decode(rest[:n])
			if err != nil || rerr != nil || !reflect.DeepEqual(m, ref) {
				t.Fatalf("at %d: %+v, %v; Decode gives %+v, %v", pos, m, err, ref, rerr)
			}
			if consumed := len(stream) - len(r.b); consumed != pos+n {
				t.Fatalf("at %d: consumed %d bytes, want %d", pos, consumed-pos, n)
			}
			enc := m.Append(nil)
			for i := range buf {
				buf[i] = 0xA5
			}
			if again := m.Append(nil); !bytes.Equal(enc, again) {
				t.Fatalf("at %d: message refers to the reused buffer", pos)
			}
			pos += n
		}
	})
}
