package ppp

import (
	"sync/atomic"

	"pptpgw/internal/metrics"
)

// ServerTotals are counters a server keeps over all its sessions, for its
// Prometheus families (issue 8): IP bytes in each direction and
// authentication failures by method. Sessions add to them as they count
// their own (one atomic add; no allocation). Share one through
// Config.ServerTotals.
type ServerTotals struct {
	bytesIn, bytesOut atomic.Uint64
	authFailed        [AuthMSCHAPv2 + 1]atomic.Uint64
}

var (
	descBytes = &metrics.Desc{Name: "bytes_total", Labels: []string{"direction"},
		Help: "IP bytes carried by all sessions, by direction (in: from clients, out: to clients)."}
	descAuthFailures = &metrics.Desc{Name: "auth_failures_total", Labels: []string{"method"},
		Help: "PPP authentications that failed (wrong credentials), by method."}
)

// Collect emits the totals (metrics.Source), keys "bytes_in", "bytes_out"
// and "auth_failed_<method>".
func (t *ServerTotals) Collect(emit func(metrics.Sample)) {
	emit(metrics.Sample{Desc: descBytes, LabelValues: []string{"in"}, Key: "bytes_in", Value: t.bytesIn.Load()})
	emit(metrics.Sample{Desc: descBytes, LabelValues: []string{"out"}, Key: "bytes_out", Value: t.bytesOut.Load()})
	for m := AuthPAP; m <= AuthMSCHAPv2; m++ {
		emit(metrics.Sample{Desc: descAuthFailures, LabelValues: []string{m.String()},
			Key: "auth_failed_" + m.String(), Value: t.authFailed[m].Load()})
	}
}

func (s *Session) totalBytes(in bool, n int) {
	t := s.cfg.ServerTotals
	if t == nil {
		return
	}
	if in {
		t.bytesIn.Add(uint64(n))
	} else {
		t.bytesOut.Add(uint64(n))
	}
}

func (s *Session) totalAuthFailed(m AuthMethod) {
	if t := s.cfg.ServerTotals; t != nil && int(m) < len(t.authFailed) {
		t.authFailed[m].Add(1)
	}
}
