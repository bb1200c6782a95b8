package rules

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Apply sends one batch that adds no table and deletes none, and whose
// rules are byte for byte those Install sends for the same plan (checked
// against nft(8) by the golden tests); it refuses a new table name or
// queue number.
func TestApplyBatch(t *testing.T) {
	for _, impl := range []QueueImpl{QueueXT, QueueNative} {
		plans := goldenPlans(impl)
		want := installFake(t, plans[1])
		want = want[:len(want)-1] // ReduceToFailsafe's rule

		var msgs []netlink.Message
		c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
			if len(req) > 0 && req[0].Header.Flags&netlink.Dump != 0 {
				return nil, nil
			}
			msgs = append(msgs, req...)
			return req, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		in := &Installed{Plan: plans[0], QueueImpl: impl, conn: c}
		msgs = nil
		if err := in.Apply(plans[1]); err != nil {
			t.Fatal(err)
		}
		// One transaction: BATCH_BEGIN, the changes, BATCH_END.
		if n := len(msgs); n < 3 || msgs[0].Header.Type != unix.NFNL_MSG_BATCH_BEGIN ||
			msgs[n-1].Header.Type != unix.NFNL_MSG_BATCH_END {
			t.Fatalf("%s: Apply did not send one batch (%d messages)", impl, n)
		}
		var rules []ruleMsg
		for _, m := range msgs[1 : len(msgs)-1] {
			if m.Header.Type == unix.NFNL_MSG_BATCH_BEGIN || m.Header.Type == unix.NFNL_MSG_BATCH_END {
				t.Fatalf("%s: Apply sent more than one batch", impl)
			}
			switch m.Header.Type & 0xff {
			case unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN:
				t.Errorf("%s: Apply deletes (message type %d): it would unregister hooks and drop queued packets", impl, m.Header.Type&0xff)
			case unix.NFT_MSG_NEWRULE:
				rules = append(rules, decodeRule(t, m.Data))
			}
		}
		if len(rules) != len(want) {
			t.Fatalf("%s: %d rules, want %d", impl, len(rules), len(want))
		}
		for i := range rules {
			if !bytes.Equal(rules[i].body, want[i].body) {
				t.Errorf("%s: rule %d differs from Install's:\n got % x\nwant % x", impl, i, rules[i].body, want[i].body)
			}
		}
		if in.Plan.MSS != plans[1].MSS || in.Plan.QueueImpl != impl {
			t.Errorf("%s: Installed.Plan not updated: %+v", impl, in.Plan)
		}
		for _, bad := range []Plan{{Table: "other", WAN: "wan0", Queue: 47}, {Table: "pptpgw", WAN: "wan0", Queue: 48}} {
			msgs = nil
			if err := in.Apply(bad); err == nil || len(msgs) != 0 {
				t.Errorf("%s: Apply(%s, queue %d) = %v after %d batches; want refused before any", impl, bad.Table, bad.Queue, err, len(msgs))
			}
		}
	}
}

func TestPlannedObjects(t *testing.T) {
	p := goldenPlans(QueueXT)
	for i, want := range [][]string{
		{ChainRawPrerouting, ChainRawOutput, ChainNATPrerouting, ChainQueuePrerouting, ChainQueuePostrouting, ChainNATPostrouting},
		{ChainRawPrerouting, ChainRawOutput, ChainQueuePrerouting, ChainQueuePostrouting, ChainNATPostrouting},
	} {
		po, err := planned(p[i], QueueXT, addRules)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for n := range po.chains {
			got = append(got, n)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) || len(po.sets) != 0 {
			t.Errorf("plan %d: chains %v sets %v, want %v and none", i, got, po.sets, want)
		}
		if c := po.chains[ChainQueuePostrouting]; !c.base || c.hook != uint32(*nftables.ChainHookPostrouting) ||
			c.priority != PriorityQueue || c.typ != "filter" {
			t.Errorf("plan %d: %s recorded as %+v", i, ChainQueuePostrouting, c)
		}
	}
}

func TestStateFileKey(t *testing.T) {
	if c := Default(); c.StateFile != DefaultStateFile {
		t.Fatalf("default state_file %q", c.StateFile)
	}
	for in, bad := range map[string]bool{
		`""`: false, "/var/lib/x/state.json": false, "relative.json": true, "/var/lib/x/": true,
	} {
		c, err := Parse([]byte("wan: w0\nlan: [l0]\nstate_file: " + in + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if (err != nil) != bad || (bad && !strings.Contains(err.Error(), "line 3: state_file")) {
			t.Errorf("state_file %s: %v", in, err)
		}
	}
	doc, _ := os.ReadFile("CONFIG.md")
	for _, s := range []string{"`state_file`", "`" + DefaultStateFile + "`", "## Reload", "## Restart"} {
		if !strings.Contains(string(doc), s) {
			t.Errorf("CONFIG.md does not mention %s", s)
		}
	}
}

// FixedChanges names each fixed key that changed, with the new file's
// line, and nothing else.
func TestFixedChanges(t *testing.T) {
	cur, _ := Parse([]byte("wan: w0\nlan: [l0]\n"))
	next, _ := Parse([]byte("wan: w0\nlan: [l0, l1]\nstrict: true\ntable: t2\nqueue: 9\nqueue_len: 10\n" +
		"public_address: 203.0.113.9\nadmin_socket: /run/x.sock\nmss_clamp: off\n"))
	err := cur.FixedChanges(next)
	if err == nil {
		t.Fatal("no fixed change found")
	}
	for _, want := range []string{"line 4: table: cannot change", "line 5: queue: cannot change", "line 6: queue_len",
		"line 7: public_address", "line 8: admin_socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "lan") || strings.Contains(err.Error(), "strict") || strings.Contains(err.Error(), "wan") {
		t.Errorf("%q names a key that may change", err)
	}
	same, _ := Parse([]byte("wan: w0\nlan: [l9]\nstrict: true\n"))
	if err := cur.FixedChanges(same); err != nil {
		t.Errorf("no fixed key changed, got %v", err)
	}
}
