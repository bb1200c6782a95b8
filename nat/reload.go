package nat

import (
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
)

// Live reload (issue 8). What a reload can change is one immutable
// snapshot, live, behind Engine.cur (an atomic.Pointer): the packet path
// loads it once where it decides (strict, LAN interfaces, forwards, the
// hold timeout) and never sees half of an old and half of a new
// configuration. The table and the allocator take their part under their
// own locks (Table.Reconfigure, Allocator.SetQuarantine); the translators of
// tracked connections get the new policy under ctlMu. Nothing tracked is
// dropped by a reload.

// live is the reloadable part of the engine's configuration.
type live struct {
	set      Settings
	lan      []uint32
	forwards map[[4]byte]uint16 // inside server IP -> public port
}

func newLive(cfg EngineConfig) *live {
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = conntrack.DefaultMaxCalls
	}
	l := &live{
		set: Settings{
			Strict:   cfg.Strict,
			Timeouts: cfg.Timeouts.WithDefaults(),
			Limits:   cfg.Limits.WithDefaults(),
			MaxCalls: cfg.MaxCalls,
			Forwards: append([]Forward(nil), cfg.Forwards...),
		},
		lan:      append([]uint32(nil), cfg.LANIfs...),
		forwards: make(map[[4]byte]uint16),
	}
	for _, f := range cfg.Forwards {
		if f.InsideIP.Is4() {
			l.forwards[f.InsideIP.As4()] = f.Port
		}
	}
	return l
}

// conf returns the current reloadable configuration. Never nil after
// NewEngine.
func (e *Engine) conf() *live { return e.cur.Load() }

// Reconfigure applies cfg to the running engine: strict, timeouts, limits,
// max_calls, forwards and the LAN interfaces. PublicIP, WANIf and Logger
// are ignored (the WAN is followed by SetWANIndex and SetPublicIP). Every
// call and control connection stays; packets in flight see either the old
// or the new configuration, never a mix.
func (e *Engine) Reconfigure(cfg EngineConfig) {
	l := newLive(cfg)
	e.table.Reconfigure(l.set.Timeouts, l.set.Limits, l.set.MaxCalls)
	e.alloc.SetQuarantine(l.set.Timeouts.CallIDQuarantine)
	e.setQoS(cfg.QoS) // shaping (issue 9): classes and policing of new calls
	e.ctlMu.Lock()
	e.cur.Store(l)
	// The translators follow the new policy from their next segment.
	// Lock order: ctlMu, then Table.mu (inside Controls).
	for _, tc := range e.table.Controls() {
		if c, _ := tc.Data.(*control); c != nil {
			c.tr.SetConfig(helper.Config{Strict: l.set.Strict})
		}
	}
	e.ctlMu.Unlock()
}

// SetQuarantine changes how long IDs released from now on are held back;
// IDs already in quarantine keep their time.
func (a *Allocator) SetQuarantine(d time.Duration) {
	a.mu.Lock()
	a.q = max(d, 0)
	a.mu.Unlock()
}
