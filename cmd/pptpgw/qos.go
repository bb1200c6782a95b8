package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"text/tabwriter"

	"pptpgw/nat"
	"pptpgw/qos"
	"pptpgw/qos/police"
	"pptpgw/rules"
)

// Shaping (issue 9): the daemon's HTB trees and `pptpgw qos`.

// shaping is the daemon's shaping state, the owner of its qdiscs for the
// reload contract: Apply brings the kernel to a config (idempotent, in
// place), Close removes exactly what it created.
type shaping struct {
	shaper *qos.Shaper
	mu     sync.Mutex
	trees  []qos.Tree // as last applied, for `pptpgw qos`
}

func newShaping(log *slog.Logger) *shaping { return &shaping{shaper: qos.NewShaper(log)} }

// Apply brings the shaped interfaces to cfg's `shaping:` (none: the trees
// this daemon created are removed).
func (s *shaping) Apply(cfg *rules.Config) error {
	trees, err := qos.Trees(cfg.Classes, cfg.Shaping)
	if err != nil {
		return err
	}
	if err := s.shaper.Apply(trees); err != nil {
		return err
	}
	s.mu.Lock()
	s.trees = trees
	s.mu.Unlock()
	return nil
}

// Close removes the qdiscs this daemon created.
func (s *shaping) Close() error { return s.shaper.Close() }

// startShaping applies cfg's shaping once at start (until reload calls
// Apply) and logs what it built.
func startShaping(cfg *rules.Config, log *slog.Logger) (*shaping, error) {
	s := newShaping(log)
	if err := s.Apply(cfg); err != nil {
		_ = s.Close()
		return nil, err
	}
	if len(cfg.Shaping) > 0 {
		log.Info("shaping", "interfaces", s.shaper.Interfaces(), "leaf_qdisc", s.shaper.LeafKind())
	}
	return s, nil
}

func (s *shaping) stop(log *slog.Logger) {
	if err := s.Close(); err != nil {
		log.Error("could not remove the shaping qdiscs", "err", err)
	}
}

// QoSReply is the answer to the admin command "qos".
type QoSReply struct {
	LeafQdisc  string           `json:"leaf_qdisc"`
	Interfaces []qos.IfaceStats `json:"interfaces"`
}

func (s *shaping) reply() (QoSReply, error) {
	s.mu.Lock()
	trees := s.trees
	s.mu.Unlock()
	st, err := qos.ReadStats(trees)
	return QoSReply{LeafQdisc: s.shaper.LeafKind(), Interfaces: st}, err
}

func cmdQoS(args []string) int {
	fs := flag.NewFlagSet("qos", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	sock := fs.String("admin-socket", rules.DefaultAdminSocket, "admin socket of the running gateway")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw qos [--json] [--admin-socket PATH]

Shows the shaped interfaces of a running 'pptpgw run' (rules/CONFIG.md,
Shaping): each interface's rate and default class, and each class with its
HTB id, priority, rate and ceil and the kernel's live counters (bytes,
packets, drops, overlimits, backlog).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	b, err := queryAdmin("pptpgw run", *sock, "qos")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw qos:", err)
		return 1
	}
	if *asJSON {
		os.Stdout.Write(b)
		return 0
	}
	var r QoSReply
	if err := json.Unmarshal(b, &r); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw qos: bad answer from daemon:", err)
		return 1
	}
	printQoS(os.Stdout, r)
	return 0
}

func printQoS(w io.Writer, r QoSReply) {
	if len(r.Interfaces) == 0 {
		fmt.Fprintln(w, "(no shaped interfaces)")
		return
	}
	for _, is := range r.Interfaces {
		state := ""
		if !is.Present {
			state = "  (HTB root MISSING from the kernel)"
		}
		fmt.Fprintf(w, "%s: rate %s, default %s, leaf qdisc %s%s\n", is.Interface, is.Rate, is.Default, r.LeafQdisc, state)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  CLASS\tID\tPRIO\tRATE\tCEIL\tBYTES\tPKTS\tDROPS\tOVERLIMITS\tBACKLOG")
		for _, c := range is.Classes {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%db/%dp\n", c.Class, c.ID, c.Priority, c.Rate, c.Ceil,
				c.Bytes, c.Packets, c.Drops, c.Overlimits, c.Backlog, c.Qlen)
		}
		tw.Flush()
	}
}

// engineQoS is the engine's part of cfg's shaping: the classes (the engine
// uses the alternatives naming PPTP) and the per-call policer.
func engineQoS(cfg *rules.Config) nat.QoSConfig {
	q := nat.QoSConfig{Classes: cfg.Classes}
	if p := cfg.Policing.PPTPCall; p != nil {
		b := p.Burst
		if b == 0 {
			b = qos.DefaultBurst(p.Rate)
		}
		q.CallLimit = police.Limit{BytesPerSecond: p.Rate.BytesPerSecond(), Burst: uint32(b)}
	}
	return q
}
