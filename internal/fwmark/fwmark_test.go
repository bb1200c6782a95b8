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

func TestMemberLayout(t *testing.T) {
	if Member(0) != 0x1_0000 || Member(126) != 0x7f_0000 {
		t.Fatalf("Member(0)=%#x Member(126)=%#x", Member(0), Member(126))
	}
	if MemberMask&(ClassMask|UplinkMask|Hairpin) != 0 || (MemberMask|Hairpin)&^Mask != 0 {
		t.Fatal("member field overlaps another or leaves Mask")
	}
	for i := range MaxMembers {
		m := Member(i) | Class(3) | Uplink(5) | Hairpin | 0x7f00_0000
		if MemberOf(m) != i || ClassOf(m) != 3 || UplinkOf(m) != 5 {
			t.Fatalf("member %d does not round-trip with the other fields", i)
		}
	}
	if MemberOf(0xffff) != -1 {
		t.Fatal("unset member must read as -1")
	}
}
