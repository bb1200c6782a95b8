package pptp

import "pptpgw/internal/pkt"

// IPConn is what PumpTUN needs of a client: Client and PTYClient implement it.
type IPConn interface {
	SendIP(pkt []byte) error
	OnIP(f func(pkt []byte))
}

// PacketDevice is a TUN-like device (tun.Device implements it).
type PacketDevice interface {
	ReadPacket(b []byte) (int, error)
	WritePacket(b []byte) error
}

// PumpTUN connects a client's tunnel to a local TUN device, so the kernel's own TCP/IP
// stack (ping, TCP, iperf3) can use the session: packets the kernel routes into dev
// go through c; packets from c are written to dev. It returns when reading dev fails
// (close dev to stop it). MSS is clamped to mss on SYNs in both directions (0: off).
//
// When dev can merge packets (a QueueNet, like tun.Device) and c is a *Client, the
// packets of each received GRE batch are queued and flushed after the batch, as the
// server does: TCP segments reach the kernel as GSO packets.
func PumpTUN(dev PacketDevice, c IPConn, mss uint16) error {
	write := dev.WritePacket
	if q, ok := dev.(QueueNet); ok {
		if cl, ok := c.(*Client); ok {
			defer cl.mux.AddFlush(func() { _ = q.Flush() })()
			write = q.QueuePacket
		}
	}
	c.OnIP(func(pkt []byte) {
		if mss != 0 {
			ClampMSS(pkt, mss)
		}
		_ = write(pkt)
	})
	buf := make([]byte, 65536)
	for {
		n, err := dev.ReadPacket(buf)
		if err != nil {
			return err
		}
		if !pkt.IPv4(buf[:n]).IsVersion4() {
			continue // IPv6 router solicitations and the like
		}
		if mss != 0 {
			ClampMSS(buf[:n], mss)
		}
		_ = c.SendIP(buf[:n])
	}
}
