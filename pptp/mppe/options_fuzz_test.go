package mppe

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseOption: ParseOption accepts exactly a type-18, length-6 option
// (else ErrOptionFormat), re-encodes it to the same bytes, and what it
// returns answers Has, Strengths, Strongest and Final consistently: a Final
// value names one strength, which Strongest picks from all three and
// Make rebuilds with the H bit.
func FuzzParseOption(f *testing.F) {
	f.Add([]byte{18, 6, 0x01, 0, 0, 0x60})
	f.Add(Make(Bits128, false).Append(nil))
	f.Add((Make(Bits56, true) | OptC).Append(nil))
	f.Add([]byte{18, 6, 0x01, 0, 0, 0xe0}) // CCP Nak seed of pptp/ppp
	f.Add([]byte{18, 5, 0, 0, 0, 0})
	f.Add([]byte{0x1a, 0x04, 0x78, 0x00})
	all := []Strength{Bits40, Bits56, Bits128}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOption(b)
		wellFormed := len(b) == OptionLen && b[0] == OptionType && b[1] == OptionLen
		if err != nil {
			if !errors.Is(err, ErrOptionFormat) || o != 0 || wellFormed {
				t.Fatalf("ParseOption(% x) = %v, %v", b, o, err)
			}
			return
		}
		if !wellFormed {
			t.Fatalf("accepted % x", b)
		}
		if got := o.Append(nil); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded % x, want % x", got, b)
		}
		strengths := o.Strengths()
		for _, s := range all {
			if o.Has(s) != (o&StrengthBit(s) != 0) {
				t.Fatalf("%v: Has(%v) disagrees with the bits", o, s)
			}
		}
		s, ok := o.Strongest(all)
		if ok != (len(strengths) > 0) || ok && s != strengths[0] {
			t.Fatalf("%v: Strongest %v %v, Strengths %v", o, s, ok, strengths)
		}
		if o.Final() {
			if len(strengths) != 1 || o&OptC != 0 {
				t.Fatalf("%v is Final with strengths %v", o, strengths)
			}
			if m := Make(s, o.Stateless()); m != o&(strengthMask|OptH) {
				t.Fatalf("Make(%v, %v) = %v, from %v", s, o.Stateless(), m, o)
			}
		}
	})
}
