// Package fwmark is the one layout of the bits of a packet's mark
// (skb->mark) and the way the daemon uses skb->priority.
//
// The daemon owns the bits of Mask and nothing else: every rule or verdict
// that sets a mark keeps the other bits (`meta mark set meta mark & ~Mask |
// value` in nftables, read-modify-write in a verdict), so an operator's own
// marks survive.
//
//	bits  0-7   class: 1 + the index of the packet's class in `classes:`
//	            (0: unclassified). Policy routing by class matches these.
//	bits  8-15  uplink: 1 + the index of the uplink a PPTP call is pinned
//	            to (0: routing decides). A rule per uplink routes it.
//	bits 16-22  pool member: 1 + the index of the member of a published
//	            server pool (`forwards:` with several `to`) that the engine
//	            chose for a new control connection; the kernel's DNAT maps
//	            it to the member's address (0: not chosen yet).
//	bit  23     hairpin: a LAN host's connection (or GRE) to the public
//	            address, sent back inside to a pool member; the kernel
//	            SNATs the connection, the engine rewrites the GRE's source.
//	bits 24-31  the operator's.
//
// skb->priority carries the HTB class id (major<<16 | minor) of the
// packet's class on a shaped interface; HTB takes a valid leaf class id
// straight from it, so no tc filter is needed.
package fwmark

const (
	ClassMask   uint32 = 0x0000_00ff
	UplinkMask  uint32 = 0x0000_ff00
	UplinkShift        = 8
	MemberMask  uint32 = 0x007f_0000
	MemberShift        = 16
	Hairpin     uint32 = 0x0080_0000
	// Mask is every bit the daemon may set.
	Mask uint32 = 0x00ff_ffff

	// MaxClasses and MaxUplinks are how many the layout can number.
	MaxClasses = 255
	MaxUplinks = 255
	MaxMembers = 127
)

// Class is the mark bits of class index i (0-based; i < MaxClasses).
func Class(i int) uint32 { return uint32(i+1) & ClassMask }

// Uplink is the mark bits of uplink index i (0-based; i < MaxUplinks).
func Uplink(i int) uint32 { return uint32(i+1) << UplinkShift & UplinkMask }

// Member is the mark bits of pool member index i (0-based; i < MaxMembers).
func Member(i int) uint32 { return uint32(i+1) << MemberShift & MemberMask }

// ClassOf returns the class index in mark m, or -1 if none.
func ClassOf(m uint32) int { return int(m&ClassMask) - 1 }

// UplinkOf returns the uplink index in mark m, or -1 if none.
func UplinkOf(m uint32) int { return int(m&UplinkMask>>UplinkShift) - 1 }

// MemberOf returns the pool member index in mark m, or -1 if none.
func MemberOf(m uint32) int { return int(m&MemberMask>>MemberShift) - 1 }

// Set returns m with the bits of mask replaced by v (v is masked too).
func Set(m, mask, v uint32) uint32 { return m&^mask | v&mask }
