package qos

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Rate is a rate in bits per second, written in tc(8)'s units.
type Rate uint64

// Size is a size in bytes, written in tc(8)'s units.
type Size uint64

// MaxRate bounds a Rate (1 tbit/s): far above any link this runs on, and
// small enough that rate*time arithmetic in bytes never overflows.
const MaxRate Rate = 1_000_000_000_000

// MaxSize bounds a Size (1 GiB).
const MaxSize Size = 1 << 30

// rateUnits are tc(8)'s rate units (tc-htb(8), "UNITS"): bit and a bare
// number are bits per second; "bps" is BYTES per second, as in tc.
var rateUnits = map[string]float64{
	"":      1,
	"bit":   1,
	"kbit":  1e3,
	"mbit":  1e6,
	"gbit":  1e9,
	"tbit":  1e12,
	"kibit": 1 << 10,
	"mibit": 1 << 20,
	"gibit": 1 << 30,
	"tibit": 1 << 40,
	"bps":   8,
	"kbps":  8e3,
	"mbps":  8e6,
	"gbps":  8e9,
	"tbps":  8e12,
	"kibps": 8 << 10,
	"mibps": 8 << 20,
	"gibps": 8 << 30,
	"tibps": 8 << 40,
}

// sizeUnits are tc(8)'s size units: b or a bare number are bytes, k/kb
// kibibytes, m/mb mebibytes, g/gb gibibytes, and kbit/mbit/gbit bits.
var sizeUnits = map[string]float64{
	"":     1,
	"b":    1,
	"k":    1 << 10,
	"kb":   1 << 10,
	"m":    1 << 20,
	"mb":   1 << 20,
	"g":    1 << 30,
	"gb":   1 << 30,
	"kbit": 1e3 / 8,
	"mbit": 1e6 / 8,
	"gbit": 1e9 / 8,
}

// splitUnit splits "10.5mbit" into 10.5 and "mbit" (lower case).
func splitUnit(s string) (float64, string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	if i == 0 {
		return 0, "", fmt.Errorf("%q does not start with a number", s)
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, "", fmt.Errorf("%q: bad number", s)
	}
	return v, strings.TrimSpace(s[i:]), nil
}

// ParseRate parses a rate such as "20mbit", "512kbit", "1gbit" or "125kbps"
// (bytes per second, as in tc). A bare number is bits per second.
func ParseRate(s string) (Rate, error) {
	v, u, err := splitUnit(s)
	if err != nil {
		return 0, fmt.Errorf("rate %w", err)
	}
	m, ok := rateUnits[u]
	if !ok {
		return 0, fmt.Errorf("rate %q: unknown unit %q (bit, kbit, mbit, gbit, tbit, kibit.., bps, kbps, mbps, gbps)", s, u)
	}
	r := v * m
	if r < 1 {
		return 0, fmt.Errorf("rate %q: must be at least 1bit", s)
	}
	if r > float64(MaxRate) {
		return 0, fmt.Errorf("rate %q: above the %s maximum", s, MaxRate)
	}
	return Rate(math.Round(r)), nil
}

// ParseSize parses a size such as "100kb", "1500", "1500b", "2mb" or
// "800kbit" (tc's units: kb is 1024 bytes).
func ParseSize(s string) (Size, error) {
	v, u, err := splitUnit(s)
	if err != nil {
		return 0, fmt.Errorf("size %w", err)
	}
	m, ok := sizeUnits[u]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (b, kb, mb, gb, kbit, mbit, gbit)", s, u)
	}
	z := v * m
	if z < 1 {
		return 0, fmt.Errorf("size %q: must be at least 1 byte", s)
	}
	if z > float64(MaxSize) {
		return 0, fmt.Errorf("size %q: above the 1gb maximum", s)
	}
	return Size(math.Round(z)), nil
}

// String prints r in the largest tc unit that divides it exactly.
func (r Rate) String() string {
	for _, u := range []struct {
		n string
		v Rate
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if r >= u.v && r%u.v == 0 {
			return strconv.FormatUint(uint64(r/u.v), 10) + u.n
		}
	}
	return strconv.FormatUint(uint64(r), 10) + "bit"
}

// BytesPerSecond is r in bytes per second (rounded down, at least 1).
func (r Rate) BytesPerSecond() uint64 { return max(uint64(r)/8, 1) }

// String prints z in the largest tc unit that divides it exactly.
func (z Size) String() string {
	switch {
	case z >= 1<<20 && z%(1<<20) == 0:
		return strconv.FormatUint(uint64(z>>20), 10) + "mb"
	case z >= 1<<10 && z%(1<<10) == 0:
		return strconv.FormatUint(uint64(z>>10), 10) + "kb"
	}
	return strconv.FormatUint(uint64(z), 10) + "b"
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a rate is a scalar such as 20mbit", n.Line)
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*r = v
	return nil
}

// MarshalYAML implements yaml.Marshaler. The zero Rate (unset) is null,
// which reads back as unset.
func (r Rate) MarshalYAML() (any, error) {
	if r == 0 {
		return nil, nil
	}
	return r.String(), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size is a scalar such as 100kb", n.Line)
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*z = v
	return nil
}

// MarshalYAML implements yaml.Marshaler. The zero Size (unset) is null.
func (z Size) MarshalYAML() (any, error) {
	if z == 0 {
		return nil, nil
	}
	return z.String(), nil
}
