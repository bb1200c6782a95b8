package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// samples holds one message of every type with every field non-zero and
// distinct, so a misplaced field shows up in the round trip.
func samples() []Message {
	return []Message{
		&SCCRQ{ProtocolVersion: ProtocolVersion, FramingCaps: FramingAsync | FramingSync, BearerCaps: BearerAnalog,
			MaxChannels: 7, FirmwareRevision: 0x0102, Hostname: "pns.example", Vendor: "pptpgw"},
		&SCCRP{ProtocolVersion: ProtocolVersion, Result: SCCRPResultOK, Error: ErrorBadValue, FramingCaps: 3, BearerCaps: 2,
			MaxChannels: 9, FirmwareRevision: 0x0203, Hostname: "pac", Vendor: "v\x00endor"},
		&StopCCRQ{Reason: StopReasonLocalShutdown},
		&StopCCRP{Result: StopCCRPResultGeneralError, Error: ErrorPACError},
		&EchoRQ{ID: 0xdeadbeef},
		&EchoRP{ID: 0x01020304, Result: EchoRPResultOK, Error: ErrorNoResource},
		&OCRQ{CallID: 0x1234, CallSerial: 0x5678, MinBPS: 2400, MaxBPS: 10000000, BearerType: 3, FramingType: 3,
			RecvWindow: 64, ProcessingDelay: 5, PhoneNumberLen: 4, PhoneNumber: "5551", Subaddress: "sub"},
		&OCRP{CallID: 0x4321, PeerCallID: 0x1234, Result: OCRPResultConnected, Error: 2, Cause: 0x0a0b,
			ConnectSpeed: 64000, RecvWindow: 16, ProcessingDelay: 3, PhysChannelID: 0x0c0d0e0f},
		&ICRQ{CallID: 0x1111, CallSerial: 0x2222, BearerType: 1, PhysChannelID: 0x33333333, DialedNumberLen: 2,
			DialingNumberLen: 3, DialedNumber: "12", DialingNumber: "345", Subaddress: "x"},
		&ICRP{CallID: 0x4444, PeerCallID: 0x1111, Result: ICRPResultConnect, Error: 1, RecvWindow: 32, TransmitDelay: 7},
		&ICCN{PeerCallID: 0x4444, ConnectSpeed: 115200, RecvWindow: 8, TransmitDelay: 9, FramingType: 1},
		&CCRQ{CallID: 0x5555},
		&CDN{CallID: 0x6666, Result: CDNResultRequest, Error: 3, Cause: 0x0102, CallStats: "bytes=10"},
		&WEN{PeerCallID: 0x7777, CRCErrors: 1, FramingErrors: 2, HardwareOverruns: 3, BufferOverruns: 4,
			TimeoutErrors: 5, AlignmentErrors: 6},
		&SLI{PeerCallID: 0x8888, SendACCM: 0xffffffff, RecvACCM: 0x000a0000},
	}
}

func TestRoundTrip(t *testing.T) {
	seen := map[MsgType]bool{}
	for _, m := range samples() {
		t.Run(m.Type().String(), func(t *testing.T) {
			seen[m.Type()] = true
			b := m.Append([]byte{0xAA}) // appends, keeps the prefix
			if b[0] != 0xAA {
				t.Fatalf("Append clobbered the prefix")
			}
			b = b[1:]
			if len(b) != m.Type().Len() {
				t.Fatalf("len %d, want %d", len(b), m.Type().Len())
			}
			n, typ, err := PeekHeader(b)
			if err != nil || n != len(b) || typ != m.Type() {
				t.Fatalf("PeekHeader = %d %v %v", n, typ, err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("decoded %+v, want %+v", got, m)
			}
			if again := got.Append(nil); !bytes.Equal(again, b) {
				t.Fatalf("re-encoded % x, want % x", again, b)
			}
			for _, r := range ReservedRanges(m.Type()) {
				for i := r[0]; i < r[1]; i++ {
					if b[i] != 0 {
						t.Errorf("reserved byte %d = %#x", i, b[i])
					}
				}
			}
		})
	}
	for typ := StartCtrlConnRequest; typ <= SetLinkInfo; typ++ {
		if !seen[typ] {
			t.Errorf("no sample for %v", typ)
		}
	}
}

// RFC 2637 §2 fixed lengths, written out independently of msgLens.
func TestLengths(t *testing.T) {
	want := map[MsgType]int{1: 156, 2: 156, 3: 16, 4: 16, 5: 16, 6: 20, 7: 168, 8: 32, 9: 220, 10: 24,
		11: 28, 12: 16, 13: 148, 14: 40, 15: 24}
	for typ, n := range want {
		if typ.Len() != n {
			t.Errorf("%v.Len() = %d, want %d", typ, typ.Len(), n)
		}
		if n > MaxMsgLen {
			t.Errorf("MaxMsgLen %d < %d", MaxMsgLen, n)
		}
	}
	for _, typ := range []MsgType{0, 16, 0xffff} {
		if typ.Len() != 0 || typ.Known() {
			t.Errorf("%v should be unknown", typ)
		}
	}
	if got := MsgType(99).String(); got != "MsgType(99)" {
		t.Errorf("String = %q", got)
	}
}

func TestCallIDOffsets(t *testing.T) {
	for _, m := range samples() {
		b := m.Append(nil)
		v := reflect.ValueOf(m).Elem()
		own, hasOwn := CallIDOffset(m.Type())
		peer, hasPeer := PeerCallIDOffset(m.Type())
		if f := v.FieldByName("CallID"); f.IsValid() != hasOwn {
			t.Errorf("%v: CallIDOffset ok=%v but struct CallID field %v", m.Type(), hasOwn, f.IsValid())
		} else if hasOwn && uint64(binary.BigEndian.Uint16(b[own:])) != f.Uint() {
			t.Errorf("%v: CallID at %d = %#x, want %#x", m.Type(), own, binary.BigEndian.Uint16(b[own:]), f.Uint())
		}
		if f := v.FieldByName("PeerCallID"); f.IsValid() != hasPeer {
			t.Errorf("%v: PeerCallIDOffset ok=%v but struct PeerCallID field %v", m.Type(), hasPeer, f.IsValid())
		} else if hasPeer && uint64(binary.BigEndian.Uint16(b[peer:])) != f.Uint() {
			t.Errorf("%v: PeerCallID at %d wrong", m.Type(), peer)
		}
		res, hasRes := ResultOffset(m.Type())
		if f := v.FieldByName("Result"); f.IsValid() != hasRes {
			t.Errorf("%v: ResultOffset ok=%v but struct Result field %v", m.Type(), hasRes, f.IsValid())
		} else if hasRes && uint64(b[res]) != f.Uint() {
			t.Errorf("%v: Result at %d = %d, want %d", m.Type(), res, b[res], f.Uint())
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := (&EchoRQ{ID: 1}).Append(nil)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"11 bytes", good[:11], ErrShort},
		{"header only", good[:HeaderLen], ErrShort},
		{"truncated body", good[:15], ErrShort},
		{"bad magic", mod(func(b []byte) []byte { b[MagicOffset] ^= 1; return b }), ErrBadMagic},
		{"management", mod(func(b []byte) []byte { b[PPTPTypeOffset+1] = 2; return b }), ErrNotControl},
		{"type 0", mod(func(b []byte) []byte { b[CtrlTypeOffset+1] = 0; return b }), ErrUnknownType},
		{"type 16", mod(func(b []byte) []byte { b[CtrlTypeOffset+1] = 16; return b }), ErrUnknownType},
		{"length field 17", mod(func(b []byte) []byte { b[LengthOffset+1] = 17; return b }), ErrBadLength},
		{"length field 0", mod(func(b []byte) []byte { b[LengthOffset+1] = 0; return b }), ErrBadLength},
		{"trailing byte", mod(func(b []byte) []byte { return append(b, 0) }), ErrBadLength},
		{"type/length mismatch", mod(func(b []byte) []byte { b[CtrlTypeOffset+1] = byte(EchoReply); return b }), ErrBadLength},
	}
	for _, c := range cases {
		m, err := Decode(c.b)
		if !errors.Is(err, c.want) || m != nil {
			t.Errorf("%s: Decode = %v, %v; want %v", c.name, m, err, c.want)
		}
	}
	// Reserved fields are ignored by Decode.
	b := mod(func(b []byte) []byte { b[Reserved0Offset] = 0xff; return b })
	if m, err := Decode(b); err != nil || m.(*EchoRQ).ID != 1 {
		t.Errorf("nonzero Reserved0: %v %v", m, err)
	}
}

func TestStrings(t *testing.T) {
	// A 64-byte host name with no NUL survives; a longer one is cut.
	long := string(bytes.Repeat([]byte("h"), 70))
	m := &SCCRQ{Hostname: long[:64], Vendor: long}
	got, err := Decode(m.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if g := got.(*SCCRQ); g.Hostname != long[:64] || g.Vendor != long[:64] {
		t.Errorf("got %q %q", g.Hostname, g.Vendor)
	}
}

func TestHeaderView(t *testing.T) {
	b := (&CCRQ{CallID: 9}).Append(nil)
	h := Header(b)
	if h.Length() != 16 || h.PPTPType() != PPTPTypeControl || h.Magic() != MagicCookie ||
		h.CtrlType() != CallClearRequest || h.Reserved0() != 0 {
		t.Errorf("header view %d %d %#x %v %d", h.Length(), h.PPTPType(), h.Magic(), h.CtrlType(), h.Reserved0())
	}
}

func BenchmarkDecodeOCRP(b *testing.B) {
	buf := (&OCRP{CallID: 1, PeerCallID: 2, Result: 1}).Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeekHeader(b *testing.B) {
	buf := (&EchoRQ{ID: 1}).Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := PeekHeader(buf); err != nil {
			b.Fatal(err)
		}
	}
}
