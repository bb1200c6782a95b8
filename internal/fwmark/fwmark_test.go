package fwmark

import "testing"

func TestLayout(t *testing.T) {
	if Class(0) != 1 || Class(254) != 0xff || Uplink(0) != 0x100 || Uplink(254) != 0xff00 {
		t.Fatalf("Class(0)=%#x Class(254)=%#x Uplink(0)=%#x Uplink(254)=%#x", Class(0), Class(254), Uplink(0), Uplink(254))
	}
	if ClassMask&UplinkMask != 0 || (ClassMask|UplinkMask)&^Mask != 0 {
		t.Fatal("fields overlap or leave Mask")
	}
	for i := range MaxClasses {
		if ClassOf(Class(i)|Uplink(3)|0xff000000) != i {
			t.Fatalf("class %d does not round-trip", i)
		}
	}
	for i := range MaxUplinks {
		if UplinkOf(Uplink(i)|Class(7)) != i {
			t.Fatalf("uplink %d does not round-trip", i)
		}
	}
	if ClassOf(0) != -1 || UplinkOf(0xff) != -1 {
		t.Fatal("unset fields must read as -1")
	}
	if got := Set(0xab00_1234, ClassMask, Class(4)); got != 0xab00_1205 {
		t.Fatalf("Set kept the wrong bits: %#x", got)
	}
}
