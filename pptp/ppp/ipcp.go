package ppp

import "net/netip"

// IPCP configuration options (RFC 1332 §3, RFC 1877).
const (
	ipcpAddrs    = 1 // IP-Addresses (deprecated)
	ipcpCompress = 2
	ipcpAddr     = 3
	ipcpDNS1     = 129
	ipcpNBNS1    = 130
	ipcpDNS2     = 131
	ipcpNBNS2    = 132
)

type ipcp struct {
	f fsm
	s *Session
	// our request
	wantAddr netip.Addr // server: LocalIP; client: 0.0.0.0 then the Nak'd address
	sendAddr bool
	askDNS   [2]bool // client
	dns      [2]netip.Addr
	// results
	peerAddr netip.Addr // address the peer uses (server: assigned to the client)
	assigned netip.Addr // server: address from AllocIP for this session
}

func (c *ipcp) init(s *Session) {
	c.s = s
	c.f = fsm{s: s, proto: ProtoIPCP, name: "IPCP", h: c}
}

func addr4(v []byte) netip.Addr { return netip.AddrFrom4([4]byte(v)) }

func appendAddrOpt(b []byte, typ byte, a netip.Addr) []byte {
	v := a.As4()
	return appendOpt(b, typ, v[:]...)
}

func (c *ipcp) resetCI() {
	cfg := &c.s.cfg
	if cfg.Role == Server {
		c.wantAddr = cfg.LocalIP
		c.sendAddr = cfg.LocalIP.Is4()
		return
	}
	c.wantAddr = netip.IPv4Unspecified()
	c.sendAddr = true
	c.askDNS = [2]bool{true, true}
	c.dns = [2]netip.Addr{netip.IPv4Unspecified(), netip.IPv4Unspecified()}
	c.peerAddr = netip.Addr{}
}

func (c *ipcp) addCI(b []byte) []byte {
	if c.sendAddr {
		b = appendAddrOpt(b, ipcpAddr, c.wantAddr)
	}
	if c.askDNS[0] {
		b = appendAddrOpt(b, ipcpDNS1, c.dns[0])
	}
	if c.askDNS[1] {
		b = appendAddrOpt(b, ipcpDNS2, c.dns[1])
	}
	return b
}

func (c *ipcp) nakCI(opts []byte, asReject bool) bool {
	if asReject {
		return c.rejCI(opts)
	}
	it := optIter{b: opts}
	for {
		typ, val, _, ok := it.next()
		if !ok {
			break
		}
		if len(val) != 4 {
			continue
		}
		a := addr4(val)
		switch typ {
		case ipcpAddr:
			// The server keeps its own address; the client takes what it is given.
			if c.s.cfg.Role == Client && c.sendAddr && !a.IsUnspecified() {
				c.wantAddr = a
			}
		case ipcpDNS1:
			if c.askDNS[0] {
				c.dns[0] = a
			}
		case ipcpDNS2:
			if c.askDNS[1] {
				c.dns[1] = a
			}
		}
	}
	return !it.err
}

func (c *ipcp) rejCI(opts []byte) bool {
	it := optIter{b: opts}
	for {
		typ, _, _, ok := it.next()
		if !ok {
			break
		}
		switch typ {
		case ipcpAddr:
			if c.s.cfg.Role == Client && c.sendAddr {
				c.s.closeLater(ReasonNCPFailed, "server refuses to assign an IP address")
			}
			c.sendAddr = false
		case ipcpDNS1:
			c.askDNS[0] = false
		case ipcpDNS2:
			c.askDNS[1] = false
		}
	}
	return !it.err
}

func (c *ipcp) reqCI(opts, reply []byte, rejectOnly bool) (byte, []byte) {
	server := c.s.cfg.Role == Server
	rej := reply
	nak := c.s.nakBuf[:0]
	var peer netip.Addr
	sawAddr := false
	it := optIter{b: opts}
	for {
		typ, val, whole, ok := it.next()
		if !ok {
			break
		}
		switch typ {
		case ipcpAddr:
			if len(val) != 4 {
				rej = append(rej, whole...)
				continue
			}
			sawAddr = true
			a := addr4(val)
			if !server {
				peer = a // the server's own address; anything goes
				continue
			}
			if a == c.assigned {
				peer = a
				continue
			}
			nak = appendAddrOpt(nak, ipcpAddr, c.assigned)
		case ipcpDNS1, ipcpDNS2:
			i := 0
			if typ == ipcpDNS2 {
				i = 1
			}
			if !server || len(val) != 4 || i >= len(c.s.cfg.DNS) || !c.s.cfg.DNS[i].Is4() || rejectOnly {
				rej = append(rej, whole...)
				continue
			}
			if addr4(val) != c.s.cfg.DNS[i] {
				nak = appendAddrOpt(nak, typ, c.s.cfg.DNS[i])
			}
		default: // IP-Addresses, VJ compression, NBNS, ...
			rej = append(rej, whole...)
		}
	}
	if server && !sawAddr && !rejectOnly && len(rej) == 0 {
		// RFC 1332 §3.3: the peer did not ask for an address; tell it which to use.
		nak = appendAddrOpt(nak, ipcpAddr, c.assigned)
	}
	c.s.nakBuf = nak[:0]
	if len(rej) > 0 {
		return codeConfRej, rej
	}
	if len(nak) > 0 {
		return codeConfNak, append(rej, nak...)
	}
	if server {
		c.peerAddr = c.assigned
	} else {
		c.peerAddr = peer
	}
	return codeConfAck, rej
}

func (c *ipcp) up() {
	if c.s.cfg.Role == Client && (!c.wantAddr.Is4() || c.wantAddr.IsUnspecified()) {
		c.s.closeLater(ReasonNCPFailed, "no IP address assigned")
		return
	}
	c.s.networkChanged()
}

func (c *ipcp) down() { c.s.networkChanged() }

func (c *ipcp) finished() { c.s.closeLater(ReasonNCPFailed, "IPCP failed") }

func (c *ipcp) extCode(code, id byte, data []byte) bool { return false }

// localAddr is our address on the link.
func (c *ipcp) localAddr() netip.Addr {
	if c.s.cfg.Role == Server {
		return c.s.cfg.LocalIP
	}
	return c.wantAddr
}
