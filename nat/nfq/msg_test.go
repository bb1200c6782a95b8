package nfq

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

// recordedGRE is a datagram Linux 6.18 sent (logged by TestQueueNetns): a
// GRE packet (key 0x0102) queued to queue 21 in prerouting on lo. Layout:
// nlmsghdr, nfgenmsg {AF_INET, 0, 21}, NFQA_PACKET_HDR {id 1, 0x0800, hook
// 0}, NFQA_IFINDEX_INDEV 1, NFQA_HWADDR, NFQA_SKB_INFO, NFQA_PAYLOAD.
var recordedGRE = mustHex("60000000000300000000000000000000020000150b000100000000010800000008000500000000011000090000060000000000000000000008000e000000000420000a004500001cce964000402f6e1a7f0000017f0000013001880b00000102")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// kernelPacket builds an NFQNL_MSG_PACKET the way nfqnl_build_packet_message
// lays it out.
func kernelPacket(queue uint16, id uint32, hook Hook, indev, outdev uint32, payload []byte) []byte {
	attr := func(b []byte, typ uint16, data []byte) []byte {
		var h [4]byte
		binary.NativeEndian.PutUint16(h[0:], uint16(4+len(data)))
		binary.NativeEndian.PutUint16(h[2:], typ)
		b = append(b, h[:]...)
		b = append(b, data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	b := make([]byte, 20)
	ph := []byte{0, 0, 0, 0, 0x08, 0x00, byte(hook)}
	binary.BigEndian.PutUint32(ph, id)
	b = attr(b, attrPacketHdr, ph)
	if indev != 0 {
		b = attr(b, attrInDev, binary.BigEndian.AppendUint32(nil, indev))
	}
	if outdev != 0 {
		b = attr(b, attrOutDev, binary.BigEndian.AppendUint32(nil, outdev))
	}
	b = attr(b, 9 /* NFQA_HWADDR */, []byte{0, 6, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0})
	b = attr(b, attrPayload, payload)
	b = attr(b, 13 /* NFQA_CAP_LEN */, binary.BigEndian.AppendUint32(nil, uint32(len(payload))))
	putNlmsg(b, uint32(len(b)), typePacket, 0, 0, queue)
	return b
}

var grePayload = []byte{
	0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x2f, 0x7c, 0xb0, 127, 0, 0, 1, 127, 0, 0, 1,
	0x30, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x01, 0x02,
}

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    []byte
		id     uint32
		hook   Hook
		in     uint32
		out    uint32
		paylen int
	}{
		{"recorded", recordedGRE, 1, 0, 1, 0, 28},
		{"built prerouting", kernelPacket(47, 7, HookPrerouting, 1, 0, grePayload), 7, 0, 1, 0, len(grePayload)},
		{"built postrouting", kernelPacket(47, 0x01020304, HookPostrouting, 0, 3, grePayload[:27]), 0x01020304, 4, 0, 3, 27},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, _, _, body, rest, ok := nextMsg(tc.msg)
			if !ok || typ != typePacket || len(rest) != 0 {
				t.Fatalf("nextMsg: typ %#x ok %v rest %d", typ, ok, len(rest))
			}
			var p Packet
			if _, err := parsePacket(body, &p); err != nil {
				t.Fatal(err)
			}
			if p.ID != tc.id || p.Hook != tc.hook || p.InDev != tc.in || p.OutDev != tc.out || len(p.Payload) != tc.paylen {
				t.Errorf("got %+v", p)
			}
			if tc.name != "recorded" && !bytes.Equal(p.Payload, grePayload[:tc.paylen]) {
				t.Errorf("payload %x", p.Payload)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	good := kernelPacket(1, 9, 0, 1, 0, grePayload)
	// Truncated inside the payload attribute: the ID is still known.
	_, _, _, body, _, _ := nextMsg(good)
	var p Packet
	haveID, err := parsePacket(body[:len(body)-10], &p)
	if err == nil || !haveID || p.ID != 9 {
		t.Errorf("truncated: haveID %v id %d err %v", haveID, p.ID, err)
	}
	// No packet header.
	if _, err := parsePacket(body[:4], &p); err == nil {
		t.Error("message without NFQA_PACKET_HDR parsed")
	}
	// nlmsg_len beyond the datagram.
	if _, _, _, _, _, ok := nextMsg(good[:len(good)-1]); ok {
		t.Error("short datagram accepted")
	}
}

// goNfqueueMsg is what go-nfqueue v2.1.0 marshals (its setConfig and
// setVerdict, rebuilt from the same mdlayher/netlink calls).
func goNfqueueMsg(t testing.TB, typ uint16, flags netlink.HeaderFlags, seq uint32, queue uint16, attrs ...[]netlink.Attribute) []byte {
	data := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(queue >> 8), byte(queue)}
	for _, a := range attrs {
		b, err := netlink.MarshalAttributes(a)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b...)
	}
	// Length as Conn.Send fills it in.
	m := netlink.Message{Header: netlink.Header{Length: uint32(align4(16 + len(data))), Type: netlink.HeaderType(typ), Flags: flags, Sequence: seq}, Data: data}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoldenConfig(t *testing.T) {
	const q, rng, maxLen = 0x1234, 0xffff, 8192
	got := appendConfig(nil, q, rng, maxLen, 5)
	fl := netlink.Request | netlink.Acknowledge
	var want []byte
	want = append(want, goNfqueueMsg(t, typeConfig, fl, 5, q, []netlink.Attribute{{Type: 1, Data: []byte{1, 0, 0, 0}}})...)
	want = append(want, goNfqueueMsg(t, typeConfig, fl, 6, q, []netlink.Attribute{{Type: 2, Data: []byte{0, 0, 0xff, 0xff, 2}}})...)
	want = append(want, goNfqueueMsg(t, typeConfig, fl, 7, q, []netlink.Attribute{{Type: 3, Data: []byte{0, 0, 0x20, 0}}})...)
	if !bytes.Equal(got, want) {
		t.Errorf("config messages\n got %x\nwant %x", got, want)
	}
}

func goNfqueueVerdict(t testing.TB, q uint16, id uint32, verdict byte, payload []byte, extra ...netlink.Attribute) []byte {
	vh := []netlink.Attribute{{Type: 2, Data: binary.BigEndian.AppendUint32([]byte{0, 0, 0, verdict}, id)}}
	vh = append(vh, extra...)
	if payload == nil {
		return goNfqueueMsg(t, typeVerdict, netlink.Request, 0, q, vh)
	}
	return goNfqueueMsg(t, typeVerdict, netlink.Request, 0, q, vh, []netlink.Attribute{{Type: 10, Data: payload}})
}

func TestGoldenVerdictBatch(t *testing.T) {
	b := newBatch(8, 1<<20)
	p27 := grePayload[:27] // odd length: needs padding
	b.add(3, 1, true, nil, false, Attrs{})
	b.add(3, 2, false, nil, false, Attrs{})
	b.add(3, 3, true, grePayload, true, Attrs{})
	b.add(3, 4, true, p27, true, Attrs{Mark: 0x1234, SetMark: true, Priority: 0x10010, SetPriority: true})
	b.add(3, 5, true, nil, false, Attrs{Priority: 0x10007, SetPriority: true})
	b.add(3, 6, true, []byte{}, true, Attrs{})
	b.add(3, 7, false, nil, false, Attrs{Mark: 1, SetMark: true}) // a drop sets nothing
	got := b.bytes(nil)
	var want []byte
	want = append(want, goNfqueueVerdict(t, 3, 1, 1, nil)...)
	want = append(want, goNfqueueVerdict(t, 3, 2, 0, nil)...)
	want = append(want, goNfqueueVerdict(t, 3, 3, 1, grePayload)...)
	be := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	want = append(want, goNfqueueVerdict(t, 3, 4, 1, p27, netlink.Attribute{Type: 3, Data: be(0x1234)}, netlink.Attribute{Type: 21, Data: be(0x10010)})...)
	want = append(want, goNfqueueVerdict(t, 3, 5, 1, nil, netlink.Attribute{Type: 21, Data: be(0x10007)})...)
	want = append(want, goNfqueueVerdict(t, 3, 6, 1, []byte{})...)
	want = append(want, goNfqueueVerdict(t, 3, 7, 0, nil)...)
	if !bytes.Equal(got, want) {
		t.Errorf("verdict batch\n got %x\nwant %x", got, want)
	}
	if b.size != len(want) || b.n != 7 {
		t.Errorf("size %d n %d, want %d 7", b.size, b.n, len(want))
	}
	// The same batch as one datagram per verdict (sendmmsg).
	var perMsg []byte
	for _, m := range b.mmsgs() {
		for _, v := range unsafe.Slice(m.Hdr.Iov, m.Hdr.Iovlen) {
			perMsg = append(perMsg, unsafe.Slice(v.Base, v.Len)...)
		}
	}
	if !bytes.Equal(perMsg, want) || len(b.mmsgs()) != 7 {
		t.Errorf("per-message layout\n got %x\nwant %x", perMsg, want)
	}
	// Payloads are referenced, not copied.
	iov := b.iovecs()
	if len(iov) != 5 || iov[1].Base != &grePayload[0] || iov[3].Base != &p27[0] {
		t.Errorf("iovecs %+v", iov)
	}
	b.reset()
	if b.n != 0 || len(b.bytes(nil)) != 0 {
		t.Error("reset batch not empty")
	}
}

func TestBatchLimit(t *testing.T) {
	b := newBatch(4, 220)
	n := 0
	for b.fits(len(grePayload)) && n < 10 {
		b.add(0, uint32(n), true, grePayload, true, Attrs{})
		n++
	}
	if b.size > 220 || n != 3 {
		t.Errorf("%d verdicts of %d bytes in a batch limited to 220", n, b.size)
	}
	b.reset()
	for b.fits(0) && n < 100 {
		b.add(0, 1, true, nil, false, Attrs{})
		n++
	}
	if b.n != 4 {
		t.Errorf("batch of 4 took %d", b.n)
	}
}

// handlePath is Run's per-datagram work without the socket.
func handlePath(c *Queue, dgram []byte, h Handler) {
	c.handleDatagram(dgram, h)
	c.out.iovecs()
	c.out.reset()
}

func testConn() *Queue {
	return &Queue{fd: -1, queue: 47, out: newBatch(64, 1<<22)}
}

func TestNoAllocs(t *testing.T) {
	c := testConn()
	raw := recordedGRE
	dgram := append([]byte(nil), raw...)
	h := func(p *Packet) pkt.Verdict {
		p.Payload[27] ^= 1
		p.Modified = true
		return pkt.Accept
	}
	allocs := testing.AllocsPerRun(1000, func() {
		copy(dgram, raw)
		handlePath(c, dgram, h)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet, want 0", allocs)
	}
	if c.packets.Load() == 0 {
		t.Error("handler never ran")
	}
	// A datagram of many messages and a kernel error answer.
	var multi []byte
	for i := range 8 {
		multi = append(multi, kernelPacket(47, uint32(i), 0, 1, 0, grePayload)...)
	}
	allocs = testing.AllocsPerRun(100, func() { handlePath(c, multi, func(p *Packet) pkt.Verdict { return pkt.Drop }) })
	if allocs != 0 {
		t.Errorf("%v allocations per 8-packet datagram, want 0", allocs)
	}
}

func TestHandleDatagramVerdicts(t *testing.T) {
	c := testConn()
	var dgram []byte
	for i := range 4 {
		dgram = append(dgram, kernelPacket(47, uint32(100+i), 0, 1, 0, grePayload)...)
	}
	// An NLMSG_ERROR answering a refused verdict (ENOENT), then garbage.
	e := make([]byte, 36)
	putNlmsgHdr(e, 36, unix.NLMSG_ERROR, 0, 0)
	binary.NativeEndian.PutUint32(e[16:], ^uint32(unix.ENOENT)+1) // -ENOENT
	dgram = append(dgram, e...)
	dgram = append(dgram, 0xff, 0xff, 0xff)
	var seen []uint32
	c.handleDatagram(dgram, func(p *Packet) pkt.Verdict {
		seen = append(seen, p.ID)
		switch p.ID {
		case 100:
			return pkt.Drop
		case 101:
			return pkt.Hold
		case 102:
			p.Payload[27] = 0x99
			p.Modified = true
		}
		return pkt.Accept
	})
	if len(seen) != 4 {
		t.Fatalf("handler saw %v", seen)
	}
	got := c.out.bytes(nil)
	mod := append([]byte(nil), grePayload...)
	mod[27] = 0x99
	var want []byte
	want = append(want, goNfqueueVerdict(t, 47, 100, 0, nil)...)
	want = append(want, goNfqueueVerdict(t, 47, 102, 1, mod)...)
	want = append(want, goNfqueueVerdict(t, 47, 103, 1, nil)...)
	if !bytes.Equal(got, want) {
		t.Errorf("verdicts\n got %x\nwant %x", got, want)
	}
	if s := c.Stats(); s.Packets != 4 || s.VerdictErrors != 1 || s.Malformed != 1 {
		t.Errorf("stats %+v, want 4 packets, 1 verdict error, 1 malformed", s)
	}
}

// A datagram cut short by MSG_TRUNC still gets its packet dropped by ID.
func TestTruncatedDatagramDrops(t *testing.T) {
	c := testConn()
	raw := kernelPacket(47, 42, 0, 1, 0, grePayload)
	called := false
	c.handleDatagram(raw[:60], func(*Packet) pkt.Verdict { called = true; return pkt.Accept })
	want := goNfqueueVerdict(t, 47, 42, 0, nil)
	if got := c.out.bytes(nil); called || !bytes.Equal(got, want) || c.Stats().Malformed != 1 {
		t.Errorf("handler called %v, verdicts %x (want %x), stats %+v", called, got, want, c.Stats())
	}
}

func BenchmarkParseVerdict(b *testing.B) {
	c := testConn()
	raw := append([]byte(nil), recordedGRE...)
	h := func(p *Packet) pkt.Verdict {
		p.Payload[27]++
		p.Modified = true
		return pkt.Accept
	}
	b.ReportAllocs()
	b.SetBytes(28)
	for b.Loop() {
		c.handleDatagram(raw, h)
		if c.out.n >= 64 {
			c.out.iovecs()
			c.out.reset()
		}
	}
}

// BenchmarkGoNfqueueVerdict is the same verdict built the way go-nfqueue
// does, for comparison.
func BenchmarkGoNfqueueVerdict(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		goNfqueueVerdict(b, 47, 7, 1, grePayload)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(kernelPacket(47, 7, 0, 1, 0, grePayload))
	f.Add(kernelPacket(47, 8, 4, 0, 2, nil))
	f.Add(append(kernelPacket(1, 1, 0, 1, 0, grePayload), kernelPacket(1, 2, 0, 1, 0, grePayload[:3])...))
	f.Add(kernelPacket(47, 7, 0, 1, 0, grePayload)[:40])
	f.Add(recordedGRE)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
		hi := lo + uintptr(len(data))
		for b := data; len(b) > 0; {
			_, _, _, body, rest, ok := nextMsg(b)
			if !ok {
				break
			}
			if len(rest) >= len(b) {
				t.Fatal("nextMsg did not advance")
			}
			b = rest
			var p Packet
			if _, err := parsePacket(body, &p); err != nil {
				continue
			}
			if len(p.Payload) > 0 {
				s := uintptr(unsafe.Pointer(&p.Payload[0]))
				if s < lo || s+uintptr(len(p.Payload)) > hi || cap(p.Payload) != len(p.Payload) {
					t.Fatalf("payload [%#x,+%d) outside buffer [%#x,%#x)", s, len(p.Payload), lo, hi)
				}
			}
		}
		// Run's whole per-datagram path on the same bytes.
		c := testConn()
		c.handleDatagram(data, func(p *Packet) pkt.Verdict { p.Modified = true; return pkt.Accept })
		c.out.bytes(nil)
	})
}

func TestConfigError(t *testing.T) {
	for _, tc := range []struct {
		e    unix.Errno
		is   error
		text string
	}{
		{unix.EBUSY, unix.EBUSY, "already bound by another process"},
		{unix.ENOENT, unix.ENOENT, "nfnetlink_queue"},
		{unix.EINVAL, unix.EINVAL, "set copy mode queue 7"},
	} {
		what := "bind"
		if tc.e == unix.EINVAL {
			what = "set copy mode"
		}
		err := configError(7, what, tc.e)
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("configError(%v) = %v", tc.e, err)
		}
	}
	// EPERM: busy for a process with CAP_NET_ADMIN, else the capability.
	err := configError(7, "bind", unix.EPERM)
	if hasCapNetAdmin() {
		if !errors.Is(err, unix.EBUSY) {
			t.Errorf("EPERM with CAP_NET_ADMIN: %v", err)
		}
	} else if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "needs CAP_NET_ADMIN") {
		t.Errorf("EPERM without CAP_NET_ADMIN: %v", err)
	}
}
