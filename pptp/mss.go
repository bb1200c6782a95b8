package pptp

import (
	"encoding/binary"
	"math/bits"
)

// ClampMSS lowers the MSS option of a TCP SYN inside the IPv4 packet pkt to mss, fixing
// the TCP checksum incrementally (RFC 1624). It reports whether it changed the packet.
// Anything that is not an unfragmented IPv4 TCP SYN with an MSS option above mss is left
// alone; malformed packets are left alone too.
//
//	IPv4: version/IHL @0, protocol @9, fragment offset @6, src @12, dst @16
//	TCP:  data offset @12 (high nibble), flags @13 (SYN 0x02), checksum @16, options @20
func ClampMSS(pkt []byte, mss uint16) bool {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != 6 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 { // not a first fragment
		return false
	}
	tot := int(binary.BigEndian.Uint16(pkt[2:]))
	if tot > len(pkt) || tot < ihl+20 {
		return false
	}
	tcp := pkt[ihl:tot]
	if tcp[13]&0x02 == 0 {
		return false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return false
	}
	opts := tcp[20:doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of options
			return false
		case 1: // NOP
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		if opts[i] == 2 && opts[i+1] == 4 {
			old := binary.BigEndian.Uint16(opts[i+2:])
			if old <= mss {
				return false
			}
			binary.BigEndian.PutUint16(opts[i+2:], mss)
			o, n := old, mss
			if i%2 == 1 { // the field straddles two checksum words: it counts byte-swapped
				o, n = bits.ReverseBytes16(o), bits.ReverseBytes16(n)
			}
			// HC' = ~(~HC + ~m + m'), RFC 1624 eqn. 3.
			sum := uint32(^binary.BigEndian.Uint16(tcp[16:])) + uint32(^o) + uint32(n)
			sum = (sum & 0xffff) + (sum >> 16)
			sum = (sum & 0xffff) + (sum >> 16)
			binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))
			return true
		}
		i += int(opts[i+1])
	}
	return false
}
