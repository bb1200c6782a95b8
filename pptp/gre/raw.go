package gre

import (
	"net"
	"net/netip"
)

// rawConn is a raw IPPROTO_GRE (47) socket. The kernel strips the IPv4 header on
// receive and builds it on send. Every raw GRE socket of the namespace sees every GRE
// packet addressed to the host, so the Mux drops those for calls it does not know.
type rawConn struct{ c *net.IPConn }

// ListenRaw opens a raw GRE socket bound to laddr (the zero Addr = any). Needs
// CAP_NET_RAW.
func ListenRaw(laddr netip.Addr) (PacketConn, error) {
	var a *net.IPAddr
	if laddr.IsValid() {
		a = &net.IPAddr{IP: laddr.AsSlice()}
	}
	c, err := net.ListenIP("ip4:gre", a)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return &rawConn{c: c}, nil
}

func (r *rawConn) ReadPacket(b []byte) (int, netip.Addr, error) {
	n, addr, err := r.c.ReadFromIP(b)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	ip, _ := netip.AddrFromSlice(addr.IP)
	return n, ip.Unmap(), nil
}

func (r *rawConn) WritePacket(b []byte, dst netip.Addr) error {
	_, err := r.c.WriteToIP(b, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

func (r *rawConn) Close() error { return r.c.Close() }
