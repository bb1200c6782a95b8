package conntrack

import "time"

// The gateway's defaults: the configuration (package rules) starts from
// them and the engine falls back to them, so there is one set.
const (
	DefaultGREUnreplied = 30 * time.Second
	DefaultGREReplied   = 180 * time.Second
	DefaultControlIdle  = time.Hour
	DefaultQuarantine   = 2 * time.Minute
	DefaultHold         = 300 * time.Millisecond
	// DefaultMaxCalls bounds the call table (and, separately, the control
	// connection table).
	DefaultMaxCalls = 65536
	// ClosingTimeout is the idle timeout of a control connection after its
	// calls were stopped (Stop-Control-Connection, FIN or RST): long enough
	// for the remaining reply and FIN/ACK exchange to pass the helper.
	ClosingTimeout = 10 * time.Second
	// SetupTimeout is the idle timeout of state not yet established: a
	// control connection without its Start-Control-Connection-Reply and a
	// call without its reply (the kernel gives an unanswered SYN 60s too).
	// A PAC answers an Outgoing-Call-Request once the call is connected,
	// which takes seconds, even for a dial-up line.
	SetupTimeout = time.Minute

	// Per-source and per-connection limits (Limits). A client host runs one
	// control connection per VPN session and one call on it (pptp-linux,
	// Windows); a PAC concentrator behind one address, or an office NAT in
	// front of a forwarded server, a few dozen. An attacker needs far more to
	// hurt: 256 connections x 64 calls are out of reach because of the
	// 1024 calls per source, which is 1.6% of a (public, peer) call-ID pool
	// of 65535, so exhausting one takes 64 hosts.
	DefaultConnsPerSource = 256
	DefaultCallsPerConn   = 64
	DefaultCallsPerSource = 1024
)

// Limits bound what one source host and one control connection may hold in
// the table: the `limits:` block of the configuration and what the table
// runs with, one type for both. Zero fields take the defaults
// (WithDefaults).
type Limits struct {
	// ConnsPerSource: control connections opened by one host.
	ConnsPerSource int `yaml:"conns_per_source"`
	// CallsPerConn: calls on one control connection.
	CallsPerConn int `yaml:"calls_per_conn"`
	// CallsPerSource: calls on all control connections one host opened.
	CallsPerSource int `yaml:"calls_per_source"`
}

// WithDefaults returns l with zero (or negative) fields replaced by the
// defaults.
func (l Limits) WithDefaults() Limits {
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&l.ConnsPerSource, DefaultConnsPerSource},
		{&l.CallsPerConn, DefaultCallsPerConn},
		{&l.CallsPerSource, DefaultCallsPerSource},
	} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	return l
}

// Timeouts are the gateway's timeouts: the `timeouts:` block of the
// configuration (YAML durations such as "30s") and what the table and the
// engine run with, one type for both. Zero fields take the defaults
// (WithDefaults); a negative CallIDQuarantine disables quarantine.
type Timeouts struct {
	// GREUnreplied: a call set up (OCRP/ICCN) whose GRE was not yet seen in
	// both directions.
	GREUnreplied time.Duration `yaml:"gre_unreplied"`
	// GREReplied: a call whose GRE was seen in both directions.
	GREReplied time.Duration `yaml:"gre_replied"`
	// ControlIdle: an established control connection with no segment and
	// no GRE of its calls (Echo counts). State still in setup gets
	// SetupTimeout (or ControlIdle if that is shorter).
	ControlIdle time.Duration `yaml:"control_idle"`
	// CallIDQuarantine: how long nat holds a released outside call ID back
	// before it hands it out again.
	CallIDQuarantine time.Duration `yaml:"call_id_quarantine"`
	// Hold: how long nat holds a control segment that ends inside a call-ID
	// field, waiting for the rest, before it lets it go unmodified.
	Hold time.Duration `yaml:"hold"`
}

// WithDefaults returns t with zero fields replaced by the defaults.
func (t Timeouts) WithDefaults() Timeouts {
	if t.GREUnreplied <= 0 {
		t.GREUnreplied = DefaultGREUnreplied
	}
	if t.GREReplied <= 0 {
		t.GREReplied = DefaultGREReplied
	}
	if t.ControlIdle <= 0 {
		t.ControlIdle = DefaultControlIdle
	}
	if t.CallIDQuarantine == 0 {
		t.CallIDQuarantine = DefaultQuarantine
	}
	if t.CallIDQuarantine < 0 {
		t.CallIDQuarantine = 0
	}
	if t.Hold <= 0 {
		t.Hold = DefaultHold
	}
	return t
}
