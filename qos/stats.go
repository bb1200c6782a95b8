package qos

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// IfaceStats is one shaped interface as the kernel reports it.
type IfaceStats struct {
	Interface string       `json:"interface"`
	Rate      string       `json:"rate"`
	Default   string       `json:"default"`
	Leaf      string       `json:"leaf_qdisc,omitempty"`
	Present   bool         `json:"present"` // the HTB root 1: is on the interface
	Classes   []ClassStats `json:"classes"`
}

// ClassStats is one leaf class with its live counters.
type ClassStats struct {
	Class      string `json:"class"`
	ID         string `json:"id"` // HTB class id, e.g. 1:10
	Priority   int    `json:"priority"`
	Rate       string `json:"rate"`
	Ceil       string `json:"ceil"`
	Bytes      uint64 `json:"bytes"`
	Packets    uint64 `json:"packets"`
	Drops      uint64 `json:"drops"`
	Overlimits uint64 `json:"overlimits"`
	Backlog    uint64 `json:"backlog_bytes"`
	Qlen       uint64 `json:"backlog_packets"`
	Found      bool   `json:"found"` // the class is in the kernel
}

// ReadStats reads the live counters of trees' classes from the kernel (in
// the caller's network namespace).
func ReadStats(trees []Tree) ([]IfaceStats, error) {
	var out []IfaceStats
	for _, t := range trees {
		is := IfaceStats{Interface: t.Interface, Rate: t.Rate.String()}
		for _, l := range t.Leaves {
			if l.Index == t.Default {
				is.Default = l.Name
			}
		}
		link, err := netlink.LinkByName(t.Interface)
		if err != nil {
			return nil, fmt.Errorf("qos: %s: %w", t.Interface, err)
		}
		byID := map[uint32]*netlink.ClassStatistics{}
		if qs, err := netlink.QdiscList(link); err == nil {
			for _, q := range qs {
				a := q.Attrs()
				if a.Handle == RootHandle && a.Parent == netlink.HANDLE_ROOT && q.Type() == "htb" {
					is.Present = true
				}
				if a.Parent != netlink.HANDLE_ROOT && a.Handle>>16 >= 0x100 && is.Leaf == "" {
					is.Leaf = q.Type()
				}
			}
		}
		if is.Present {
			cs, err := netlink.ClassList(link, RootHandle)
			if err != nil {
				return nil, fmt.Errorf("qos: %s: classes: %w", t.Interface, err)
			}
			for _, c := range cs {
				byID[c.Attrs().Handle] = c.Attrs().Statistics
			}
		}
		for _, l := range t.Leaves {
			c := ClassStats{Class: l.Name, ID: handleString(ClassID(l.Index)), Priority: l.Priority,
				Rate: l.Rate.String(), Ceil: l.Ceil.String()}
			if st, ok := byID[ClassID(l.Index)]; ok {
				c.Found = true
				if st != nil && st.Basic != nil {
					c.Bytes, c.Packets = st.Basic.Bytes, uint64(st.Basic.Packets)
				}
				if st != nil && st.Queue != nil {
					c.Drops, c.Overlimits = uint64(st.Queue.Drops), uint64(st.Queue.Overlimits)
					c.Backlog, c.Qlen = uint64(st.Queue.Backlog), uint64(st.Queue.Qlen)
				}
			}
			is.Classes = append(is.Classes, c)
		}
		out = append(out, is)
	}
	return out, nil
}
