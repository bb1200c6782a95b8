package pptp

import (
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"pptpgw/internal/metrics"
	"pptpgw/internal/promexport"
)

// The server's Prometheus families (issue 8): after one good session with
// traffic and one wrong password, a scrape passes `promtool check metrics`
// and carries the series operators alert on, with the values of the admin
// reply's counters.
func TestServerPrometheusFamilies(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make test installs it)")
	}
	r := newRig(t, nil)
	if _, err := r.dial(t, "alice", "wrong", nil); err == nil {
		t.Fatal("wrong password accepted")
	}
	c, err := r.dial(t, "bob", "hunter2", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		ping(t, c, behind, 200)
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 1 })

	src := metrics.SourceFunc(func(emit func(metrics.Sample)) {
		for _, s := range r.srv.Metrics() {
			emit(s)
		}
	})
	if err := r.srv.Metrics().Validate(); err != nil {
		t.Fatal(err)
	}
	exp := promexport.New("pptpgw_serve_", "test", "go", src)
	rec := httptest.NewRecorder()
	exp.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	text := rec.Body.String()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	m := r.srv.Counters()
	for series, want := range map[string]uint64{
		"pptpgw_serve_sessions_active":                        1,
		"pptpgw_serve_session_setups_total":                   m["sessions_up"],
		`pptpgw_serve_auth_failures_total{method="mschapv2"}`: m["auth_failed_mschapv2"],
		`pptpgw_serve_bytes_total{direction="in"}`:            m["bytes_in"],
		`pptpgw_serve_bytes_total{direction="out"}`:           m["bytes_out"],
	} {
		line := series + " "
		i := strings.Index(text, "\n"+line)
		if i < 0 {
			t.Errorf("scrape lacks %s", series)
			continue
		}
		got := strings.SplitN(text[i+1+len(line):], "\n", 2)[0]
		if got != strconvU(want) {
			t.Errorf("%s = %s, admin reply says %d", series, got, want)
		}
	}
	if m["auth_failed_mschapv2"] != 1 || m["sessions_up"] != 1 {
		t.Errorf("auth_failed_mschapv2 = %d, sessions_up = %d; want 1, 1", m["auth_failed_mschapv2"], m["sessions_up"])
	}
	// Five pings of 200 bytes each way at least (IPCP may add a DHCPINFORM).
	if m["bytes_in"] < 5*200 || m["bytes_out"] < 5*200 {
		t.Errorf("bytes_in %d, bytes_out %d; want >= 1000 each", m["bytes_in"], m["bytes_out"])
	}
	if !strings.Contains(text, "pptpgw_serve_gre_drops_total{") {
		t.Error("scrape lacks pptpgw_serve_gre_drops_total")
	}
	c.Close()
}

func strconvU(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
