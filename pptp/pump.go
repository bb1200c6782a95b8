package pptp

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
func PumpTUN(dev PacketDevice, c IPConn, mss uint16) error {
	c.OnIP(func(pkt []byte) {
		if mss != 0 {
			ClampMSS(pkt, mss)
		}
		_ = dev.WritePacket(pkt)
	})
	buf := make([]byte, 65536)
	for {
		n, err := dev.ReadPacket(buf)
		if err != nil {
			return err
		}
		if n < 20 || buf[0]>>4 != 4 {
			continue // IPv6 router solicitations and the like
		}
		if mss != 0 {
			ClampMSS(buf[:n], mss)
		}
		_ = c.SendIP(buf[:n])
	}
}
