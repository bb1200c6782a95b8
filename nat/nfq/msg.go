package nfq

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Wire format of nfnetlink_queue (include/uapi/linux/netfilter/nfnetlink_queue.h).
// Every message is
//
//	struct nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }  host order
//	struct nfgenmsg  { u8 family; u8 version; be16 res_id; }               res_id = queue
//	attributes       { u16 nla_len; u16 nla_type; data; pad to 4 }         header host order
//
// type is NFNL_SUBSYS_QUEUE<<8 | NFQNL_MSG_*. The attribute payloads of
// nfnetlink_queue are big-endian.
const (
	nlmsgHdrLen = unix.SizeofNlMsghdr // 16
	nfgenLen    = 4
	nlaHdrLen   = unix.SizeofNlAttr // 4
	nlaTypeMask = 0x3fff            // ^(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

	// msg types (low byte), subsystem in the high byte.
	msgPacket  = 0 // NFQNL_MSG_PACKET: kernel -> us
	msgVerdict = 1 // NFQNL_MSG_VERDICT: us -> kernel
	msgConfig  = 2 // NFQNL_MSG_CONFIG: us -> kernel

	typePacket  = unix.NFNL_SUBSYS_QUEUE<<8 | msgPacket
	typeVerdict = unix.NFNL_SUBSYS_QUEUE<<8 | msgVerdict
	typeConfig  = unix.NFNL_SUBSYS_QUEUE<<8 | msgConfig

	// enum nfqnl_attr_type.
	attrPacketHdr = 1  // NFQA_PACKET_HDR: struct nfqnl_msg_packet_hdr
	attrVerdict   = 2  // NFQA_VERDICT_HDR: struct nfqnl_msg_verdict_hdr
	attrMark      = 3  // NFQA_MARK: be32 skb->mark
	attrInDev     = 5  // NFQA_IFINDEX_INDEV: be32
	attrOutDev    = 6  // NFQA_IFINDEX_OUTDEV: be32
	attrPayload   = 10 // NFQA_PAYLOAD
	attrPriority  = 21 // NFQA_PRIORITY: be32 skb->priority (verdicts: Linux 6.12+)

	// enum nfqnl_attr_config.
	attrCfgCmd    = 1 // NFQA_CFG_CMD: struct nfqnl_msg_config_cmd
	attrCfgParams = 2 // NFQA_CFG_PARAMS: struct nfqnl_msg_config_params
	attrCfgMaxLen = 3 // NFQA_CFG_QUEUE_MAXLEN: be32

	cmdBind    = 1 // NFQNL_CFG_CMD_BIND
	copyPacket = 2 // NFQNL_COPY_PACKET

	nfDrop   = 0 // NF_DROP
	nfAccept = 1 // NF_ACCEPT

	// packetHdrLen is struct nfqnl_msg_packet_hdr, packed:
	//	be32 packet_id; be16 hw_protocol; u8 hook;
	packetHdrLen = 7

	// verdictHdrLen: nlmsghdr + nfgenmsg + NFQA_VERDICT_HDR{be32 verdict; be32 id}.
	verdictHdrLen = nlmsgHdrLen + nfgenLen + nlaHdrLen + 8 // 32
	// attrU32Len is one attribute carrying a be32 (NFQA_MARK, NFQA_PRIORITY).
	attrU32Len = nlaHdrLen + 4
	// verdictMaxHdr adds NFQA_MARK, NFQA_PRIORITY, the NFQA_PAYLOAD
	// attribute header and room for the padding after the payload.
	verdictMaxHdr = verdictHdrLen + 2*attrU32Len + nlaHdrLen + 3
)

// Errors of the parser; a message that fails to parse is counted and skipped.
var (
	errShort     = errors.New("nfq: truncated netlink message")
	errBadAttr   = errors.New("nfq: malformed attribute")
	errNoPacketH = errors.New("nfq: packet message without NFQA_PACKET_HDR")
)

func align4(n int) int { return (n + 3) &^ 3 }

// nextMsg splits the first netlink message off b: its type, flags, seq, the
// body after the nlmsghdr, and the rest of b (at the next aligned message).
// ok is false (rest nil) if b does not hold a whole message.
func nextMsg(b []byte) (typ, flags uint16, seq uint32, body, rest []byte, ok bool) {
	if len(b) < nlmsgHdrLen {
		return 0, 0, 0, nil, nil, false
	}
	l := int(binary.NativeEndian.Uint32(b[0:4]))
	if l < nlmsgHdrLen || l > len(b) {
		return 0, 0, 0, nil, nil, false
	}
	typ = binary.NativeEndian.Uint16(b[4:6])
	flags = binary.NativeEndian.Uint16(b[6:8])
	seq = binary.NativeEndian.Uint32(b[8:12])
	body = b[nlmsgHdrLen:l]
	if a := align4(l); a < len(b) {
		rest = b[a:]
	} else {
		rest = b[len(b):]
	}
	return typ, flags, seq, body, rest, true
}

// parsePacket fills p from the body (after nlmsghdr) of an NFQNL_MSG_PACKET.
// p.Payload aliases body; nothing is allocated. Unknown attributes are
// skipped.
// haveID says whether the packet ID was read, even if err != nil, so a
// truncated packet can still get a verdict instead of staying queued.
func parsePacket(body []byte, p *Packet) (haveID bool, err error) {
	*p = Packet{}
	if len(body) < nfgenLen {
		return false, errShort
	}
	b := body[nfgenLen:]
	gotHdr := false
	for len(b) >= nlaHdrLen {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < nlaHdrLen || l > len(b) {
			return gotHdr, errBadAttr
		}
		d := b[nlaHdrLen:l]
		switch t {
		case attrPacketHdr:
			if len(d) < packetHdrLen {
				return gotHdr, errBadAttr
			}
			p.ID = binary.BigEndian.Uint32(d[0:4])
			p.Hook = Hook(d[6])
			gotHdr = true
		case attrMark:
			if len(d) < 4 {
				return gotHdr, errBadAttr
			}
			p.Mark = binary.BigEndian.Uint32(d)
		case attrInDev:
			if len(d) < 4 {
				return gotHdr, errBadAttr
			}
			p.InDev = binary.BigEndian.Uint32(d)
		case attrOutDev:
			if len(d) < 4 {
				return gotHdr, errBadAttr
			}
			p.OutDev = binary.BigEndian.Uint32(d)
		case attrPayload:
			p.Payload = d[:len(d):len(d)]
		}
		if a := align4(l); a < len(b) {
			b = b[a:]
		} else {
			b = nil
		}
	}
	if !gotHdr {
		return false, errNoPacketH
	}
	return true, nil
}

// parseError returns the errno of an NLMSG_ERROR body (0 for an ACK) and
// the sequence number of the request it answers.
func parseError(body []byte) (errno int32, seq uint32, ok bool) {
	if len(body) < 4+nlmsgHdrLen {
		return 0, 0, false
	}
	errno = -int32(binary.NativeEndian.Uint32(body[0:4]))
	seq = binary.NativeEndian.Uint32(body[4+8 : 4+12])
	return errno, seq, true
}

// putNlmsg writes an nlmsghdr + nfgenmsg (family AF_UNSPEC, version 0,
// res_id = queue) at b[0:20].
func putNlmsg(b []byte, length uint32, typ, flags uint16, seq uint32, queue uint16) {
	binary.NativeEndian.PutUint32(b[0:4], length)
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[12:16], 0)
	b[16] = unix.AF_UNSPEC
	b[17] = unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:20], queue)
}

func putAttrHdr(b []byte, dataLen int, typ uint16) {
	binary.NativeEndian.PutUint16(b[0:2], uint16(nlaHdrLen+dataLen))
	binary.NativeEndian.PutUint16(b[2:4], typ)
}

// putVerdict writes the headers of an NFQNL_MSG_VERDICT for packet id into
// b (at least verdictMaxHdr bytes) and returns how many bytes of b it used
// before the payload (hdr) and how many padding bytes must follow the
// payload (pad). With a payload the message is b[:hdr] + payload +
// zeros[:pad]; without, just b[:hdr]. Like mdlayher/netlink (and so
// go-nfqueue), nlmsg_len counts the padding after the last attribute.
// An accepted packet also carries a's mark and priority, if set, as
// NFQA_MARK and NFQA_PRIORITY before the payload.
func putVerdict(b []byte, queue uint16, id uint32, accept bool, payload []byte, withPayload bool, a Attrs) (hdr, pad int) {
	hdr = verdictHdrLen
	if accept && a.SetMark {
		putAttrHdr(b[hdr:], 4, attrMark)
		binary.BigEndian.PutUint32(b[hdr+nlaHdrLen:], a.Mark)
		hdr += attrU32Len
	}
	if accept && a.SetPriority {
		putAttrHdr(b[hdr:], 4, attrPriority)
		binary.BigEndian.PutUint32(b[hdr+nlaHdrLen:], a.Priority)
		hdr += attrU32Len
	}
	total := hdr
	if withPayload {
		hdr += nlaHdrLen
		pad = align4(len(payload)) - len(payload)
		total = hdr + len(payload) + pad
	}
	putNlmsg(b, uint32(total), typeVerdict, unix.NLM_F_REQUEST, 0, queue)
	putAttrHdr(b[20:], 8, attrVerdict)
	v := uint32(nfDrop)
	if accept {
		v = nfAccept
	}
	binary.BigEndian.PutUint32(b[24:28], v)
	binary.BigEndian.PutUint32(b[28:32], id)
	if withPayload {
		putAttrHdr(b[hdr-nlaHdrLen:], len(payload), attrPayload)
	}
	return hdr, pad
}

// appendConfig appends the three NFQNL_MSG_CONFIG messages Open sends (each
// with NLM_F_ACK, seq seq0..seq0+2): bind the queue, set copy mode and
// range, set the queue length. These are byte for byte what go-nfqueue sends
// for the same steps (it sends each in its own datagram; the kernel runs the
// messages of one datagram in order).
func appendConfig(b []byte, queue uint16, copyRange, maxLen uint32, seq0 uint32) []byte {
	const flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK
	var m [32]byte
	// NFQA_CFG_CMD: struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
	putNlmsg(m[:], 28, typeConfig, flags, seq0, queue)
	putAttrHdr(m[20:], 4, attrCfgCmd)
	m[24], m[25], m[26], m[27] = cmdBind, 0, 0, 0
	b = append(b, m[:28]...)
	// NFQA_CFG_PARAMS: struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } packed
	m = [32]byte{}
	putNlmsg(m[:], 32, typeConfig, flags, seq0+1, queue)
	putAttrHdr(m[20:], 5, attrCfgParams)
	binary.BigEndian.PutUint32(m[24:28], copyRange)
	m[28] = copyPacket
	b = append(b, m[:32]...)
	// NFQA_CFG_QUEUE_MAXLEN: be32
	m = [32]byte{}
	putNlmsg(m[:], 28, typeConfig, flags, seq0+2, queue)
	putAttrHdr(m[20:], 4, attrCfgMaxLen)
	binary.BigEndian.PutUint32(m[24:28], maxLen)
	return append(b, m[:28]...)
}

func putNlmsgHdr(b []byte, length uint32, typ, flags uint16, seq uint32) {
	binary.NativeEndian.PutUint32(b[0:4], length)
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[12:16], 0)
}

// batch collects verdict messages for one sendmsg: the netlink headers (and
// the zero padding after payloads) go to one preallocated buffer, payloads
// are referenced by iovec where they lie (normally the receive buffer).
type batch struct {
	hdr   []byte
	off   int          // bytes of hdr in use
	seg   int          // start of the hdr bytes not yet covered by iov
	iov   []unix.Iovec // capacity fixed at construction
	size  int          // datagram length so far
	n     int          // messages
	limit int          // largest datagram the socket accepts

	// Per-message layout, for sending with sendmmsg instead (one datagram
	// per verdict; kept to compare the two, see Queue.sendmmsg).
	ents []ent
	mmsg []unix.Mmsghdr
	miov []unix.Iovec
}

type ent struct {
	off, hdr, pad int
	payload       []byte
}

func newBatch(msgs, limit int) batch {
	return batch{
		hdr:   make([]byte, msgs*verdictMaxHdr),
		iov:   make([]unix.Iovec, 0, 2*msgs+1),
		limit: limit,
		ents:  make([]ent, 0, msgs),
		mmsg:  make([]unix.Mmsghdr, msgs),
		miov:  make([]unix.Iovec, 3*msgs),
	}
}

// fits reports whether one more verdict with a payload of payloadLen bytes
// fits; if not, the caller sends the batch first. An empty batch always
// takes one message (the kernel then judges its size).
func (b *batch) fits(payloadLen int) bool {
	if b.n == 0 {
		return true
	}
	return b.off+verdictMaxHdr <= len(b.hdr) && len(b.iov)+3 <= cap(b.iov) && len(b.ents) < cap(b.ents) &&
		b.size+verdictMaxHdr+payloadLen <= b.limit
}

func (b *batch) add(queue uint16, id uint32, accept bool, payload []byte, withPayload bool, a Attrs) {
	h, pad := putVerdict(b.hdr[b.off:], queue, id, accept, payload, withPayload, a)
	e := ent{off: b.off, hdr: h, pad: pad}
	if withPayload {
		e.payload = payload
	}
	b.ents = append(b.ents, e)
	b.off += h
	b.size += h
	if withPayload && len(payload) > 0 {
		b.closeSeg()
		b.iov = append(b.iov, unix.Iovec{Base: &payload[0]})
		b.iov[len(b.iov)-1].SetLen(len(payload))
		clear(b.hdr[b.off : b.off+pad])
		b.off += pad
		b.size += len(payload) + pad
	}
	b.n++
}

// closeSeg covers hdr[seg:off] by an iovec.
func (b *batch) closeSeg() {
	if b.off > b.seg {
		b.iov = append(b.iov, unix.Iovec{Base: &b.hdr[b.seg]})
		b.iov[len(b.iov)-1].SetLen(b.off - b.seg)
		b.seg = b.off
	}
}

// iovecs finishes the batch and returns its iovecs.
func (b *batch) iovecs() []unix.Iovec {
	b.closeSeg()
	return b.iov
}

// bytes appends the datagram the batch describes to dst (tests).
func (b *batch) bytes(dst []byte) []byte {
	for _, v := range b.iovecs() {
		dst = append(dst, unsafe.Slice(v.Base, v.Len)...)
	}
	return dst
}

// mmsgs describes the batch as one datagram per verdict, for sendmmsg.
func (b *batch) mmsgs() []unix.Mmsghdr {
	k := 0
	for i, e := range b.ents {
		first := k
		b.miov[k] = unix.Iovec{Base: &b.hdr[e.off]}
		b.miov[k].SetLen(e.hdr)
		k++
		if len(e.payload) > 0 {
			b.miov[k] = unix.Iovec{Base: &e.payload[0]}
			b.miov[k].SetLen(len(e.payload))
			k++
			if e.pad > 0 {
				b.miov[k] = unix.Iovec{Base: &b.hdr[e.off+e.hdr]}
				b.miov[k].SetLen(e.pad)
				k++
			}
		}
		b.mmsg[i] = unix.Mmsghdr{}
		b.mmsg[i].Hdr.Iov = &b.miov[first]
		b.mmsg[i].Hdr.SetIovlen(k - first)
	}
	return b.mmsg[:len(b.ents)]
}

// reset empties the batch and drops its references to payloads.
func (b *batch) reset() {
	clear(b.iov)
	b.iov = b.iov[:0]
	clear(b.miov[:min(3*len(b.ents), len(b.miov))])
	clear(b.ents)
	b.ents = b.ents[:0]
	b.off, b.seg, b.size, b.n = 0, 0, 0, 0
}
