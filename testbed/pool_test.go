package testbed_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/fakeppp"
	"pptpgw/testbed/testbedtest"
)

// Server pools (issue 11) in the testbed: two PPTP servers inside
// (ClientIP(0), ClientIP(1)) published as one pool on the public address,
// clients outside (AddOutside).

// poolYAML is the gateway's configuration: one pool of the two LAN hosts,
// fast probes so that a stopped member is noticed within seconds.
func poolYAML(topo *Topology, balance string) string {
	return fmt.Sprintf(`# testbed: a pool of two servers
wan: %snone0
lan: [%snone1]
forwards:
  - port: 1723
    to: [%s, %s]
    balance: %s
    health: {interval: 300ms, timeout: 250ms, probe: control, fall: 2, rise: 2}
`, topo.Prefix, topo.Prefix, ClientIP(0), ClientIP(1), balance)
}

// callsByMember groups the published calls by member.
func callsByMember(t *testing.T, rep nat.CallsReply) map[netip.Addr][]nat.CallInfo {
	t.Helper()
	out := map[netip.Addr][]nat.CallInfo{}
	for _, c := range rep.Calls {
		if c.Direction != nat.DirectionPublished || !c.Member.IsValid() || c.Member != c.InsideIP {
			t.Errorf("call %+v: want direction published with its member as inside address", c)
		}
		out[c.Member] = append(out[c.Member], c)
	}
	return out
}

// logMemberIDs logs the call IDs each member handed out and returns the
// IDs both members used.
func logMemberIDs(t *testing.T, by map[netip.Addr][]nat.CallInfo) []uint16 {
	t.Helper()
	ids := map[uint16]int{}
	for m, cs := range by {
		var own []string
		for _, c := range cs {
			own = append(own, fmt.Sprintf("%#04x->outside %#04x (client %s)", c.InsideCallID, c.OutsideCallID, c.PeerIP))
			ids[c.InsideCallID]++
		}
		sort.Strings(own)
		t.Logf("member %s: %d calls: %s", m, len(cs), strings.Join(own, ", "))
	}
	var shared []uint16
	for id, n := range ids {
		if n > 1 {
			shared = append(shared, id)
		}
	}
	return shared
}

// pacedRW slows a client's writes so that its frames span a few seconds.
type pacedRW struct {
	io.ReadWriter
	d time.Duration
}

func (p pacedRW) Write(b []byte) (int, error) {
	time.Sleep(p.d)
	return p.ReadWriter.Write(b)
}

// waitMember polls `pptpgw pool --json` until member m has state want.
func waitMember(t *testing.T, ctx context.Context, gw *Gateway, m netip.Addr, want nat.MemberState, d time.Duration) nat.MemberInfo {
	t.Helper()
	deadline := time.Now().Add(d)
	var last nat.MemberInfo
	for {
		r, err := gw.Pools(ctx)
		if err != nil {
			t.Fatalf("pptpgw pool: %v", err)
		}
		for _, p := range r.Pools {
			for _, mi := range p.Members {
				if mi.Addr == m {
					last = mi
				}
			}
		}
		if last.State == want {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("member %s not %s after %s: %+v", m, want, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPoolPPTPD: two pptpd servers (stand-in pppd echoing frames) behind
// the gateway as one pool, 8 pptp-linux clients outside calling the public
// address at once. Every frame round-trips to the right client (no
// cross-talk), the calls are spread over both members (least-calls), each
// call's outside ID is distinct, and the IDs each member handed out are
// logged. Then member 0's pptpd is stopped while 4 paced sessions run: the
// sessions on member 1 complete, member 0 is marked down, and 4 new clients
// all reach member 1.
func TestPoolPPTPD(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	testbedtest.NeedTools(t, "pptpd", "pptp")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 2})
	outs, err := topo.AddOutside(12)
	if err != nil {
		t.Fatal(err)
	}
	var servers []*PPTPD
	for i := range 2 {
		d, err := topo.StartPPTPD(ctx, PPTPDConfig{NS: topo.Clients[i], Lifetime: 60})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, d)
	}
	m0, m1 := ClientIP(0), ClientIP(1)

	// Baseline, same run: Linux's PPTP helper with DNAT to the members in
	// turn. Its outcome is logged (README "Scale-out"), not asserted.
	const frames = 20
	if err := topo.KernelHelperPool(ctx, []netip.Addr{m0, m1}); err != nil {
		t.Fatal(err)
	}
	kres := RunPPTPClients(ctx, topo, outs[:8], GWWANIP, frames, nil)
	complete := 0
	for _, s := range kres.Summaries {
		if s.OK() {
			complete++
		}
	}
	t.Logf("kernel helper + DNAT to 2 members: %d of 8 clients round-tripped all frames without cross-talk (ok=%v)\n%s",
		complete, kres.OK(), kres)
	if err := topo.KernelReset(ctx); err != nil {
		t.Fatal(err)
	}

	gw := startGatewayConfig(t, ctx, topo, bin, poolYAML(topo, "least-calls"))
	waitMember(t, ctx, gw, m0, nat.MemberUp, 10*time.Second)

	// Phase 1: 8 clients at once.
	var rep nat.CallsReply
	var repErr error
	var table string
	res := RunPPTPClients(ctx, topo, outs[:8], GWWANIP, frames, func() {
		rep, repErr = gw.Calls(ctx)
		table, _ = gw.CallsTable(ctx)
	})
	t.Logf("8 clients:\n%s", res)
	if !res.OK() {
		t.Fatalf("8 pptp-linux clients through the pool failed:\n%s\ngateway log:\n%s", res, gw.Log())
	}
	if repErr != nil {
		t.Fatal(repErr)
	}
	t.Logf("pptpgw calls:\n%s", table)
	if len(rep.Calls) != 8 || DistinctOutsideIDs(rep.Calls) != 8 {
		t.Fatalf("%d calls, %d distinct outside IDs, want 8 and 8:%s", len(rep.Calls), DistinctOutsideIDs(rep.Calls), fmtCalls(rep))
	}
	checkCallCounters(t, rep, frames)
	by := callsByMember(t, rep)
	if len(by[m0]) < 2 || len(by[m1]) < 2 {
		t.Errorf("least-calls spread 8 clients %d/%d over the members, want at least 2 each", len(by[m0]), len(by[m1]))
	}
	shared := logMemberIDs(t, by)
	t.Logf("call IDs both pptpd members handed out: %#04x", shared)
	if len(shared) == 0 {
		t.Errorf("test precondition: the two pptpd members handed out no call ID in common")
	}
	if tbl, err := gw.PoolTable(ctx); err == nil {
		t.Logf("pptpgw pool:\n%s", tbl)
	}

	// Phase 2: paced sessions on outs[8:12]; member 0 stops under them.
	long := outs[8:12]
	pcs := make([]*PPTPClient, len(long))
	for i, n := range long {
		if pcs[i], err = topo.StartPPTPClient(ctx, n, GWWANIP); err != nil {
			t.Fatal(err)
		}
	}
	sums := make([]fakeppp.Summary, len(long))
	var wg sync.WaitGroup
	for i, c := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[i] = fakeppp.Client(ctx, pacedRW{c.Pty, 40 * time.Millisecond},
				fakeppp.ClientConfig{Tag: c.NS.Name, Frames: 150, Window: 2, Timeout: 40 * time.Second})
		}()
	}
	// Wait until all four calls are up, then note their members.
	var onMember map[netip.Addr]netip.Addr // client -> member
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := gw.Calls(ctx)
		if err != nil {
			t.Fatal(err)
		}
		onMember = map[netip.Addr]netip.Addr{}
		for _, c := range r.Calls {
			if c.PktsIn > 0 && c.PktsOut > 0 {
				onMember[c.PeerIP] = c.Member
			}
		}
		if len(onMember) == len(long) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("paced sessions not all up: %s", fmtCalls(r))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("paced sessions: client -> member %v", onMember)
	survivors := 0
	for _, m := range onMember {
		if m == m1 {
			survivors++
		}
	}
	if survivors == 0 || survivors == len(long) {
		t.Fatalf("paced sessions not on both members: %v", onMember)
	}
	stopped := time.Now()
	if err := servers[0].Proc.Stop(2 * time.Second); err != nil {
		t.Logf("pptpd on member 0 stopped: %v", err)
	}
	mi := waitMember(t, ctx, gw, m0, nat.MemberDown, 15*time.Second)
	t.Logf("member %s marked down %s after its pptpd stopped: %+v", m0, time.Since(stopped).Round(10*time.Millisecond), mi)
	wg.Wait()
	for i, c := range pcs {
		s := sums[i]
		m := onMember[c.NS.IP]
		t.Logf("paced %s on %s: %s", c.NS.Name, m, s.JSON())
		if m == m1 && !s.OK() {
			t.Errorf("session of %s on the member still up did not continue: %s", c.NS.Name, s.JSON())
		}
		c.Close()
	}

	// New clients all go to member 1.
	var rep2 nat.CallsReply
	res = RunPPTPClients(ctx, topo, outs[:4], GWWANIP, frames, func() { rep2, repErr = gw.Calls(ctx) })
	if !res.OK() {
		t.Fatalf("4 new clients with member 0 down failed:\n%s\ngateway log:\n%s", res, gw.Log())
	}
	if repErr != nil {
		t.Fatal(repErr)
	}
	n := 0
	for _, c := range rep2.Calls {
		if c.PeerIP.As4()[3] < 14 && c.PeerIP.As4()[3] >= 10 { // outs[0:4]
			n++
			if c.Member != m1 {
				t.Errorf("new call of %s went to %s, member 0 is down", c.PeerIP, c.Member)
			}
		}
	}
	if n != 4 {
		t.Errorf("%d new calls listed, want 4:%s", n, fmtCalls(rep2))
	}
	if tbl, err := gw.PoolTable(ctx); err == nil {
		t.Logf("pptpgw pool:\n%s", tbl)
	}
	if t.Failed() {
		t.Logf("gateway log:\n%s", gw.Log())
	}
}

// TestPoolHairpin: LAN hosts on the same bridge as the two pptpd members
// call the public address (NAT loopback). Each reaches a member, every
// frame round-trips without cross-talk, and the calls are listed as
// hairpin calls with their member; an outside client works at the same
// time.
func TestPoolHairpin(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	testbedtest.NeedTools(t, "pptpd", "pptp")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 5})
	outs, err := topo.AddOutside(1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := topo.StartPPTPD(ctx, PPTPDConfig{NS: topo.Clients[i], Lifetime: 60}); err != nil {
			t.Fatal(err)
		}
	}
	gw := startGatewayConfig(t, ctx, topo, bin, poolYAML(topo, "least-calls"))
	waitMember(t, ctx, gw, ClientIP(0), nat.MemberUp, 10*time.Second)
	const frames = 20
	var rep nat.CallsReply
	var repErr error
	var table string
	clients := append([]*NS{outs[0]}, topo.Clients[2:5]...)
	res := RunPPTPClients(ctx, topo, clients, GWWANIP, frames, func() {
		rep, repErr = gw.Calls(ctx)
		table, _ = gw.CallsTable(ctx)
	})
	t.Logf("1 outside + 3 hairpin clients:\n%s", res)
	if !res.OK() {
		t.Fatalf("clients failed:\n%s\ngateway log:\n%s\nconntrack:\n%s", res, gw.Log(), topo.Conntrack())
	}
	if repErr != nil {
		t.Fatal(repErr)
	}
	t.Logf("pptpgw calls:\n%s", table)
	hairpin := 0
	for _, c := range rep.Calls {
		switch {
		case c.Direction == nat.DirectionHairpin:
			hairpin++
			if c.Member != c.PeerIP || (c.Member != ClientIP(0) && c.Member != ClientIP(1)) || c.PktsIn == 0 || c.PktsOut == 0 {
				t.Errorf("hairpin call %+v: want a member as peer, GRE both ways", c)
			}
		case c.Direction == nat.DirectionPublished:
			if c.PeerIP != outs[0].IP {
				t.Errorf("published call %+v: not the outside client's", c)
			}
		default:
			t.Errorf("call %+v: direction %q", c, c.Direction)
		}
	}
	if hairpin != 3 || len(rep.Calls) != 4 {
		t.Errorf("%d calls, %d of them hairpin; want 4 and 3:%s", len(rep.Calls), hairpin, fmtCalls(rep))
	}
	if n := testbedtest.Counter(t, rep.Counters, "pool_1723_"+ClientIP(0).String()+"_hairpin_picks") +
		testbedtest.Counter(t, rep.Counters, "pool_1723_"+ClientIP(1).String()+"_hairpin_picks"); n < 3 {
		t.Errorf("hairpin picks %d, want >= 3", n)
	}
}
