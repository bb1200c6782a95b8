package rules

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"pptpgw/conntrack"
)

func TestDefault(t *testing.T) {
	c := Default()
	if c.Table != "pptpgw" || c.Queue != 47 || !c.FailOpen || c.Strict || c.MaxCalls != 65536 ||
		c.AdminSocket != "/run/pptpgw/admin.sock" || c.MSSClamp.Mode != MSSAuto || !c.IPForward ||
		c.LogLevel != "info" || c.PublicAddress != "" || len(c.Forwards) != 0 {
		t.Errorf("Default() = %+v", c)
	}
	want := conntrack.Timeouts{GREUnreplied: 30 * time.Second, GREReplied: 180 * time.Second, ControlIdle: time.Hour, CallIDQuarantine: 2 * time.Minute, Hold: 300 * time.Millisecond}
	if c.Timeouts != want {
		t.Errorf("Default().Timeouts = %+v, want %+v", c.Timeouts, want)
	}
	if wl := (conntrack.Limits{ConnsPerSource: 256, CallsPerConn: 64, CallsPerSource: 1024}); c.Limits != wl {
		t.Errorf("Default().Limits = %+v, want %+v", c.Limits, wl)
	}
	// Defaults alone lack wan and lan, and nothing else.
	err := c.Validate()
	if got := fieldsOf(err); strings.Join(got, ",") != "wan,lan" {
		t.Errorf("Default().Validate() fields = %v (%v), want wan,lan", got, err)
	}
	c.WAN, c.LAN = "eth0", []string{"eth1"}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults + wan/lan: %v", err)
	}
}

func fieldsOf(err error) []string {
	var out []string
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		for _, e := range j.Unwrap() {
			var fe *FieldError
			if errors.As(e, &fe) {
				out = append(out, fe.Field)
			}
		}
	}
	return out
}

func TestExampleLoadsAndValidates(t *testing.T) {
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.WAN != "eth0" || len(c.LAN) != 1 || c.LAN[0] != "eth1" || len(c.Forwards) != 1 ||
		c.Forwards[0].Port != 1723 || c.Forwards[0].Addr().String() != "10.0.1.5" {
		t.Errorf("example.yaml decoded to %+v", c)
	}
	// Apart from wan/lan/forwards, the example shows the defaults.
	d := Default()
	c.WAN, c.LAN, c.Forwards, c.lines, c.file = d.WAN, d.LAN, d.Forwards, nil, ""
	if !equalConfig(c, d) {
		t.Errorf("example.yaml differs from Default() beyond wan/lan/forwards:\n%+v\n%+v", c, d)
	}
}

func equalConfig(a, b *Config) bool {
	return a.Table == b.Table && a.Queue == b.Queue && a.FailOpen == b.FailOpen && a.Strict == b.Strict &&
		a.Timeouts == b.Timeouts && a.MaxCalls == b.MaxCalls && a.Limits == b.Limits && a.AdminSocket == b.AdminSocket &&
		a.MSSClamp == b.MSSClamp && a.IPForward == b.IPForward && a.LogLevel == b.LogLevel &&
		a.PublicAddress == b.PublicAddress
}

func TestParseValues(t *testing.T) {
	c, err := Parse([]byte(`
wan: wan0
lan: [lan0, lan1]
public_address: 203.0.113.9
table: gw_test
queue: 65535
fail_open: false
strict: yes
timeouts: {gre_unreplied: 10s, gre_replied: 1m30s, control_idle: 20m, call_id_quarantine: 1s, hold: 50ms}
max_calls: 10
limits: {conns_per_source: 3, calls_per_conn: 4, calls_per_source: 5}
admin_socket: /tmp/x.sock
mss_clamp: 1400
ip_forward: off
forwards: [{port: 1724, to: 10.0.0.9}]
log_level: DEBUG
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.PublicAddr().String() != "203.0.113.9" || c.Queue != 65535 || c.FailOpen || !c.Strict ||
		c.Timeouts.GREReplied != 90*time.Second || c.Timeouts.Hold != 50*time.Millisecond || c.MaxCalls != 10 ||
		c.Limits != (conntrack.Limits{ConnsPerSource: 3, CallsPerConn: 4, CallsPerSource: 5}) ||
		c.MSSClamp != (MSSClamp{Mode: MSSFixed, Value: 1400}) || c.IPForward || c.SlogLevel().String() != "DEBUG" {
		t.Errorf("decoded %+v", c)
	}
	p := NewPlan(c)
	if p.Table != "gw_test" || p.WAN != "wan0" || !p.PublicAddr.IsValid() || p.Queue != 65535 || p.FailOpen ||
		p.MSS.Value != 1400 || len(p.Forwards) != 1 || len(p.LAN) != 2 {
		t.Errorf("NewPlan = %+v", p)
	}
	for in, want := range map[string]MSSClamp{"mss_clamp: off": {Mode: MSSOff}, "mss_clamp: auto": {Mode: MSSAuto},
		"mss_clamp: false": {Mode: MSSOff}, `mss_clamp: "1360"`: {Mode: MSSFixed, Value: 1360}} {
		c, err := Parse([]byte(in))
		if err != nil || c.MSSClamp != want {
			t.Errorf("%s: %+v, %v", in, c, err)
		}
	}
	if c, err := Parse(nil); err != nil || !equalConfig(c, Default()) {
		t.Errorf("empty file: %+v, %v", c, err)
	}
}

// Decoding errors carry the line of the offending key.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"wan: eth0\nwna: eth1\n", `line 2: unknown field "wna"`},
		{"wan: eth0\ntimeouts:\n  hodl: 1s\n", `line 3: unknown field "hodl"`},
		{"forwards:\n  - port: 1723\n    too: 10.0.0.1\n", `line 3: unknown field "too"`},
		{"timeouts:\n  hold: 30\n", "line 2: cannot unmarshal !!int `30` into time.Duration"},
		{"timeouts:\n  hold: 3 seconds\n", "line 2: cannot unmarshal !!str `3 seconds` into time.Duration"},
		{"queue: 70000\n", "line 1: cannot unmarshal !!int `70000` into uint16"},
		{"queue: -1\n", "line 1: cannot unmarshal !!int `-1` into uint16"},
		{"max_calls: many\n", "line 1: cannot unmarshal !!str `many` into int"},
		{"fail_open: maybe\n", "line 1: cannot unmarshal !!str `maybe` into bool"},
		{"lan: eth1\n", "line 1: cannot unmarshal !!str `eth1` into []string"},
		{"\n\nmss_clamp: huge\n", `line 3: mss_clamp must be "auto", "off" or a number, not "huge"`},
		{"mss_clamp: 40\n", "line 1: mss_clamp 40 out of range 88..65495"},
		{"mss_clamp: [1]\n", `line 1: mss_clamp must be "auto", "off" or a number`},
		{"wan: [\n", "line 1: did not find expected node content"},
		{"wan: a\n---\nwan: b\n", "more than one YAML document"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestLoadErrorsNameFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gw.yaml")
	os.WriteFile(p, []byte("wan: eth0\nlan: [eth1]\nqueue: 5\nlog_level: loud\nforwards:\n  - {port: 1723, to: 10.0.0.1}\n  - {port: 1723, to: 10.0.0.2}\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, want := range []string{
		p + `:4: log_level: "loud" is not one of debug, info, warn, error`,
		p + ":7: forwards[1].port: port 1723 is already forwarded by forwards[0]",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want %q", err, want)
		}
	}
	os.WriteFile(p, []byte("wan: eth0\nbogus: 1\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "config "+p+": line 2: unknown field \"bogus\"") {
		t.Errorf("Load(bogus) = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v", err)
	}
}

// Every validation rule, one bad value at a time on top of a valid config.
func TestValidateErrors(t *testing.T) {
	base := "wan: wan0\nlan: [lan0]\n"
	for _, tc := range []struct{ in, field, msg string }{
		{"lan: [lan0]\n", "wan", "required"},
		{"wan: wan0\n", "lan", "required"},
		{base + "lan: []\n", "lan", "required"},
		{base + "wan: this-name-is-too-long\n", "wan", "not a valid interface name"},
		{base + "wan: \"a b\"\n", "wan", "not a valid interface name"},
		{base + "lan: [ok0, \"bad/x\"]\n", "lan[1]", "not a valid interface name"},
		{base + "lan: [wan0]\n", "lan[0]", "also the wan interface"},
		{base + "lan: [lan0, lan0]\n", "lan[1]", "listed twice"},
		{base + "public_address: 203.0.113\n", "public_address", "not an IP address"},
		{base + "public_address: 2001:db8::1\n", "public_address", "not an IPv4 address"},
		{base + "public_address: 0.0.0.0\n", "public_address", "not a unicast address"},
		{base + "public_address: 224.0.0.1\n", "public_address", "not a unicast address"},
		{base + "table: \"\"\n", "table", "not a valid table name"},
		{base + "table: 9lives\n", "table", "not a valid table name"},
		{base + "table: \"a;b\"\n", "table", "not a valid table name"},
		{base + "timeouts: {gre_unreplied: 0s}\n", "timeouts.gre_unreplied", "must be positive"},
		{base + "timeouts: {gre_replied: -1s}\n", "timeouts.gre_replied", "must be positive"},
		{base + "timeouts: {control_idle: 0s}\n", "timeouts.control_idle", "must be positive"},
		{base + "timeouts: {call_id_quarantine: 0s}\n", "timeouts.call_id_quarantine", "must be positive"},
		{base + "timeouts: {hold: 0s}\n", "timeouts.hold", "must be positive"},
		{base + "timeouts: {hold: 11s}\n", "timeouts.hold", "longer than the 10s maximum"},
		{base + "timeouts: {gre_unreplied: 5m, gre_replied: 1m}\n", "timeouts.gre_replied", "shorter than gre_unreplied"},
		{base + "max_calls: 0\n", "max_calls", "out of range 1..4194304"},
		{base + "max_calls: 5000000\n", "max_calls", "out of range"},
		{base + "limits: {conns_per_source: 0}\n", "limits.conns_per_source", "out of range 1..4194304"},
		{base + "limits: {calls_per_conn: -1}\n", "limits.calls_per_conn", "out of range 1..65535"},
		{base + "limits: {calls_per_conn: 65536}\n", "limits.calls_per_conn", "out of range 1..65535"},
		{base + "limits: {calls_per_source: 0}\n", "limits.calls_per_source", "out of range 1..4194304"},
		{base + "admin_socket: \"\"\n", "admin_socket", "required"},
		{base + "admin_socket: run/x.sock\n", "admin_socket", "must be an absolute path"},
		{base + "admin_socket: /" + strings.Repeat("x", 110) + "\n", "admin_socket", "at most 107"},
		{base + "forwards: [{to: 10.0.0.1}]\n", "forwards[0].port", "required"},
		{base + "forwards: [{port: 1723}]\n", "forwards[0].to", "required"},
		{base + "forwards: [{port: 1723, to: \"10.0.0.1:1723\"}]\n", "forwards[0].to", "not an IP address"},
		{base + "forwards: [{port: 1723, to: \"::1\"}]\n", "forwards[0].to", "not an IPv4 address"},
		{base + "forwards: [{port: 1723, to: 255.255.255.255}]\n", "forwards[0].to", "not a unicast address"},
		{base + "forwards: [{port: 1723, to: 10.0.0.1}, {port: 1723, to: 10.0.0.2}]\n", "forwards[1].port", "already forwarded by forwards[0]"},
		{base + "log_level: verbose\n", "log_level", "not one of debug, info, warn, error"},
	} {
		c, err := Parse([]byte(dedupKeys(tc.in)))
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		err = c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%q: Validate() = %v, want a FieldError", tc.in, err)
			continue
		}
		if got := fieldsOf(err); len(got) != 1 || got[0] != tc.field || !strings.Contains(fe.Msg, tc.msg) {
			t.Errorf("%q: Validate() = %v (fields %v), want one error on %s containing %q", tc.in, err, got, tc.field, tc.msg)
		}
		if fe.Line == 0 && tc.field != "wan" && tc.field != "lan" && tc.field != "admin_socket" {
			// Every field that was written in the YAML gets its line.
			t.Errorf("%q: error without line number: %v", tc.in, err)
		}
	}
	// A fixed MSS set from code (not YAML) is checked too.
	c := Default()
	c.WAN, c.LAN = "a", []string{"b"}
	c.MSSClamp = MSSClamp{Mode: MSSFixed, Value: 10}
	if got := fieldsOf(c.Validate()); len(got) != 1 || got[0] != "mss_clamp" {
		t.Errorf("MSS 10 from code: %v", got)
	}
}

// dedupKeys keeps the last of repeated top-level keys, so the table above can
// override "base" lines (YAML itself rejects duplicate keys).
func dedupKeys(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	last := map[string]int{}
	key := regexp.MustCompile(`^([a-z_]+):`)
	for i, l := range lines {
		if m := key.FindStringSubmatch(l); m != nil {
			last[m[1]] = i
		}
	}
	var out []string
	for i, l := range lines {
		if m := key.FindStringSubmatch(l); m != nil && last[m[1]] != i {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n") + "\n"
}

func TestValidateReportsAll(t *testing.T) {
	c, err := Parse([]byte("wan: \"\"\nlan: [x]\nqueue: 1\nqueue_len: 0\nmax_calls: 0\nlog_level: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(fieldsOf(c.Validate()), ","); got != "wan,queue_len,max_calls,log_level" {
		t.Errorf("fields = %s", got)
	}
}

// CONFIG.md documents every YAML key and every default.
func TestConfigDocCoversFields(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	for _, k := range []string{"wan", "lan", "public_address", "table", "queue", "queue_len", "fail_open", "strict", "timeouts",
		"gre_unreplied", "gre_replied", "control_idle", "call_id_quarantine", "hold", "max_calls", "admin_socket",
		"limits", "conns_per_source", "calls_per_conn", "calls_per_source",
		"mss_clamp", "ip_forward", "forwards", "port", "to", "log_level"} {
		if !strings.Contains(s, "`"+k+"`") {
			t.Errorf("CONFIG.md does not mention `%s`", k)
		}
	}
	for _, d := range []string{"`pptpgw`", "`47`", "`8192`", "`65536`", "`/run/pptpgw/admin.sock`", "`30s`", "`3m`", "`1h`",
		"`2m`", "`300ms`", "`auto`", "`info`", "`256`", "`64`", "`1024`"} {
		if !strings.Contains(s, d) {
			t.Errorf("CONFIG.md does not give the default %s", d)
		}
	}
	ex, _ := os.ReadFile("example.yaml")
	if !strings.Contains(s, strings.TrimSpace(string(ex))) {
		t.Errorf("CONFIG.md does not embed example.yaml verbatim")
	}
}

// A value a flag replaced after Load is not blamed on the file's line.
func TestValidateFlagOverrideHasNoLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(p, []byte("lan: [eth1]\nwan: eth0\ntable: \"9bad\"\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	c.WAN = "bad/name" // as --wan would
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "\nwan: \"bad/name\" is not a valid interface name") && !strings.HasPrefix(err.Error(), "wan: \"bad/name\"") {
		t.Errorf("overridden wan: %v", err)
	}
	if !strings.Contains(err.Error(), p+":3: table:") {
		t.Errorf("table from the file should keep its line: %v", err)
	}
}

// FuzzParse: no input makes Parse or Validate panic, and whatever Parse
// accepts and Validate passes yields a Plan that passes Plan.check.
func FuzzParse(f *testing.F) {
	ex, _ := os.ReadFile("example.yaml")
	f.Add(ex)
	f.Add([]byte("wan: a\nlan: [b]\nmss_clamp: 1400\nforwards: [{port: 1, to: 10.0.0.1}]\n"))
	f.Add([]byte("timeouts: {hold: 1h}\nqueue: 65535\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		if err := NewPlan(c).check(); err != nil {
			t.Fatalf("valid config gives a bad plan: %v\n%s", err, b)
		}
	})
}
