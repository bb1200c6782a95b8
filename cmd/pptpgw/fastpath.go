package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"pptpgw/nat"
	"pptpgw/rules"
)

// The kernel fast path for established GRE (issue 12) as the daemon sets it
// up: resolveGREPath before the engine is made (it decides whether the
// engine gets the maps), adoptGRE before the table is installed, and
// runKernelPath once it is.

// resolveGREPath turns cfg.GREPath into kernel or userspace (auto probes
// the kernel) and logs the choice.
func resolveGREPath(cfg *rules.Config, log *slog.Logger) error {
	asked := cfg.GREPath
	ok, err := rules.ResolveGREPath(rules.NewPlan(cfg))
	if err != nil {
		return err
	}
	cfg.GREPath = rules.GREPathUserspace
	if ok {
		cfg.GREPath = rules.GREPathKernel
	}
	if asked == rules.GREPathAuto && !ok {
		log.Warn("the kernel cannot run the GRE fast path; all GRE goes through the queue (gre_path: userspace)")
	}
	return nil
}

// greMaps is the engine's KernelMaps for cfg: the table's maps with
// gre_path kernel (after resolveGREPath), none otherwise.
func greMaps(cfg *rules.Config) nat.KernelMaps {
	if cfg.GREPath != rules.GREPathKernel {
		return nil
	}
	m, err := rules.NewGREMaps(cfg.Table, 0)
	if err != nil {
		return nil
	}
	return m
}

// adoptGRE reads the fast-path elements a previous run left in the table
// and keeps, in plan, those of calls the engine holds (restored from a
// state snapshot): Install puts them back in the batch that replaces the
// table, so their GRE never stops.
func adoptGRE(engine *nat.Engine, plan *rules.Plan, log *slog.Logger) {
	if !engine.KernelPath() {
		return
	}
	out, in, err := rules.ReadGREElements(plan.Table, plan.NetNS)
	if err != nil {
		log.Warn("could not read the GRE fast path's maps left by an earlier run; they go with its table", "err", err)
		return
	}
	plan.AdoptOut, plan.AdoptIn = engine.AdoptKernelGRE(out, in)
	if len(out)+len(in) > 0 {
		log.Info("GRE fast path: elements left by an earlier run", "found", len(out)+len(in),
			"kept", len(plan.AdoptOut)+len(plan.AdoptIn))
	}
}

// fastPath is the running state of issue 12 for the reload contract: the
// fast path's flusher (the maps themselves are declared by the table's
// Plan and survive a reload with their elements) and the queue readers'
// count. Apply starts the flusher the first time and afterwards only
// accepts a configuration that keeps gre_path and queues as they run:
// switching the GRE path or re-binding queues needs a restart (an error
// says so). Close stops the flusher and waits for it; it is final: an
// Apply after it (a reload from the admin socket while the daemon stops)
// is refused and starts nothing.
type fastPath struct {
	ctx     context.Context
	engine  *nat.Engine
	log     *slog.Logger
	grePath string // as resolved at start: kernel or userspace
	queues  int

	// inst is the installed table: after each install or reload, the
	// engine learns which classes and policers have chains (kfeat).
	inst *rules.Installed

	mu     sync.Mutex // Apply and Close run on different goroutines
	stop   func()
	closed bool
}

func newFastPath(ctx context.Context, engine *nat.Engine, cfg *rules.Config, log *slog.Logger) *fastPath {
	return &fastPath{ctx: ctx, engine: engine, log: log, grePath: cfg.GREPath, queues: cfg.EffectiveQueues()}
}

// Apply brings the fast path to cfg (see fastPath); idempotent.
func (f *fastPath) Apply(cfg *rules.Config) error {
	switch cfg.GREPath {
	case f.grePath, rules.GREPathAuto, "":
	default:
		return fmt.Errorf("gre_path %s: the daemon runs gre_path %s; changing it needs a restart", cfg.GREPath, f.grePath)
	}
	if n := cfg.EffectiveQueues(); n != f.queues {
		return fmt.Errorf("queues %d: the daemon reads %d queues; changing them needs a restart", n, f.queues)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("the GRE fast path is stopping")
	}
	if f.inst != nil { // kfeat: after the nftables applier
		f.engine.SetKernelQoSChains(f.inst.FastPathChains())
	}
	if f.stop == nil {
		f.stop = runKernelPath(f.ctx, f.engine, f.log)
	}
	return nil
}

// Close stops the flusher (the maps stay in the table); final.
func (f *fastPath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
	return nil
}

// runKernelPath keeps the maps in step with the engine until ctx ends or
// the returned function is called (it waits for the flusher to stop, so
// that no transaction races the table's reduction to its fail-safe rule).
func runKernelPath(ctx context.Context, engine *nat.Engine, log *slog.Logger) (stop func()) {
	if !engine.KernelPath() {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		engine.RunKernelPath(ctx, func(err error) { log.Warn("GRE fast path", "err", err) })
	}()
	return func() { cancel(); <-done }
}
