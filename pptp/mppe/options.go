package mppe

import "errors"

// Options is the 32-bit "Supported Bits" field of the CCP MPPE option
// (type 18, length 6; RFC 3078 §2), most significant octet first on the wire:
//
//	 3                   2                   1
//	 1 0 9 8 7 6 5 4 3 2 1 0 9 8 7 6 5 4 3 2 1 0 9 8 7 6 5 4 3 2 1 0
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       |H|                     |M|S|L|D|     |C|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type Options uint32

// Option bits.
const (
	OptC         Options = 0x00000001 // MPPC compression: we never offer or accept it
	OptD         Options = 0x00000010 // obsolete
	OptL         Options = 0x00000020 // 40-bit keys
	OptS         Options = 0x00000040 // 128-bit keys
	OptM         Options = 0x00000080 // 56-bit keys
	OptH         Options = 0x01000000 // stateless mode ("history-less")
	OptionType           = 18         // CCP option type
	OptionLen            = 6          // CCP option length
	strengthMask         = OptL | OptS | OptM
)

// ErrOptionFormat: the CCP option is not type 18 / length 6.
var ErrOptionFormat = errors.New("mppe: malformed CCP MPPE option")

// StrengthBit returns the option bit that offers s (0 for an invalid s).
func StrengthBit(s Strength) Options {
	switch s {
	case Bits40:
		return OptL
	case Bits56:
		return OptM
	case Bits128:
		return OptS
	}
	return 0
}

// Has reports whether o offers strength s.
func (o Options) Has(s Strength) bool { b := StrengthBit(s); return b != 0 && o&b != 0 }

// Stateless reports whether the H bit is set.
func (o Options) Stateless() bool { return o&OptH != 0 }

// Strengths lists the offered strengths, strongest first.
func (o Options) Strengths() []Strength {
	var out []Strength
	for _, s := range []Strength{Bits128, Bits56, Bits40} {
		if o.Has(s) {
			out = append(out, s)
		}
	}
	return out
}

// Strongest returns the strongest strength offered by o that is also in
// allowed (any order); ok is false if there is none.
func (o Options) Strongest(allowed []Strength) (s Strength, ok bool) {
	for _, c := range []Strength{Bits128, Bits56, Bits40} {
		if !o.Has(c) {
			continue
		}
		for _, a := range allowed {
			if a == c {
				return c, true
			}
		}
	}
	return 0, false
}

// Final reports whether o names exactly one strength (and no MPPC), i.e. is
// acceptable as the final, agreed value of the option.
func (o Options) Final() bool {
	sb := o & strengthMask
	return o&OptC == 0 && sb != 0 && sb&(sb-1) == 0
}

// Make builds an option value for one strength and mode.
func Make(s Strength, stateless bool) Options {
	o := StrengthBit(s)
	if stateless {
		o |= OptH
	}
	return o
}

// Append appends the full CCP option (type, length, 4 octets) to b.
func (o Options) Append(b []byte) []byte {
	return append(b, OptionType, OptionLen, byte(o>>24), byte(o>>16), byte(o>>8), byte(o))
}

// ParseOption decodes a full CCP MPPE option (type 18, length 6).
func ParseOption(b []byte) (Options, error) {
	if len(b) != OptionLen || b[0] != OptionType || b[1] != OptionLen {
		return 0, ErrOptionFormat
	}
	return Options(uint32(b[2])<<24 | uint32(b[3])<<16 | uint32(b[4])<<8 | uint32(b[5])), nil
}

func (o Options) String() string {
	s := ""
	add := func(f string) {
		if s != "" {
			s += "|"
		}
		s += f
	}
	if o&OptH != 0 {
		add("H")
	}
	if o&OptM != 0 {
		add("M56")
	}
	if o&OptS != 0 {
		add("S128")
	}
	if o&OptL != 0 {
		add("L40")
	}
	if o&OptD != 0 {
		add("D")
	}
	if o&OptC != 0 {
		add("C")
	}
	if s == "" {
		return "none"
	}
	return s
}
