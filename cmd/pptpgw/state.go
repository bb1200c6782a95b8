package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"pptpgw/nat"
)

// Calls survive a restart (issue 8): stateKeeper restores the engine's
// call table from state_file at start and saves it every stateEvery and
// once more on the way out (after the table was reduced to its fail-safe
// rule, when no packet reaches the engine any more). The file is written
// atomically (nat.WriteStateFile); one that cannot be read, is of another
// version or belongs to another gateway (table, queue, WAN, public
// address: rules.Config.StateOwner) is logged and ignored, never fatal.

// stateEvery is how often the call table is saved while running.
const stateEvery = 10 * time.Second

type stateKeeper struct {
	engine *nat.Engine
	owner  map[string]string
	path   func() string // the state file of the running configuration; "" = off
	log    *slog.Logger

	mu      sync.Mutex // one save at a time
	lastErr string
}

// restore loads the state file into the engine, which must be new.
func (k *stateKeeper) restore() {
	path := k.path()
	if path == "" {
		return
	}
	st, err := nat.ReadStateFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		k.log.Info("no saved call table to restore", "state_file", path)
		return
	case err != nil:
		k.log.Warn("ignored the saved call table: cannot read it", "state_file", path, "err", err)
		return
	}
	rs, err := k.engine.RestoreState(st, k.owner)
	if err != nil {
		k.log.Warn("ignored the saved call table", "state_file", path, "err", err)
		return
	}
	k.log.Info("restored the saved call table", "state_file", path, "saved_at", st.SavedAt.Format(time.RFC3339),
		"conns", rs.Conns, "calls", rs.Calls, "quarantined_ids", rs.Quarantined,
		"skipped_conns", rs.SkippedConns, "skipped_calls", rs.SkippedCalls)
}

// save writes the engine's state to the state file. why is for the log.
func (k *stateKeeper) save(why string) {
	path := k.path()
	if path == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.engine.SaveState(k.owner)
	if err := nat.WriteStateFile(path, st); err != nil {
		// Logged when it starts failing or fails differently, not every 10 s.
		if err.Error() != k.lastErr {
			k.log.Warn("cannot save the call table", "state_file", path, "err", err)
		}
		k.lastErr = err.Error()
		return
	}
	if k.lastErr != "" {
		k.log.Info("saving the call table works again", "state_file", path)
	}
	k.lastErr = ""
	if why != "" {
		calls := 0
		for _, c := range st.Conns {
			calls += len(c.Calls)
		}
		k.log.Info("saved the call table", "state_file", path, "why", why, "conns", len(st.Conns), "calls", calls)
	}
}

// run saves every stateEvery until ctx ends.
func (k *stateKeeper) run(ctx context.Context) {
	t := time.NewTicker(stateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.save("")
		}
	}
}
