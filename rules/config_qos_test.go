package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Shaping (issue 9): the keys of classes, shaping and policing.

const qosGood = `wan: wan0
lan: [br0]
classes:
  - name: interactive
    match:
      - {protocol: icmp}
      - {protocol: udp, dport: [53, "5060-5061"], dscp: ef}
  - name: pptp
    match:
      - {pptp: true}
      - {inside: 10.0.0.5}
  - name: bulk
shaping:
  - interface: wan0
    rate: 20mbit
    default: bulk
    classes:
      - {class: interactive, priority: 1, rate: 2mbit, ceil: 20mbit}
      - {class: pptp, priority: 2, rate: 10mbit}
      - {class: bulk, priority: 7, rate: 5mbit, ceil: 20mbit, burst: 30kb, quantum: 3000}
  - interface: br0
    rate: 50mbit
    default: bulk
    classes:
      - {class: interactive, priority: 1, rate: 5mbit}
      - {class: bulk, priority: 7, rate: 40mbit}
policing:
  pptp_call: {rate: 10mbit, burst: 100kb}
`

func TestQoSConfigValid(t *testing.T) {
	c, err := Parse([]byte(qosGood))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Classes) != 3 || len(c.Shaping) != 2 || c.Shaping[0].Classes[2].Burst != 30<<10 ||
		c.Policing.PPTPCall == nil || c.Policing.PPTPCall.Rate != 10e6 || c.Policing.PPTPCall.Burst != 100<<10 {
		t.Errorf("parsed %+v", c)
	}
	if p := NewPlan(c); len(p.Classes) != 3 {
		t.Errorf("plan classes = %d", len(p.Classes))
	}
}

// Every invalid shaping setting is refused with its file, line and key.
func TestQoSConfigInvalid(t *testing.T) {
	for _, c := range []struct {
		name, from, to string // replace from with to in qosGood
		field          string
		line           int
		msg            string
	}{
		{"unknown class", "{class: pptp, priority: 2", "{class: ppt, priority: 2", "shaping[0].classes[1].class", 19, `unknown class "ppt"`},
		{"unknown default", "default: bulk\n    classes:\n      - {class: interactive, priority: 1, rate: 2mbit, ceil",
			"default: bilk\n    classes:\n      - {class: interactive, priority: 1, rate: 2mbit, ceil", "shaping[0].default", 16, `unknown class "bilk"`},
		{"rate above root", "{class: pptp, priority: 2, rate: 10mbit}", "{class: pptp, priority: 2, rate: 30mbit}", "shaping[0].classes[1].rate", 19, "above the interface's rate 20mbit"},
		{"ceil above root", "rate: 2mbit, ceil: 20mbit}", "rate: 2mbit, ceil: 21mbit}", "shaping[0].classes[0].ceil", 18, "above the interface's rate"},
		{"sum above root", "{class: bulk, priority: 7, rate: 40mbit}", "{class: bulk, priority: 7, rate: 46mbit}", "shaping[1].classes", 24, "add up to 51mbit"},
		{"default without entry", "default: bulk\n    classes:\n      - {class: interactive, priority: 1, rate: 5mbit}\n      - {class: bulk, priority: 7, rate: 40mbit}",
			"default: bulk\n    classes:\n      - {class: interactive, priority: 1, rate: 5mbit}", "shaping[1].default", 23, "no entry"},
		{"priority", "priority: 7, rate: 40mbit", "priority: 8, rate: 40mbit", "shaping[1].classes[1].priority", 26, "out of range 0..7"},
		{"ingress", "  - interface: br0\n", "  - interface: br0\n    ingress: true\n", "shaping[1].ingress", 22, "not supported"},
		{"twice", "  - interface: br0\n", "  - interface: wan0\n", "shaping[1].interface", 21, "already shaped"},
		{"duplicate class", "  - name: bulk\n", "  - name: pptp\n", "classes[2].name", 12, "already classes[1]"},
		{"match everything", "{protocol: icmp}", "{}", "classes[0].match[0]", 6, "matches every packet"},
		{"pptp and ports", "{pptp: true}", "{pptp: true, protocol: tcp}", "classes[1].match[0]", 10, "cannot be combined"},
		{"ports without tcp/udp", "{protocol: udp, dport", "{protocol: icmp, dport", "classes[0].match[1].protocol", 7, "need protocol: tcp or udp"},
		{"any prefix", "{protocol: udp, dport", "{src: 0.0.0.0/0, protocol: udp, dport", "classes[0].match[1].src", 7, "matches every address"},
		{"bad inside", "inside: 10.0.0.5", "inside: host5", "classes[1].match[1].inside", 11, "not an IPv4 address"},
		{"policing burst", "burst: 100kb}", "burst: 1000}", "policing.pptp_call.burst", 28, "less than one full-size frame"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(qosGood, c.from) {
				t.Fatalf("%q not in the config", c.from)
			}
			p := filepath.Join(t.TempDir(), "gw.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(qosGood, c.from, c.to, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
			var fe *FieldError
			var found *FieldError
			for _, e := range unwrapAll(err) {
				if errors.As(e, &fe) && fe.Field == c.field {
					found = fe
				}
			}
			if found == nil {
				t.Fatalf("no error for %s; got %v", c.field, err)
			}
			if found.File != p || found.Line != c.line || !strings.Contains(found.Msg, c.msg) {
				t.Errorf("got %v; want %s:%d: %s: ...%s...", found, p, c.line, c.field, c.msg)
			}
		})
	}
}

func unwrapAll(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		return j.Unwrap()
	}
	return []error{err}
}

// YAML refuses what cannot be said twice or in the wrong units: two
// defaults on one interface, a size where a rate goes.
func TestQoSConfigParseErrors(t *testing.T) {
	for _, c := range []struct{ from, to, msg string }{
		{"    default: bulk\n", "    default: bulk\n    default: pptp\n", `line 17: mapping key "default" already defined at line 16`},
		{"rate: 20mbit", "rate: 20mb", "line 15: rate \"20mb\": unknown unit"},
		{"burst: 100kb}", "burst: 100kbit/s}", "line 28: size"},
		{"{protocol: icmp}", "{protocol: sctp}", "line 6: protocol"},
		{"rate: 10mbit, burst", "rat: 10mbit, burst", "unknown field \"rat\""},
	} {
		_, err := Parse([]byte(strings.Replace(qosGood, c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q -> %q: err = %v, want %q", c.from, c.to, err, c.msg)
		}
	}
}

func TestQoSConfigDocumented(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"classes", "name", "match", "src", "dst", "protocol", "sport", "dport", "dscp", "pptp", "inside",
		"shaping", "interface", "rate", "default", "ingress", "class", "priority", "ceil", "burst", "quantum",
		"policing", "pptp_call"} {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("CONFIG.md does not mention `%s`", k)
		}
	}
}
