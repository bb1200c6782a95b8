// Package pptp is a PPTP (RFC 2637) server (PAC side) and client (PNS side) that runs
// entirely in userspace: control channel over TCP 1723, enhanced GRE (package pptp/gre),
// PPP with MS-CHAPv2 and MPPE (package pptp/ppp) and a shared TUN device (pptp/tun).
//
// The way of a packet through the server:
//
//  1. The client's GRE packet arrives on the raw socket; gre.Mux finds the call by
//     (client IP, our call ID), checks seq/ack and hands the PPP frame over in order.
//  2. The call's ppp.Session decrypts (MPPE) and hands out the IPv4 packet (onPeerIP).
//  3. onPeerIP answers a DHCPINFORM itself when split routes are configured, drops
//     packets whose source is not the session's address, clamps the MSS of TCP SYNs and
//     writes the packet to the TUN device; the kernel routes it on.
//  4. The kernel routes replies to the session's /32 route on the TUN; Server.readNet
//     finds the session by destination address, clamps MSS, and ppp.Session.SendIP
//     encrypts and sends it through gre.Call.Send (sequence number + piggybacked ack).
//
// It owns the PAC side of the control channel, the session glue, the address pool,
// MSS clamping, the server's config file (config.go) and counters (metrics.go), the
// admin reply, and the PNS-side clients. It must not know the gateway (nat, helper,
// conntrack, rules, NFQUEUE) nor the commands' flags and output; the kernel reaches it
// only through Net and gre.PacketConn (cmd/pptpgw plugs in pptp/tun and a raw socket).
package pptp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/internal/metrics"
	"pptpgw/internal/pkt"
	"pptpgw/pptp/dhcpinform"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/mppe"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/wire"
)

// Net is the kernel side of the server: the shared TUN device (tun.Device implements
// it). Tests use an in-memory implementation.
type Net interface {
	ReadPacket(b []byte) (int, error)
	WritePacket(pkt []byte) error
	AddRoute(dst, src netip.Addr) error
	DelRoute(dst netip.Addr) error
}

// QueueNet is a Net that can hold packets written to the kernel to merge them
// (tun.Device: consecutive TCP segments become one GSO packet). The server queues the
// packets of a received GRE batch and flushes after it.
type QueueNet interface {
	QueuePacket(pkt []byte) error
	Flush() error
}

// Credentials looks up a user's secret and allowed addresses (pppd chap-secrets
// semantics; *secrets.Secrets implements it).
type Credentials interface {
	Lookup(client, server string) (secret string, ips []string, ok bool)
}

// Config of a Server. Zero values mean the documented defaults.
type Config struct {
	// Listen is the TCP listen address: IP:PORT, :PORT, or an IP alone for port
	// 1723 (as pptpd's listen option); default ":1723".
	Listen string

	PoolStart, PoolEnd netip.Addr // inclusive IPv4 pool for clients (required)
	// LocalIP is the server's own tunnel address, announced in IPCP and put on the TUN.
	// Default: the address just below PoolStart.
	LocalIP netip.Addr
	DNS     []netip.Addr // IPCP 129/131 and DHCPINFORM option 6
	// SplitRoutes, when set, are pushed to clients that send a DHCPINFORM (Windows),
	// as options 121 and 249.
	SplitRoutes []netip.Prefix

	// Auth methods accepted in preference order; default [MS-CHAPv2].
	Auth []ppp.AuthMethod
	// AllowUnencrypted lets sessions without MPPE in (default: MPPE required).
	AllowUnencrypted bool
	MPPEStrengths    []mppe.Strength // default [128]
	// StatelessOnly / StatefulOnly restrict MPPE modes (default both, stateless preferred).
	StatelessOnly, StatefulOnly bool
	MRU                         uint16 // default 1400

	Secrets    Credentials
	ServerName string // server column matched in chap-secrets; default "*" (any)

	// MaxConns is the number of control connections in total, default 1024. When it
	// is reached, a new connection takes the place of the oldest one that has not
	// authenticated a call yet, from its own source if there is one, else from any
	// (counted conn_evicted_unauthenticated); only when every connection has
	// authenticated is the new one refused.
	MaxConns          int
	MaxConnsPerSource int // control connections per source IP, default 256
	// MaxSessions is the number of authenticated sessions (each holds an address),
	// default = pool size. Calls still authenticating are bounded by the two
	// MaxUnauthCalls limits instead, so they cannot take a legitimate user's place.
	MaxSessions     int
	MaxCallsPerConn int // default 256
	// MaxUnauthCallsPerConn and MaxUnauthCallsPerSource bound the calls that have
	// not finished PPP authentication yet, per control connection (default 4: a
	// client opens one call per connection) and per source IP (default 256, as
	// many as MaxConnsPerSource: the clients behind one NAT may all dial at once).
	MaxUnauthCallsPerConn, MaxUnauthCallsPerSource int

	FirstMessageTimeout time.Duration // SCCRQ must arrive within, default 10 s
	// CallRequestTimeout: an established control connection without any call is
	// closed this long after its SCCRP unless one of its calls has authenticated
	// (default 10 s).
	CallRequestTimeout time.Duration
	// AuthTimeout: a call must finish PPP authentication within this after its
	// Outgoing-Call-Request, or it is cleared (default 15 s); a control connection
	// none of whose calls has authenticated CallRequestTimeout + AuthTimeout after
	// its SCCRP is closed.
	AuthTimeout time.Duration
	// WarnInterval: warnings a flood can trigger (one per connection or call) are
	// logged once per interval per message, then as one line with the count of
	// those left out (default 10 s).
	WarnInterval time.Duration
	EchoIdle     time.Duration // control Echo-Request after this idle time, default 60 s
	EchoTimeout  time.Duration // close when no Echo-Reply within, default 60 s
	PPPEcho      time.Duration // LCP echo interval, default 30 s (0 < means off)

	GRE gre.Config // window, reorder timeout, ack delay

	Hostname string // SCCRP host name, default "pptpgw"

	Now    func() time.Time // default time.Now; injected into GRE and PPP too
	Logger *slog.Logger

	// Shaping (issue 9): session rate limits (ratelimit.go).
	RateLimits RateLimits
}

func (c *Config) defaults() error {
	var err error
	if c.Listen, err = ListenAddr(c.Listen); err != nil {
		return fmt.Errorf("pptp: %w", err)
	}
	if !c.PoolStart.Is4() || !c.PoolEnd.Is4() || c.PoolEnd.Less(c.PoolStart) {
		return errors.New("pptp: pool start/end must be IPv4 with start <= end")
	}
	if !c.LocalIP.IsValid() {
		c.LocalIP = c.PoolStart.Prev()
		if !c.LocalIP.IsValid() || c.LocalIP.As4()[3] == 0 {
			return fmt.Errorf("pptp: no address below pool start %s for the server: set the local IP", c.PoolStart)
		}
	}
	if len(c.Auth) == 0 {
		c.Auth = []ppp.AuthMethod{ppp.AuthMSCHAPv2}
	}
	if len(c.MPPEStrengths) == 0 {
		c.MPPEStrengths = []mppe.Strength{mppe.Bits128}
	}
	if c.MRU == 0 {
		c.MRU = ppp.DefaultMRU
	}
	if c.ServerName == "" {
		c.ServerName = "*"
	}
	if c.MaxConns == 0 {
		c.MaxConns = 1024
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = 256
	}
	if c.MaxCallsPerConn == 0 {
		c.MaxCallsPerConn = 256
	}
	if c.MaxUnauthCallsPerConn == 0 {
		c.MaxUnauthCallsPerConn = 4
	}
	if c.MaxUnauthCallsPerSource == 0 {
		c.MaxUnauthCallsPerSource = 256
	}
	if c.FirstMessageTimeout == 0 {
		c.FirstMessageTimeout = 10 * time.Second
	}
	if c.CallRequestTimeout == 0 {
		c.CallRequestTimeout = 10 * time.Second
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 15 * time.Second
	}
	if c.WarnInterval == 0 {
		c.WarnInterval = 10 * time.Second
	}
	if c.EchoIdle == 0 {
		c.EchoIdle = 60 * time.Second
	}
	if c.EchoTimeout == 0 {
		c.EchoTimeout = 60 * time.Second
	}
	if c.PPPEcho == 0 {
		c.PPPEcho = 30 * time.Second
	}
	if c.Hostname == "" {
		c.Hostname = "pptpgw"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.GRE.Now == nil {
		c.GRE.Now = c.Now
	}
	if c.GRE.Logger == nil {
		c.GRE.Logger = c.Logger
	}
	return nil
}

// newPool makes the address pool and checks that the local IP is outside it.
func (c *Config) newPool() (*Pool, error) {
	pool, err := NewPool(c.PoolStart, c.PoolEnd)
	if err != nil {
		return nil, err
	}
	if pool.Contains(c.LocalIP) {
		return nil, fmt.Errorf("pptp: local IP %s is inside the pool", c.LocalIP)
	}
	return pool, nil
}

// MSS is the TCP MSS clamped on the tunnel: MRU - 40 (IPv4+TCP) - 4 (MPPE header and
// the encrypted PPP protocol field).
func (c *Config) MSS() uint16 { return c.MRU - 40 - 4 }

// Server is a PPTP access concentrator.
type Server struct {
	cfg  Config
	log  *slog.Logger
	mux  *gre.Mux
	net  Net
	qnet QueueNet // net, when it can merge packets (nil otherwise)
	pool *Pool

	mu        sync.Mutex
	ln        net.Listener
	conns     map[*ctrlConn]struct{}
	perSource map[netip.Addr]int
	sessions  map[*session]struct{}
	closed    bool
	// preauth holds the connections none of whose calls has authenticated yet: the
	// ones a new connection may evict when MaxConns is reached.
	preauth preauthQueue
	// unauthBySource counts the calls not yet authenticated per source IP
	// (MaxUnauthCallsPerSource); authed counts the sessions past authentication
	// that hold an address (MaxSessions).
	unauthBySource map[netip.Addr]int
	authed         int

	byAddr   sync.Map     // netip.Addr -> *session (data path, read-mostly)
	txQueued atomic.Int64 // packets in all sessions' txQueues

	counters  *metrics.Counters // indexed by counter
	pppTotals *metrics.Counters // the PPP reasons of all sessions (ppp.Config.Totals)
	limited   *rateLog          // lines a flood of peers can trigger, rate-limited
	stop      chan struct{}
	wg        sync.WaitGroup

	// operations (issue 8): bytes and auth failures over all sessions.
	obsTotals ppp.ServerTotals
	// Reload (issue 8): the configuration in force, swapped whole by
	// Reload (reload.go); the reloadable settings are read through conf().
	live atomic.Pointer[Config]
}

// NewServer makes a server that uses greConn for GRE and n for IP packets. It does
// not listen yet: see ListenAndServe / Serve.
func NewServer(cfg Config, greConn gre.PacketConn, n Net) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.Secrets == nil {
		return nil, errors.New("pptp: no secrets")
	}
	pool, err := cfg.newPool()
	if err != nil {
		return nil, err
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = int(binary.BigEndian.Uint32(cfg.PoolEnd.AsSlice())-binary.BigEndian.Uint32(cfg.PoolStart.AsSlice())) + 1
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, mux: gre.NewMux(greConn, cfg.GRE), net: n, pool: pool,
		conns: map[*ctrlConn]struct{}{}, perSource: map[netip.Addr]int{}, sessions: map[*session]struct{}{},
		unauthBySource: map[netip.Addr]int{},
		counters:       metrics.NewCounters(counterDefs[:]), pppTotals: ppp.NewCounters(), stop: make(chan struct{}),
	}
	s.live.Store(&cfg)
	s.limited = newRateLog(cfg.Logger, cfg.WarnInterval, cfg.Now, func(n int) { s.counters.Add(int(cLogSuppressed), uint64(n)) })
	if qn, ok := n.(QueueNet); ok {
		s.qnet = qn
		s.mux.AddFlush(func() {
			if err := qn.Flush(); err != nil {
				s.count(cNetWriteFailed)
			}
		})
	}
	return s, nil
}

// Config is the effective configuration.
func (s *Server) Config() Config { return *s.conf() }

// GRE is the server's GRE mux (counters).
func (s *Server) GRE() *gre.Mux { return s.mux }

// ListenAndServe listens on cfg.Listen and serves until ctx is done or Close.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts control connections on ln and runs the GRE, TUN and timer loops.
// It returns after ctx is done or Close was called, with everything torn down.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("pptp: server closed")
	}
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(3)
	go func() { defer s.wg.Done(); _ = s.mux.Serve() }()
	go func() { defer s.wg.Done(); s.mux.RunTicker(10*time.Millisecond, s.stop) }()
	go s.readNet() // ends when the caller closes the Net
	go func() { defer s.wg.Done(); s.runTimers() }()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.stop:
		}
	}()
	s.log.Info("pptp server listening", "addr", ln.Addr().String(), "local_ip", s.cfg.LocalIP,
		"pool", s.cfg.PoolStart.String()+"-"+s.cfg.PoolEnd.String())
	for {
		c, err := ln.Accept()
		if err != nil {
			s.Close()
			s.wg.Wait()
			if ctx.Err() != nil || s.isClosed() {
				return nil
			}
			return err
		}
		s.accept(c)
	}
}

func (s *Server) isClosed() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.closed }

// Close stops listening, ends every session and control connection, and closes the
// GRE socket. The Net is not closed (the caller owns it) but its routes are removed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	ln := s.ln
	conns := make([]*ctrlConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.shutdown(wire.StopReasonLocalShutdown)
	}
	s.mux.Close()
	return nil
}

// accept admits a new control connection within the limits. When MaxConns is
// reached, a connection that has not authenticated a call makes room (the kernel
// conntrack's early drop; preauthQueue.victim says which): connections that never
// authenticate cannot keep a legitimate client out, and an authenticated one is
// never evicted.
func (s *Server) accept(c net.Conn) {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	src := ap.Addr().Unmap()
	var evicted *ctrlConn
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		c.Close()
		return
	case s.perSource[src] >= s.conf().MaxConnsPerSource:
		s.mu.Unlock()
		s.count(cConnLimitSource)
		s.limited.Warn("control connection refused: per-source limit", "peer", ap, "limit", s.conf().MaxConnsPerSource)
		c.Close()
		return
	case len(s.conns) >= s.conf().MaxConns:
		evicted = s.preauth.victim(src)
		if evicted == nil {
			s.mu.Unlock()
			s.count(cConnLimitGlobal)
			s.limited.Warn("control connection refused: global limit", "peer", ap, "limit", s.conf().MaxConns)
			c.Close()
			return
		}
		s.forgetLocked(evicted)
	}
	now := s.cfg.Now()
	cc := &ctrlConn{srv: s, c: c, peer: ap, peerIP: src, started: now, lastRx: now, calls: map[uint16]*session{}}
	s.conns[cc] = struct{}{}
	s.perSource[src]++
	s.preauth.push(cc)
	s.mu.Unlock()
	if evicted != nil {
		// Its reader ends on the closed socket and ends its calls (run).
		evicted.close()
		s.count(cConnEvictedUnauth)
		s.limited.Warn("control connection evicted: connection limit reached and it has not authenticated",
			"peer", evicted.peer.String(), "limit", s.conf().MaxConns)
	}
	s.count(cConnsAccepted)
	go cc.run()
}

func (s *Server) dropConn(cc *ctrlConn) {
	s.mu.Lock()
	s.forgetLocked(cc)
	s.mu.Unlock()
}

// forgetLocked takes cc out of the connection table and its limits, once.
func (s *Server) forgetLocked(cc *ctrlConn) {
	if _, ok := s.conns[cc]; !ok {
		return
	}
	delete(s.conns, cc)
	if s.perSource[cc.peerIP]--; s.perSource[cc.peerIP] <= 0 {
		delete(s.perSource, cc.peerIP)
	}
	s.preauth.remove(cc)
}

// reserveUnauthCall counts a new call of cc against the limits of calls that have not
// authenticated. When ok, the caller hands the reservation to the session
// (session.unauth) or gives it back with releaseUnauthLocked; otherwise reason says
// which limit refused the call.
func (s *Server) reserveUnauthCall(cc *ctrlConn) (reason counter, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.authed >= s.conf().MaxSessions:
		return cCallLimitGlobal, false
	case cc.unauthCalls >= s.conf().MaxUnauthCallsPerConn:
		return cCallLimitUnauthConn, false
	case s.unauthBySource[cc.peerIP] >= s.conf().MaxUnauthCallsPerSource:
		return cCallLimitUnauthSource, false
	}
	cc.unauthCalls++
	s.unauthBySource[cc.peerIP]++
	return 0, true
}

func (s *Server) releaseUnauthLocked(cc *ctrlConn) {
	cc.unauthCalls--
	if s.unauthBySource[cc.peerIP]--; s.unauthBySource[cc.peerIP] <= 0 {
		delete(s.unauthBySource, cc.peerIP)
	}
}

// authenticated is PPP's word (through ppp.Config.AllocIP) that ss's peer has
// authenticated: the call leaves the unauthenticated limits and its connection
// may no longer be evicted nor closed by the pre-authentication timeouts.
func (s *Server) authenticated(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.unauth {
		ss.unauth = false
		s.releaseUnauthLocked(ss.cc)
	}
	cc := ss.cc
	cc.authed.Store(true)
	s.preauth.remove(cc)
}

// takeSessionSlot counts an authenticated session against MaxSessions.
func (s *Server) takeSessionSlot() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.authed >= s.conf().MaxSessions {
		return false
	}
	s.authed++
	return true
}

// Tick runs the control-connection timers (first message, call request, echo), the
// authentication timeout of calls, the PPP timers and the rate-limited log once, at
// the given time. A running server calls it every 100 ms; tests call it with a fake
// clock.
func (s *Server) Tick(now time.Time) {
	s.mu.Lock()
	conns := make([]*ctrlConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	sessions := make([]*session, 0, len(s.sessions))
	var late []*session
	for ss := range s.sessions {
		sessions = append(sessions, ss)
		if ss.unauth && !ss.authTimedOut && now.Sub(ss.started) >= s.conf().AuthTimeout {
			ss.authTimedOut = true
			late = append(late, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range late {
		s.count(cTimeoutAuth)
		s.limited.Warn("call cleared: not authenticated in time", "peer", ss.cc.peer.String(),
			"call_id", ss.call.LocalID(), "timeout", s.conf().AuthTimeout)
		ss.end("authentication timeout", true, wire.CDNResultGeneralError)
	}
	for _, c := range conns {
		c.tick(now)
	}
	for _, ss := range sessions {
		ss.ppp.Tick(now)
	}
	s.limited.Flush(now)
}

func (s *Server) runTimers() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Tick(s.cfg.Now())
		}
	}
}

// readNet is step 4 of the packet's way: kernel -> session.
func (s *Server) readNet() {
	buf := make([]byte, 65536)
	mss := s.cfg.MSS()
	for {
		n, err := s.net.ReadPacket(buf)
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, errNetClosed) {
				return
			}
			s.count(cNetReadError)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b := buf[:n]
		if !pkt.IPv4(b).IsVersion4() {
			s.count(cNetNotIPv4)
			continue
		}
		v, ok := s.byAddr.Load(netip.AddrFrom4(pkt.IPv4(b).DestinationAddress()))
		if !ok {
			s.count(cNetNoSession)
			continue
		}
		ss := v.(*session)
		if ss.rate.shape(toClient, b) { // shaping (issue 9): paced by ratelimit.go
			continue
		}
		ClampMSS(b, mss)
		ss.sendNet(b) // queued while the peer's window is full: encrypted when it leaves
	}
}

// allocIP gives the user its static address from chap-secrets, else a pool address.
func (s *Server) allocIP(user string) (netip.Addr, error) {
	if _, ips, ok := s.conf().Secrets.Lookup(user, s.conf().ServerName); ok {
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip)
			if err != nil || !a.Is4() {
				continue // "*" or a range/name we do not support: use the pool
			}
			if !s.pool.Take(a) {
				return netip.Addr{}, fmt.Errorf("pptp: static address %s of %q in use", a, user)
			}
			return a, nil
		}
	}
	return s.pool.Alloc()
}

func (s *Server) lookupPassword(user string) (string, bool) {
	secret, _, ok := s.conf().Secrets.Lookup(user, s.conf().ServerName)
	return secret, ok
}

// SessionInfo is one row of `pptpgw sessions`. Bytes and packets count IP packets
// (after decryption); the GRE counters count PPP frames including control traffic.
type SessionInfo struct {
	User          string            `json:"user"`
	Peer          string            `json:"peer"`
	LocalCallID   uint16            `json:"local_call_id"`
	PeerCallID    uint16            `json:"peer_call_id"`
	Address       string            `json:"address"`
	State         string            `json:"state"`
	Auth          string            `json:"auth"`
	Encryption    string            `json:"encryption"`
	BytesIn       uint64            `json:"bytes_in"`
	BytesOut      uint64            `json:"bytes_out"`
	PacketsIn     uint64            `json:"packets_in"`
	PacketsOut    uint64            `json:"packets_out"`
	GREPacketsIn  uint64            `json:"gre_packets_in"`
	GREPacketsOut uint64            `json:"gre_packets_out"`
	GREDrops      map[string]uint64 `json:"gre_drops,omitempty"`
	Started       time.Time         `json:"started"`
	UptimeSeconds float64           `json:"uptime_seconds"`

	// Shaping (issue 9): the session's rate limit (omitted: none) and the
	// IP packets from and to the client dropped because its pacing queue
	// was full.
	Rate         string `json:"rate,omitempty"`
	RateDropsIn  uint64 `json:"rate_drops_in"`
	RateDropsOut uint64 `json:"rate_drops_out"`
}

// Sessions lists live sessions, oldest first.
func (s *Server) Sessions() []SessionInfo {
	now := s.cfg.Now()
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, ss := range list {
		out = append(out, ss.info(now))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].LocalCallID < out[j].LocalCallID
	})
	return out
}

var errNetClosed = errors.New("pptp: net closed")

// answerDHCP handles a DHCPINFORM from the client when split routes are configured.
func (s *Server) answerDHCP(b []byte) ([]byte, bool) {
	if len(s.conf().SplitRoutes) == 0 {
		return nil, false
	}
	if !dhcpinform.IsDHCPRequest(b) {
		return nil, false
	}
	return dhcpinform.Answer(b, s.cfg.LocalIP, s.conf().SplitRoutes, s.conf().DNS)
}
