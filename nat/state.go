package nat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
)

// Calls survive a restart (issue 8): the engine's call table is saved as
// versioned JSON (a State) and restored into a new engine, which then
// translates the same calls' GRE and control segments as if it had been
// running all along.
//
// What is saved: every control connection (its key, public address, state
// and idle age) with its calls (IDs, state, counters, idle age) and its
// ALG state (helper.State: stream positions, the message being
// reassembled, remembered patches), and the allocator's quarantine
// (remaining time). The allocator's IDs in use are those of the calls.
// Held segments are not saved (the kernel drops its queue when the daemon
// goes; TCP resends them).
//
// Times are ages relative to SavedAt, and RestoreState adds the time that
// passed since then (by the engine's clock, never negative), so every
// timer resumes where it would have been had the daemon run on.

// StateVersion is the version of the State format this code writes and
// reads. A file with another version is refused (ErrStateVersion) and the
// daemon starts empty.
const StateVersion = 1

// MaxStateBytes bounds a state file DecodeState accepts (a full table of
// 64k calls is about 20 MB of JSON).
const MaxStateBytes = 256 << 20

// State is a saved call table.
type State struct {
	Version int `json:"version"`
	// Owner says which gateway the state belongs to (set by the caller:
	// table, queue, WAN, public address); RestoreState refuses another.
	Owner   map[string]string `json:"owner"`
	SavedAt time.Time         `json:"saved_at"`
	Conns   []SavedConn       `json:"conns"`
	// Quarantine: outside call IDs held back, with the time left.
	Quarantine []SavedQuarantine `json:"quarantine,omitempty"`
}

// SavedConn is one control connection: the table's record and the ALG's.
type SavedConn struct {
	conntrack.SavedControl
	Translator helper.State `json:"translator"`
}

// SavedQuarantine is one quarantined outside call ID.
type SavedQuarantine struct {
	PublicIP [4]byte       `json:"public_ip"`
	PeerIP   [4]byte       `json:"peer_ip"`
	ID       uint16        `json:"id"`
	Left     time.Duration `json:"left"`
}

// Errors of DecodeState and RestoreState.
var (
	ErrStateVersion = errors.New("nat: state file of another version")
	ErrStateForeign = errors.New("nat: state file of another gateway")
	ErrStateNotNew  = errors.New("nat: state restored into an engine that already tracks connections")
)

// RestoreStats says what RestoreState brought back and what it skipped.
type RestoreStats struct {
	Conns, Calls, Quarantined int
	// Skipped: connections and calls that failed a check (bounds, limits,
	// duplicates, invalid ALG state).
	SkippedConns, SkippedCalls int
}

// SaveState returns the engine's state. owner is stored as is.
func (e *Engine) SaveState(owner map[string]string) *State {
	// ctlMu for the whole export: the translators' state and the table's
	// agree (no control segment is processed in between). GRE keeps
	// flowing; it only takes Table.mu.
	e.ctlMu.Lock()
	now := e.clk.Now()
	st := &State{Version: StateVersion, Owner: maps.Clone(owner), SavedAt: now}
	trs := map[conntrack.ControlKey]helper.State{}
	saved := e.table.Export(func(tc *conntrack.Control, s *conntrack.SavedControl) {
		if c, _ := tc.Data.(*control); c != nil {
			trs[tc.Key] = c.tr.State()
		}
	})
	st.Quarantine = e.alloc.saveQuarantine(now) // lock order: ctlMu, then Allocator.mu
	e.ctlMu.Unlock()
	for _, s := range saved {
		st.Conns = append(st.Conns, SavedConn{SavedControl: s, Translator: trs[s.Key]})
	}
	return st
}

// RestoreState brings st's connections, calls and quarantine into e, which
// must not track anything yet. owner must equal st.Owner. Entries that fail
// a check are skipped and counted, never fatal.
func (e *Engine) RestoreState(st *State, owner map[string]string) (RestoreStats, error) {
	var rs RestoreStats
	if st.Version != StateVersion {
		return rs, fmt.Errorf("%w: version %d, want %d", ErrStateVersion, st.Version, StateVersion)
	}
	if !maps.Equal(st.Owner, owner) {
		return rs, fmt.Errorf("%w: saved for %v, this one is %v", ErrStateForeign, st.Owner, owner)
	}
	e.ctlMu.Lock()
	defer e.ctlMu.Unlock()
	if conns, calls := e.table.Len(); conns+calls > 0 {
		return rs, ErrStateNotNew
	}
	now := e.clk.Now()
	elapsed := max(now.Sub(st.SavedAt), 0)
	strict := e.conf().set.Strict
	for _, sc := range st.Conns {
		s := sc.SavedControl
		s.Idle += elapsed
		c := &control{}
		tr, err := helper.RestoreTranslator(&mapper{e: e, c: c}, helper.Config{Strict: strict}, sc.Translator)
		if err != nil {
			rs.SkippedConns++
			rs.SkippedCalls += len(s.Calls)
			continue
		}
		c.tr = tr
		for i := range s.Calls {
			s.Calls[i].Idle += elapsed
		}
		pk := PoolKey{s.PublicIP, s.Key.PeerIP}
		tc, n, err := e.table.Restore(s, func(call conntrack.SavedCall) bool {
			return e.alloc.claim(pk, call.OutsideCallID)
		})
		if err != nil {
			rs.SkippedConns++
			rs.SkippedCalls += len(s.Calls)
			continue
		}
		c.tc = tc
		tc.Data = c
		// What a new connection and its calls get from the features
		// decided again for the restored ones: pool accounting, the
		// uplink pin of the pair, each call's class and policer, its
		// member's call count and a hairpin call's alias.
		e.poolTracked(tc) // pool (issue 11)
		e.pinControl(tc)  // several uplinks (issue 10)
		for _, call := range s.Calls {
			if _, ok := e.table.OutsideOf(tc, call.InsideCallID); !ok {
				continue // not restored
			}
			e.setupCall(tc, call.InsideCallID) // shaping (issue 9)
			e.poolCallAdded(tc)                // pool (issue 11): its member's calls
			if call.State != conntrack.CallRequested {
				e.hairpinEstablished(tc, call.PeerCallID) // pool (issue 11): a hairpin call's alias
			}
		}
		rs.Conns++
		rs.Calls += n
		rs.SkippedCalls += len(s.Calls) - n
	}
	rs.Quarantined = e.alloc.restoreQuarantine(st.Quarantine, now, elapsed)
	return rs, nil
}

// claim marks id of pool k in use for a restored call; false if it is
// busy (in use or quarantined) or 0. Called under Table.mu (lock order).
func (a *Allocator) claim(k PoolKey, id uint16) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id == 0 {
		return false
	}
	p := a.pools[k]
	if p == nil {
		p = &pool{}
		a.pools[k] = p
	}
	if p.busy.has(id) {
		return false
	}
	p.busy.add(id)
	p.inUse++
	return true
}

func (a *Allocator) saveQuarantine(now time.Time) []SavedQuarantine {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []SavedQuarantine
	for k, p := range a.pools {
		for _, q := range p.fifo {
			if left := q.until.Sub(now); left > 0 {
				out = append(out, SavedQuarantine{PublicIP: k.PublicIP, PeerIP: k.PeerIP, ID: q.id, Left: left})
			}
		}
	}
	return out
}

// restoreQuarantine puts saved quarantined IDs back with their time left
// minus elapsed, skipping IDs that are busy, expired or 0, and returns how
// many it restored.
func (a *Allocator) restoreQuarantine(qs []SavedQuarantine, now time.Time, elapsed time.Duration) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	touched := map[*pool]bool{}
	for _, q := range qs {
		left := q.Left - elapsed
		if q.ID == 0 || left <= 0 {
			continue
		}
		left = min(left, max(a.q, conntrack.DefaultQuarantine)) // a corrupted file cannot hold an ID for ever
		k := PoolKey{q.PublicIP, q.PeerIP}
		p := a.pools[k]
		if p == nil {
			p = &pool{}
			a.pools[k] = p
		}
		if p.busy.has(q.ID) {
			continue
		}
		p.busy.add(q.ID)
		p.quar.add(q.ID)
		p.fifo = append(p.fifo, quarantined{q.ID, now.Add(left)})
		touched[p] = true
		n++
	}
	// The FIFO is ordered by expiry (drain relies on it).
	for p := range touched {
		slices.SortStableFunc(p.fifo, func(x, y quarantined) int { return x.until.Compare(y.until) })
	}
	return n
}

// EncodeState returns st as JSON.
func EncodeState(st *State) ([]byte, error) {
	return json.Marshal(st)
}

// DecodeState parses a state file. It refuses (ErrStateVersion) a file of
// another version, and errors on anything that is not one.
func DecodeState(b []byte) (*State, error) {
	if len(b) > MaxStateBytes {
		return nil, fmt.Errorf("nat: state file of %d bytes, more than %d", len(b), MaxStateBytes)
	}
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("nat: state file: %w", err)
	}
	if v.Version != StateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrStateVersion, v.Version, StateVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	st := &State{}
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("nat: state file: %w", err)
	}
	return st, nil
}

// WriteStateFile writes st to path atomically: a temporary file in the same
// directory, fsync, rename over path, fsync of the directory. A reader (the
// next start) sees the old file or the new one, never a part.
func WriteStateFile(path string, st *State) error {
	b, err := EncodeState(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ReadStateFile reads and decodes the state file at path.
func ReadStateFile(path string) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 0, 4096)
	buf := bytes.NewBuffer(b)
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxStateBytes+1)); err != nil {
		return nil, err
	}
	return DecodeState(buf.Bytes())
}
