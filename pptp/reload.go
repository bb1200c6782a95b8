package pptp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
)

// Live reload of the server (issue 8): Reload swaps the configuration in
// force (Server.live, an atomic.Pointer read through conf()) for a new one.
// What it may change, for new connections, calls and sessions from then
// on (live ones keep what they have): the limits, the control-connection
// and authentication timeouts, the secrets (a new Credentials, e.g. the
// chap-secrets file read again) and server_name, dns and split_routes, and
// the pool, which may grow (its new range must contain the old one, so no
// address in use leaves it). The rest is fixed while running and named in
// the error: listen, local_ip, mru, auth, encryption, mppe_bits, mppe_mode,
// gre.*, the host name.

// conf returns the configuration in force.
func (s *Server) conf() *Config { return s.live.Load() }

// Reload applies next. On error nothing changed.
func (s *Server) Reload(next Config) error {
	cur := s.conf()
	// What the caller does not configure comes from the running server.
	next.Now, next.Logger, next.GRE.Now, next.GRE.Logger = cur.Now, cur.Logger, cur.GRE.Now, cur.GRE.Logger
	if next.Secrets == nil {
		return errors.New("pptp: reload: no secrets")
	}
	if err := next.defaults(); err != nil {
		return err
	}
	if _, err := next.newPool(); err != nil {
		return err
	}
	if next.MaxSessions == 0 {
		next.MaxSessions = int(binary.BigEndian.Uint32(next.PoolEnd.AsSlice())-binary.BigEndian.Uint32(next.PoolStart.AsSlice())) + 1
	}
	curGRE, nextGRE := cur.GRE, next.GRE
	curGRE.Now, curGRE.Logger, nextGRE.Now, nextGRE.Logger = nil, nil, nil, nil
	var fixed []string
	for _, f := range []struct {
		key      string
		old, new any
	}{
		{"listen", cur.Listen, next.Listen}, {"local_ip", cur.LocalIP, next.LocalIP}, {"mru", cur.MRU, next.MRU},
		{"auth", cur.Auth, next.Auth}, {"encryption", cur.AllowUnencrypted, next.AllowUnencrypted},
		{"mppe_bits", cur.MPPEStrengths, next.MPPEStrengths},
		{"mppe_mode", [2]bool{cur.StatelessOnly, cur.StatefulOnly}, [2]bool{next.StatelessOnly, next.StatefulOnly}},
		{"gre", curGRE, nextGRE}, {"hostname", cur.Hostname, next.Hostname},
	} {
		if !reflect.DeepEqual(f.old, f.new) {
			fixed = append(fixed, fmt.Sprintf("%s (%v now, %v in the new configuration)", f.key, f.old, f.new))
		}
	}
	if len(fixed) > 0 {
		return fmt.Errorf("pptp: cannot change while running (restart to apply): %s", strings.Join(fixed, "; "))
	}
	if next.PoolStart != cur.PoolStart || next.PoolEnd != cur.PoolEnd {
		if cur.PoolStart.Less(next.PoolStart) || next.PoolEnd.Less(cur.PoolEnd) {
			return fmt.Errorf("pptp: pool %s-%s does not contain %s-%s: a pool may only grow while running (addresses in use must stay in it)",
				next.PoolStart, next.PoolEnd, cur.PoolStart, cur.PoolEnd)
		}
		s.pool.grow(next.PoolStart, next.PoolEnd)
	}
	s.live.Store(&next)
	s.log.Info("configuration reloaded", "pool", next.PoolStart.String()+"-"+next.PoolEnd.String(),
		"max_sessions", next.MaxSessions, "max_conns", next.MaxConns, "dns", next.DNS)
	return nil
}

// grow widens the pool's range to [start, end], which contains the old one.
func (p *Pool) grow(start, end netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if start.Less(p.start) {
		p.start = start
	}
	if p.end.Less(end) {
		p.end = end
	}
}

// Size is the number of addresses in the pool's range.
func (p *Pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int(binary.BigEndian.Uint32(p.end.AsSlice())-binary.BigEndian.Uint32(p.start.AsSlice())) + 1
}
