package wire

import (
	"bytes"
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
