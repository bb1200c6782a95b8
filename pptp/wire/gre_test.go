package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func TestGRERoundTrip(t *testing.T) {
	cases := []struct {
		h    GREHeader
		want string // header bytes, from the RFC 2637 §4.1 diagram
	}{
		{GREHeader{CallID: 0x1234, PayloadLen: 0}, "2001880b00001234"},
		{GREHeader{CallID: 0x1234, PayloadLen: 3, HasSeq: true, Seq: 7}, "3001880b0003123400000007"},
		{GREHeader{CallID: 0xffff, HasAck: true, Ack: 0x01020304}, "2081880b0000ffff01020304"},
		{GREHeader{CallID: 1, PayloadLen: 3, HasSeq: true, Seq: 0xfffffffe, HasAck: true, Ack: 9},
			"3081880b00030001fffffffe00000009"},
	}
	for _, c := range cases {
		hb := c.h.Append(nil)
		if hex.EncodeToString(hb) != c.want {
			t.Errorf("%+v: Append = %x, want %s", c.h, hb, c.want)
		}
		if len(hb) != c.h.Len() {
			t.Errorf("%+v: Len %d, encoded %d", c.h, c.h.Len(), len(hb))
		}
		pl := bytes.Repeat([]byte{0xc0}, int(c.h.PayloadLen))
		pkt := append(append(hb, pl...), 0xee, 0xee) // trailing padding is ignored
		h, payload, err := ParseGRE(pkt)
		if err != nil || h != c.h || !bytes.Equal(payload, pl) {
			t.Errorf("ParseGRE(%x) = %+v %x %v", pkt, h, payload, err)
		}
		if got := uint16(pkt[GREKeyCallIDOffset])<<8 | uint16(pkt[GREKeyCallIDOffset+1]); got != c.h.CallID {
			t.Errorf("call ID at GREKeyCallIDOffset = %#x", got)
		}
	}
}

func TestGREErrors(t *testing.T) {
	base := GREHeader{CallID: 5, PayloadLen: 2, HasSeq: true, Seq: 1}.Append(nil)
	base = append(base, 0xff, 0x03)
	mod := func(f func(b []byte)) []byte { b := append([]byte(nil), base...); f(b); return b }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"7 bytes", base[:7], ErrShort},
		{"seq missing", base[:10], ErrShort},
		{"payload cut", base[:13], ErrGREPayloadLen},
		{"version 0", mod(func(b []byte) { b[1] &^= 7 }), ErrGREVersion},
		{"version 2", mod(func(b []byte) { b[1] = b[1]&^7 | 2 }), ErrGREVersion},
		{"no K", mod(func(b []byte) { b[0] &^= 0x20 }), ErrGREFlags},
		{"C set", mod(func(b []byte) { b[0] |= 0x80 }), ErrGREFlags},
		{"R set", mod(func(b []byte) { b[0] |= 0x40 }), ErrGREFlags},
		{"s set", mod(func(b []byte) { b[0] |= 0x08 }), ErrGREFlags},
		{"recur", mod(func(b []byte) { b[0] |= 0x01 }), ErrGREFlags},
		{"flags", mod(func(b []byte) { b[1] |= 0x08 }), ErrGREFlags},
		{"proto IPv4", mod(func(b []byte) { b[2], b[3] = 0x08, 0x00 }), ErrGREProto},
	}
	for _, c := range cases {
		if _, p, err := ParseGRE(c.b); !errors.Is(err, c.want) || p != nil {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func BenchmarkParseGRE(b *testing.B) {
	pkt := append(GREHeader{CallID: 5, PayloadLen: 4, HasSeq: true, Seq: 1, HasAck: true}.Append(nil), 1, 2, 3, 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseGRE(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
