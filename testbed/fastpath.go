package testbed

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
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
