package ppp

import (
	"io"
	"log/slog"
	"net/netip"
	"time"

	"pptpgw/internal/metrics"
	"pptpgw/pptp/mppe"
)

// Role says which end of the link a Session plays: the Server authenticates
// the peer and assigns its address, the Client is authenticated and takes
// the address it is given.
type Role uint8

const (
	Server Role = iota
	Client
)

func (r Role) String() string {
	if r == Client {
		return "client"
	}
	return "server"
}

// AuthMethod is an authentication protocol negotiated by the LCP
// Authentication-Protocol option.
type AuthMethod uint8

const (
	AuthNone     AuthMethod = iota
	AuthPAP                 // RFC 1334, LCP option C023
	AuthCHAPMD5             // RFC 1994, LCP option C223 05
	AuthMSCHAPv2            // RFC 2759, LCP option C223 81
)

func (a AuthMethod) String() string {
	switch a {
	case AuthPAP:
		return "pap"
	case AuthCHAPMD5:
		return "chap-md5"
	case AuthMSCHAPv2:
		return "mschapv2"
	}
	return "none"
}

// Defaults of the RFC 1661 §4.6 counters and timer, and of the link.
const (
	DefaultMRU          = 1400 // our MTU over PPTP
	DefaultRestartTimer = 3 * time.Second
	DefaultMaxConfigure = 10
	DefaultMaxTerminate = 2
	DefaultMaxFailure   = 5
	DefaultServerName   = "pptpgw"
)

// Config configures one Session. The zero value of most fields means the
// default written next to it. RequireMPPE is a plain bool, so its zero value
// is false: use DefaultConfig for the documented policy (MS-CHAPv2 with
// MPPE-128 required).
type Config struct {
	Role Role
	MRU  uint16 // default DefaultMRU

	// Auth: for the server, the acceptable methods in preference order
	// (default [AuthMSCHAPv2]); AuthNone in the list lets a peer that
	// refuses to authenticate in. For the client, the methods it is willing
	// to use (default MS-CHAPv2, CHAP-MD5, PAP; AuthNone is always accepted).
	Auth []AuthMethod

	// RequireMPPE: refuse to carry IP without MPPE (terminate if CCP fails,
	// the peer refuses MPPE or the auth method yields no keys).
	RequireMPPE bool
	// MPPEStrengths allowed, default [Bits128]. MPPE is offered whenever the
	// auth method is MS-CHAPv2 (the only one that yields keys).
	MPPEStrengths []mppe.Strength
	// AllowStateless, AllowStateful: both false means both true.
	// When both are allowed, stateless is preferred (RFC 3078 H bit).
	AllowStateless, AllowStateful bool

	// Server side.
	LocalIP netip.Addr // our tunnel address, announced in IPCP
	// AllocIP gives the peer its address. It is called once the peer has
	// authenticated (never before), so a server may take its address, and
	// count the peer as authenticated, there.
	AllocIP   func(user string) (netip.Addr, error)
	ReleaseIP func(netip.Addr) // called once when the session ends
	DNS       []netip.Addr     // IPCP options 129/131
	Lookup    func(user string) (password string, ok bool)
	Name      string // our CHAP name, default DefaultServerName

	// Client side.
	Username, Password string

	// LCP echo keepalive: an Echo-Request every EchoInterval (0 = off); the
	// link is closed after EchoFailures unanswered requests (default 3).
	EchoInterval time.Duration
	EchoFailures int

	// RFC 1661 §4.6 restart timer and counters (0 = default).
	RestartTimer                           time.Duration
	MaxConfigure, MaxTerminate, MaxFailure int

	Now    func() time.Time // default time.Now
	Rand   io.Reader        // default crypto/rand.Reader
	Logger *slog.Logger     // default slog.Default()

	// Totals, when set (NewCounters), counts every Reason of this session
	// too: a server shares one among its sessions for its own counters.
	Totals *metrics.Counters

	// ServerTotals, when set, counts IP bytes and failed authentications
	// by method over all of a server's sessions (issue 8, totals_obs.go).
	ServerTotals *ServerTotals
}

// DefaultConfig returns the documented default policy for role: MS-CHAPv2
// (the client also accepts CHAP-MD5 and PAP), MPPE-128 required, stateless
// or stateful, MRU 1400.
func DefaultConfig(role Role) Config {
	c := Config{Role: role, RequireMPPE: true}
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.MRU == 0 {
		c.MRU = DefaultMRU
	}
	if len(c.Auth) == 0 {
		if c.Role == Server {
			c.Auth = []AuthMethod{AuthMSCHAPv2}
		} else {
			c.Auth = []AuthMethod{AuthMSCHAPv2, AuthCHAPMD5, AuthPAP}
		}
	}
	if len(c.MPPEStrengths) == 0 {
		c.MPPEStrengths = []mppe.Strength{mppe.Bits128}
	}
	if !c.AllowStateless && !c.AllowStateful {
		c.AllowStateless, c.AllowStateful = true, true
	}
	if c.Name == "" {
		c.Name = DefaultServerName
	}
	if c.EchoFailures <= 0 {
		c.EchoFailures = 3
	}
	if c.RestartTimer <= 0 {
		c.RestartTimer = DefaultRestartTimer
	}
	if c.MaxConfigure <= 0 {
		c.MaxConfigure = DefaultMaxConfigure
	}
	if c.MaxTerminate <= 0 {
		c.MaxTerminate = DefaultMaxTerminate
	}
	if c.MaxFailure <= 0 {
		c.MaxFailure = DefaultMaxFailure
	}
}

func (c *Config) allowsAuth(m AuthMethod) bool {
	for _, a := range c.Auth {
		if a == m {
			return true
		}
	}
	return false
}
