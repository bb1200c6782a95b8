package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"pptpgw/internal/metrics"
	"pptpgw/nat"
	"pptpgw/rules"
)

// Live reload of `pptpgw run` (issue 8). SIGHUP and the admin command
// "reload" (`pptpgw reload`) run reloader.reload:
//
//  1. Re-read the configuration the daemon was started with: the file
//     (--config) with the command-line flags applied on top, validated
//     (configSource.load). An error names file, line and key.
//  2. Refuse a change to a setting that cannot change while running
//     (rules.FixedKeys: table, queue, queue_len, wan, public_address,
//     admin_socket, uplinks), naming each.
//  3. Run the appliers in order. Each brings the piece of running state it
//     owns to the new configuration and keeps what already matches; the
//     first that fails stops the reload, and those before it get the old
//     configuration back, so the running state stays the old one.
//  4. Count the result (reloads_total{result}) and log it.
//
// Nothing is changed before every check of steps 1 and 2 passed, and no
// applier drops a call: the engine swaps its settings behind an
// atomic.Pointer (nat.Engine.Reconfigure), the nftables table is replaced
// in one transaction (rules.Installed.Apply).
//
// The appliers of other features (shaping, routing, ...) hook in with one
// line each in runGateway: rl.add("name", x.Apply) for a type with
// Apply(*rules.Config) error (and Close() error, deferred by its owner).

// reloadsDesc counts reloads by result.
var reloadsDesc = &metrics.Desc{Name: "reloads_total", Kind: metrics.Counter, Labels: []string{"result"},
	Help: "Configuration reloads (SIGHUP or pptpgw reload): ok applied, failed refused with the running configuration unchanged."}

const (
	reloadOK = iota
	reloadFailed
)

func newReloadCounters() *metrics.Counters {
	return metrics.NewCounters([]metrics.Def{
		reloadOK:     {Desc: reloadsDesc, LabelValues: []string{"ok"}, Key: "reloads_ok"},
		reloadFailed: {Desc: reloadsDesc, LabelValues: []string{"failed"}, Key: "reloads_failed"},
	})
}

// configSource reads the daemon's configuration: the file, if any, with
// the command-line flags applied on top, validated. Start and every reload
// read it the same way, so the flags keep overriding the file.
type configSource struct {
	path  string              // --config; "" means defaults and flags only
	flags func(*rules.Config) // applies the flags given on the command line
}

func (s configSource) load() (*rules.Config, error) {
	cfg := rules.Default()
	if s.path != "" {
		var err error
		if cfg, err = rules.Load(s.path); err != nil {
			return nil, err
		}
	}
	if s.flags != nil {
		s.flags(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return cfg, nil
}

// applier brings one piece of running state to a configuration.
type applier struct {
	name  string
	apply func(*rules.Config) error
}

// reloader runs reloads, one at a time.
type reloader struct {
	src      configSource
	log      *slog.Logger
	counters *metrics.Counters

	mu       sync.Mutex
	cur      *rules.Config
	appliers []applier
	closed   bool
}

// close waits for a reload in progress and refuses the ones after it: the
// daemon is stopping, and its appliers' state (the nftables table) is
// about to be reduced to the fail-safe rule.
func (r *reloader) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

func newReloader(cur *rules.Config, src configSource, log *slog.Logger) *reloader {
	return &reloader{src: src, log: log, cur: cur, counters: newReloadCounters()}
}

// add appends an applier; they run in the order added.
func (r *reloader) add(name string, apply func(*rules.Config) error) {
	r.mu.Lock()
	r.appliers = append(r.appliers, applier{name, apply})
	r.mu.Unlock()
}

// current returns the configuration running now.
func (r *reloader) current() *rules.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Collect makes the reloader a metrics.Source (reloads_total).
func (r *reloader) Collect(emit func(metrics.Sample)) { r.counters.Collect(emit) }

// reload re-reads and applies the configuration; trigger names what asked
// for it (for the log). On error nothing running was changed.
func (r *reloader) reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	return recordReload(r.counters, r.log, trigger, start, r.reloadLocked())
}

// recordReload counts and logs the outcome err of a reload that trigger
// asked for at start (gateway and server alike) and returns err.
func recordReload(c *metrics.Counters, log *slog.Logger, trigger string, start time.Time, err error) error {
	if err != nil {
		c.Inc(reloadFailed)
		log.Error("reload refused; the running configuration is unchanged", "trigger", trigger, "err", err)
		return err
	}
	c.Inc(reloadOK)
	log.Info("configuration reloaded", "trigger", trigger, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

func (r *reloader) reloadLocked() error {
	if r.closed {
		return errors.New("the daemon is stopping")
	}
	if len(r.appliers) == 0 {
		return errors.New("the daemon is still starting")
	}
	next, err := r.src.load()
	if err != nil {
		return err
	}
	if err := r.cur.FixedChanges(next); err != nil {
		return err
	}
	for i, a := range r.appliers {
		if err := a.apply(next); err != nil {
			// Back to the old configuration, in reverse order.
			for j := i - 1; j >= 0; j-- {
				if rerr := r.appliers[j].apply(r.cur); rerr != nil {
					r.log.Error("reload: could not restore the running configuration", "part", r.appliers[j].name, "err", rerr)
				}
			}
			return fmt.Errorf("%s: %w", a.name, err)
		}
	}
	r.cur = next
	return nil
}

// engineApplier reconfigures the engine: strict, timeouts, limits,
// max_calls, forwards and the LAN interfaces (looked up again, so a LAN
// interface that does not exist refuses the reload before anything
// changed). The WAN is not looked up: it cannot change, it is followed
// (followWAN), and a WAN that is down (a PPPoE uplink reconnecting) must
// not refuse a reload.
func engineApplier(e *nat.Engine) func(*rules.Config) error {
	return func(cfg *rules.Config) error {
		res := &rules.Resolved{}
		for _, name := range cfg.LAN {
			l, err := net.InterfaceByName(name)
			if err != nil {
				return fmt.Errorf("lan interface %q: %w", name, err)
			}
			res.LANIndex = append(res.LANIndex, uint32(l.Index))
		}
		e.Reconfigure(engineConfig(cfg, res, nil))
		return nil
	}
}

// nftApplier replaces the nftables table in one transaction.
func nftApplier(inst *rules.Installed) func(*rules.Config) error {
	return func(cfg *rules.Config) error { return inst.Apply(rules.NewPlan(cfg)) }
}

// miscApplier applies the settings that live in the command itself: the
// log level, and ip_forward when it is turned on (a reload never turns
// forwarding off, as a stop never does).
func miscApplier(level *slog.LevelVar) func(*rules.Config) error {
	return func(cfg *rules.Config) error {
		if cfg.IPForward {
			if err := rules.EnableIPForward(); err != nil {
				return fmt.Errorf("enable IPv4 forwarding: %w", err)
			}
		}
		level.Set(cfg.SlogLevel())
		return nil
	}
}

// reloadReply is the admin socket's answer to "reload".
type reloadReply struct {
	Reloaded bool `json:"reloaded"`
}

// cmdReload asks a running `pptpgw run` or `pptpgw serve` to reload its
// configuration.
func cmdReload(args []string) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	sock := fs.String("admin-socket", rules.DefaultAdminSocket, "admin socket of the running daemon (pptpgw run, or pptpgw serve's)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw reload [--admin-socket PATH]

Makes a running 'pptpgw run' (or 'pptpgw serve', given its admin socket)
re-read its configuration file, with the flags it was started with still
overriding it, and apply it without dropping a call; the same as sending it
SIGHUP, but it waits for the outcome. An invalid configuration, or a change to
a setting that cannot change while running, is refused with file, line and
key; the daemon keeps running as it was and this command exits with status 1.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pptpgw reload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if _, err := queryAdmin("daemon", *sock, "reload"); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw reload:", err)
		return 1
	}
	fmt.Println("configuration reloaded")
	return 0
}
