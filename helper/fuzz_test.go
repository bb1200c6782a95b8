package helper

import (
	"bytes"
	"testing"

	"pptpgw/internal/pkt"
)

// FuzzProcess drives a Translator with two arbitrary byte streams cut into
// segments by ops: in order, resends of old bytes, gaps, hold expiry,
// FIN/RST. Invariants: no panic; Patches describe exactly the bytes Process
// changed; ReleasedPatches exactly what changed in the held segment since it
// was held; Released only when something is held; Hold keeps at most one
// segment per direction.
func FuzzProcess(f *testing.F) {
	addConv := func(cv conversation, ops []byte) {
		var st [2][]byte
		for _, tn := range cv.turns {
			st[tn.dir] = append(st[tn.dir], tn.wireIn()...)
		}
		f.Add(true, ops, st[0], st[1])
		f.Add(false, ops, st[0], st[1])
	}
	inOrder := []byte{0, 13, 1, 40, 2, 7, 3, 200, 0, 1, 1, 1, 0, 63, 1, 63, 0, 63, 1, 63, 0, 255, 1, 255}
	mixed := []byte{0, 13, 8, 5, 0, 3, 10, 2, 12, 0, 1, 20, 9, 4, 0, 40, 14, 0, 1, 40, 0, 200, 1, 200}
	for _, cv := range []conversation{pnsInside(), pacInside()} {
		addConv(cv, inOrder)
		addConv(cv, mixed)
	}
	f.Fuzz(func(t *testing.T, strict bool, ops, out, in []byte) {
		streams := [2][]byte{out, in}
		m := newFakeMapper()
		c := NewTranslator(m, Config{Strict: strict})
		isn := [2]uint32{0xFFFFFFF0, 1 << 31}
		var pos [2]int
		var held [2][]byte
		var heldPre [2][]byte
		var holdOrder []Dir
		for d := range 2 {
			c.Process(Dir(d), isn[d], true, false, false, nil)
		}
		if len(ops) > 400 {
			ops = ops[:400]
		}
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], int(ops[i+1])
			d := Dir(op & 1)
			st := streams[d]
			var start, n int
			var fin, rst bool
			switch (op >> 1) % 8 {
			case 0, 1, 2, 3: // next in-order segment
				start, n = pos[d], min(1+arg%64, len(st)-pos[d])
			case 4: // resend of old bytes, maybe running into new ones
				start = pos[d] - arg%(pos[d]+1)
				n = min(1+arg%80, len(st)-start)
			case 5: // beyond a gap
				start = pos[d] + 1 + arg%8
				n = min(1+arg%32, len(st)-start)
			case 6:
				if c.ExpireHeld() {
					if len(holdOrder) == 0 {
						t.Fatal("ExpireHeld with nothing held")
					}
					od := holdOrder[0]
					holdOrder = holdOrder[1:]
					held[od], heldPre[od] = nil, nil
				} else if len(holdOrder) != 0 {
					t.Fatal("ExpireHeld found nothing but a segment is held")
				}
				continue
			case 7:
				start, n = pos[d], 0
				fin, rst = arg&1 != 0, arg&2 != 0
			}
			if n < 0 || start > len(st) {
				continue
			}
			p := bytes.Clone(st[start : start+n])
			before := bytes.Clone(p)
			res := c.Process(d, isn[d]+1+uint32(start), false, fin, rst, p)
			checkPatches(t, "segment", before, p, res.Patches)
			if res.Released {
				if held[d] == nil {
					t.Fatalf("released in %v with nothing held", d)
				}
				checkPatches(t, "released", heldPre[d], held[d], res.ReleasedPatches)
				held[d], heldPre[d] = nil, nil
				for j, od := range holdOrder {
					if od == d {
						holdOrder = append(holdOrder[:j], holdOrder[j+1:]...)
						break
					}
				}
			} else if len(res.ReleasedPatches) != 0 {
				t.Fatal("ReleasedPatches without Released")
			}
			switch res.Verdict {
			case pkt.Hold:
				if held[d] != nil {
					t.Fatalf("second hold in %v", d)
				}
				held[d], heldPre[d] = p, bytes.Clone(p)
				holdOrder = append(holdOrder, d)
			case pkt.Accept, pkt.Drop:
			default:
				t.Fatalf("verdict %v", res.Verdict)
			}
			if res.Verdict != pkt.Drop && start+n > pos[d] && start <= pos[d] {
				pos[d] = start + n
			}
			if c.Held(d) != (held[d] != nil) {
				t.Fatalf("Held(%v) = %v", d, c.Held(d))
			}
		}
	})
}
