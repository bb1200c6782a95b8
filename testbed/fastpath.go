package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"pptpgw/pptp/wire"
)

// GREPathEnv, when set (kernel, userspace or auto), makes StartGateway run
// every gateway with `--gre-path VALUE` unless the caller passed one: the
// whole gateway suite runs once per GRE path (`PPTPGW_TEST_GRE_PATH=userspace
// go test ./testbed`).
const GREPathEnv = "PPTPGW_TEST_GRE_PATH"

func withGREPath(args []string) []string {
	v := os.Getenv(GREPathEnv)
	if v == "" || slices.Contains(args, "--gre-path") || slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--gre-path=")
	}) {
		return args
	}
	return append(args, "--gre-path", v)
}

// GREMapLen returns the number of elements in the gateway table's fast-path
// map name (gre_out or gre_in), from `nft -j list map`.
func (t *Topology) GREMapLen(ctx context.Context, table, name string) (int, error) {
	out, err := t.GW.Output(ctx, "nft", "list", "map", "ip", table, name)
	if err != nil {
		return 0, fmt.Errorf("nft list map %s: %v: %s", name, err, out)
	}
	s := string(out)
	i := strings.Index(s, "elements = {")
	if i < 0 {
		return 0, nil
	}
	s = s[i:]
	if j := strings.Index(s, "}"); j >= 0 {
		s = s[:j]
	}
	return strings.Count(s, "counter packets"), nil
}

// SendGREUntil sends enhanced GRE from n (from -> to) with payloads of size
// bytes, the keys in turn, as fast as one raw socket goes, until deadline.
// It returns how many packets it sent (for `pptpgw bench`).
func SendGREUntil(n *NS, from, to netip.Addr, keys []uint16, size int, deadline time.Time) (uint64, error) {
	g, err := n.ListenGRE(from)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	dst := &net.IPAddr{IP: to.AsSlice()}
	payload := make([]byte, size)
	var buf []byte
	var sent uint64
	for i := 0; ; i++ {
		if i%256 == 0 && time.Now().After(deadline) {
			return sent, nil
		}
		h := wire.GREHeader{CallID: keys[i%len(keys)], PayloadLen: uint16(size), HasSeq: true, Seq: uint32(i)}
		buf = append(h.Append(buf[:0]), payload...)
		if _, err := g.WriteToIP(buf, dst); err != nil {
			if errors.Is(err, syscall.ENOBUFS) {
				continue
			}
			return sent, err
		}
		sent++
	}
}
