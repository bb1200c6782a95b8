package qos

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Rate
		err  string
	}{
		{"20mbit", 20_000_000, ""},
		{"20Mbit", 20_000_000, ""},
		{" 512kbit ", 512_000, ""},
		{"1gbit", 1_000_000_000, ""},
		{"1.5mbit", 1_500_000, ""},
		{"1000", 1000, ""}, // bare: bits per second, as tc
		{"100bit", 100, ""},
		{"125kbps", 1_000_000, ""}, // bytes per second, as tc
		{"1mbps", 8_000_000, ""},
		{"1mibit", 1 << 20, ""},
		{"1tbit", 1_000_000_000_000, ""},
		{"2tbit", 0, "maximum"},
		{"0mbit", 0, "at least"},
		{"0.1bit", 0, "at least"},
		{"mbit", 0, "number"},
		{"", 0, "number"},
		{"10 furlongs", 0, "unknown unit"},
		{"10mb", 0, "unknown unit"}, // a size unit, not a rate
		{"1.2.3mbit", 0, "bad number"},
		{"-5mbit", 0, "number"},
	} {
		got, err := ParseRate(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseRate(%q) = %v, %v; want error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %d", c.in, uint64(got), err, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Size
		err  string
	}{
		{"1500", 1500, ""},
		{"1500b", 1500, ""},
		{"100kb", 102400, ""},
		{"100k", 102400, ""},
		{"2mb", 2 << 20, ""},
		{"1gb", 1 << 30, ""},
		{"80kbit", 10000, ""},
		{"2gb", 0, "maximum"},
		{"0", 0, "at least"},
		{"10kbps", 0, "unknown unit"},
		{"x", 0, "number"},
	} {
		got, err := ParseSize(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSize(%q) = %v, %v; want error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestRateStringRoundTrip(t *testing.T) {
	for _, r := range []Rate{1, 999, 1000, 1500, 20_000_000, 2_500_000, 1_000_000_000, 1 << 20} {
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Errorf("%d -> %q -> %d, %v", r, r.String(), back, err)
		}
	}
	if s := Rate(20_000_000).String(); s != "20mbit" {
		t.Errorf("String = %q", s)
	}
	for _, z := range []Size{1, 1514, 1024, 100 << 10, 3 << 20} {
		back, err := ParseSize(z.String())
		if err != nil || back != z {
			t.Errorf("%d -> %q -> %d, %v", z, z.String(), back, err)
		}
	}
}

func TestYAMLFields(t *testing.T) {
	var m struct {
		Match []Match `yaml:"match"`
		R     Rate    `yaml:"r"`
	}
	in := `
r: 10mbit
match:
  - {src: 10.0.0.0/8, dst: [192.0.2.1, 198.51.100.0/24], protocol: tcp, dport: ["22", "1000-2000"], dscp: ef}
  - {pptp: true, inside: 10.0.0.5}
  - {pptp: gre}
  - {protocol: 99, sport: 53}
`
	if err := yaml.Unmarshal([]byte(in), &m); err != nil {
		t.Fatal(err)
	}
	a := m.Match[0]
	if m.R != 10_000_000 || len(a.Src) != 1 || a.Src[0].String() != "10.0.0.0/8" || len(a.Dst) != 2 ||
		a.Dst[0].String() != "192.0.2.1/32" || a.Protocol != 6 || len(a.Dport) != 2 || a.Dport[1] != (PortRange{1000, 2000}) ||
		!a.DSCP.Set || a.DSCP.Value != 46 || !a.Kernel() {
		t.Errorf("alternative 0 = %+v", a)
	}
	if b := m.Match[1]; b.PPTP != PPTPBoth || b.InsideAddr().String() != "10.0.0.5" || b.Kernel() {
		t.Errorf("alternative 1 = %+v", b)
	}
	if m.Match[2].PPTP != PPTPGRE || m.Match[3].Protocol != 99 || m.Match[3].Sport[0] != (PortRange{53, 53}) {
		t.Errorf("alternatives 2, 3 = %+v", m.Match[2:])
	}
	for _, bad := range []string{
		"match: [{src: 10.0.0.0/33}]", "match: [{src: 2001:db8::/32}]", "match: [{protocol: sctpx}]",
		"match: [{dport: 0}]", "match: [{dport: 2000-1000}]", "match: [{dscp: af99}]", "match: [{dscp: 64}]",
		"match: [{pptp: maybe}]", "r: [1]", "match: [{src: {a: b}}]",
	} {
		if err := yaml.Unmarshal([]byte(bad), &m); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%s: err = %v, want one naming line 1", bad, err)
		}
	}
}

func TestClassID(t *testing.T) {
	seen := map[uint32]bool{}
	for i := range 255 {
		id := ClassID(i)
		if id>>16 != 1 || id&0xf != 0 || id&0xffff == 1 || seen[id] || ClassIndex(id) != i {
			t.Fatalf("ClassID(%d) = %#x (index back %d)", i, id, ClassIndex(id))
		}
		seen[id] = true
	}
	if ClassID(0) != 0x10010 {
		t.Errorf("ClassID(0) = %#x, want 1:10", ClassID(0))
	}
	for _, id := range []uint32{0, 6, 0x10001, 0x10011, 0x20010} {
		if ClassIndex(id) != -1 {
			t.Errorf("ClassIndex(%#x) = %d", id, ClassIndex(id))
		}
	}
}

func TestSizing(t *testing.T) {
	if q := Quantum(2_000_000); q != 2500 {
		t.Errorf("Quantum(2mbit) = %d", q)
	}
	if q := Quantum(64_000); q != 1514 {
		t.Errorf("Quantum(64kbit) = %d", q)
	}
	if q := Quantum(10_000_000_000); q != 60000 {
		t.Errorf("Quantum(10gbit) = %d", q)
	}
	// 20mbit for 80 ms is 200 kB: 132 full-size packets.
	if l := PfifoLimit(20_000_000); l != 132 {
		t.Errorf("PfifoLimit(20mbit) = %d", l)
	}
	if l := PfifoLimit(64_000); l != 8 {
		t.Errorf("PfifoLimit(64kbit) = %d", l)
	}
}

// FuzzParse: the parsers never panic, accept only values in range, and
// what they accept prints back to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"20mbit", "1.5kbps", "100kb", "1e9", "0x10", ".5gbit", "1500", "9999999999999tbit"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseRate(s); err == nil {
			if r < 1 || r > MaxRate {
				t.Fatalf("ParseRate(%q) = %d out of range", s, r)
			}
			if back, err := ParseRate(r.String()); err != nil || back != r {
				t.Fatalf("ParseRate(%q) = %d -> %q -> %d, %v", s, r, r.String(), back, err)
			}
		}
		if z, err := ParseSize(s); err == nil {
			if z < 1 || z > MaxSize {
				t.Fatalf("ParseSize(%q) = %d out of range", s, z)
			}
			if back, err := ParseSize(z.String()); err != nil || back != z {
				t.Fatalf("ParseSize(%q) = %d -> %q -> %d, %v", s, z, z.String(), back, err)
			}
		}
		_, _ = ParsePortRange(s)
		_, _ = ParseDSCP(s)
		_, _ = ParseProtocol(s)
	})
}
