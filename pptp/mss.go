package pptp

import (
	"encoding/binary"
	"math/bits"

	"pptpgw/internal/pkt"
)

// TCP option kinds (RFC 793 §3.1) ClampMSS walks.
const (
	tcpOptEnd    = 0
	tcpOptNOP    = 1
	tcpOptMSS    = 2
	tcpOptMSSLen = 4
)

// ClampMSS lowers the MSS option of a TCP SYN inside the IPv4 packet b to mss, fixing
// the TCP checksum incrementally (RFC 1624). It reports whether it changed the packet.
// Anything that is not an IPv4 TCP SYN (a first fragment counts when it holds the whole
// TCP header) with an MSS option above mss is left alone; malformed packets are left
// alone too.
func ClampMSS(b []byte, mss uint16) bool {
	ip := pkt.IPv4(b)
	if !ip.IsValid(len(b)) || ip.Protocol() != pkt.IPv4ProtocolTCP || ip.FragmentOffset() != 0 {
		return false
	}
	tcp := pkt.TCP(ip.Payload())
	if !tcp.IsValid() || tcp.Flags()&pkt.TCPFlagSyn == 0 {
		return false
	}
	opts := tcp[pkt.TCPMinimumSize:tcp.DataOffset()]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case tcpOptEnd:
			return false
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		if opts[i] == tcpOptMSS && opts[i+1] == tcpOptMSSLen {
			v := opts[i+2 : i+4]
			old := binary.BigEndian.Uint16(v)
			if old <= mss {
				return false
			}
			binary.BigEndian.PutUint16(v, mss)
			o, n := old, mss
			if i%2 == 1 { // the field straddles two checksum words: it counts byte-swapped
				o, n = bits.ReverseBytes16(o), bits.ReverseBytes16(n)
			}
			tcp.SetChecksum(pkt.Update16(tcp.Checksum(), o, n))
			return true
		}
		i += int(opts[i+1])
	}
	return false
}
