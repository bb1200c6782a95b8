package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// benchAlternated alternates the sides round by round, keeps each side's
// best round as the compared figure and stops at the first error.
func TestBenchAlternated(t *testing.T) {
	k, g := &benchSide{vals: map[string]float64{}}, &benchSide{gw: true, vals: map[string]float64{}}
	var order []bool
	figures := map[bool][]float64{false: {5, 9, 7}, true: {8, 6, 10}}
	got := map[bool][]float64{}
	notes := map[bool]string{}
	err := benchAlternated(context.Background(), "x", k, g, func(s *benchSide) (float64, string, error) {
		order = append(order, s.gw)
		v := figures[s.gw][0]
		figures[s.gw] = figures[s.gw][1:]
		return v, fmt.Sprint("round with ", v), nil
	}, func(s *benchSide, best float64, note string, all []float64) {
		got[s.gw] = all
		notes[s.gw] = note
		if best != s.vals["x"] {
			t.Errorf("side %v: best %v, vals %v", s.gw, best, s.vals["x"])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, true, false, true, false, true}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if k.vals["x"] != 9 || g.vals["x"] != 10 {
		t.Errorf("best: Linux %v (want 9), pptpgw %v (want 10)", k.vals["x"], g.vals["x"])
	}
	if !slices.Equal(got[false], []float64{5, 9, 7}) || !slices.Equal(got[true], []float64{8, 6, 10}) {
		t.Errorf("rounds %v", got)
	}
	if notes[false] != "round with 9" || notes[true] != "round with 10" {
		t.Errorf("notes of the best rounds: %v", notes)
	}

	runs := 0
	err = benchAlternated(context.Background(), "y", k, g, func(s *benchSide) (float64, string, error) {
		runs++
		if s.gw {
			return 0, "", errors.New("boom")
		}
		return 1, "", nil
	}, func(*benchSide, float64, string, []float64) { t.Error("done called after an error") })
	if err == nil || runs != 2 {
		t.Errorf("err %v after %d runs, want an error after 2", err, runs)
	}
	if s := roundsNote([]float64{705, 742.4}, "%.0f"); s != "best of 705, 742" {
		t.Errorf("roundsNote: %q", s)
	}
}
