package testbed

import (
	"context"
	"fmt"
	"strings"

	"pptpgw/rules"
)

// KernelTable is the nftables table (family ip) the kernel baselines use in
// the gateway namespace.
const KernelTable = "testbed_kernel"

// kernelRuleset renders the reference ruleset: masquerade on the WAN, and
// with helper, Linux's own PPTP conntrack/NAT helper (nf_conntrack_pptp +
// nf_nat_pptp) assigned to TCP 1723 connections in prerouting. The empty nat
// prerouting chain registers the NAT hook there so GRE replies of helper
// expectations get de-NATed.
func kernelRuleset(wan string, helper bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", KernelTable)
	if helper {
		b.WriteString("\tct helper pptp-h {\n\t\ttype \"pptp\" protocol tcp\n\t\tl3proto ip\n\t}\n")
		b.WriteString("\tchain pre {\n\t\ttype filter hook prerouting priority filter; policy accept;\n")
		b.WriteString("\t\ttcp dport 1723 ct helper set \"pptp-h\"\n\t}\n")
	}
	b.WriteString("\tchain natpre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n")
	fmt.Fprintf(&b, "\tchain natpost {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname %q masquerade\n\t}\n", wan)
	b.WriteString("}\n")
	return b.String()
}

// KernelHelper programs the gateway namespace with Linux's own PPTP helper
// (ct helper "pptp") plus masquerade on the WAN: the baseline pptpgw is
// compared against. It replaces an earlier kernel baseline table.
func (t *Topology) KernelHelper(ctx context.Context) error {
	return t.loadKernel(ctx, true)
}

// KernelMasquerade programs plain masquerade on the WAN (no PPTP helper): the
// baseline for bulk TCP throughput.
func (t *Topology) KernelMasquerade(ctx context.Context) error {
	return t.loadKernel(ctx, false)
}

// KernelReset removes the baseline table from the gateway namespace.
func (t *Topology) KernelReset(ctx context.Context) error {
	return t.deleteTable(ctx, KernelTable)
}

// deleteTable deletes table `ip name` in the gateway namespace if it is there.
func (t *Topology) deleteTable(ctx context.Context, name string) error {
	out, err := t.GW.Output(ctx, "nft", "list", "tables")
	if err != nil {
		return err
	}
	if !strings.Contains(string(out)+"\n", "table ip "+name+"\n") {
		return nil
	}
	_, err = t.GW.Output(ctx, "nft", "delete", "table", "ip", name)
	return err
}

// loadKernel installs a baseline. It first deletes the fail-safe table a
// pptpgw stopped in this topology leaves behind (rules.DefaultTable), so that the
// baseline runs with nothing of pptpgw's in the way: that table drops
// forwarded GRE (the helper's calls) and costs a base chain per packet.
func (t *Topology) loadKernel(ctx context.Context, helper bool) error {
	if err := t.KernelReset(ctx); err != nil {
		return err
	}
	if err := t.deleteTable(ctx, rules.DefaultTable); err != nil {
		return err
	}
	cmd := t.GW.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(kernelRuleset(t.WANIf, helper))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %w: %s", t.GW.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Conntrack returns the gateway namespace's conntrack table
// (/proc/net/nf_conntrack), for diagnostics.
func (t *Topology) Conntrack() string {
	var s string
	_ = t.GW.Do(func() error {
		b, err := readFile("/proc/thread-self/net/nf_conntrack")
		s = string(b)
		return err
	})
	return s
}
