package pptp

import (
	"container/list"
	"net/netip"
)

// preauthQueue holds the control connections none of whose calls has authenticated
// yet, oldest first, overall and per source IP: the candidates for eviction when the
// connection table is full (Server.accept). The server keeps it under Server.mu.
type preauthQueue struct {
	all      list.List // *ctrlConn
	bySource map[netip.Addr]*list.List
}

// preauthPos is a connection's place in a preauthQueue (zero: not queued).
type preauthPos struct{ all, src *list.Element }

func (q *preauthQueue) push(cc *ctrlConn) {
	if q.bySource == nil {
		q.bySource = map[netip.Addr]*list.List{}
	}
	l := q.bySource[cc.peerIP]
	if l == nil {
		l = list.New()
		q.bySource[cc.peerIP] = l
	}
	cc.preauth = preauthPos{all: q.all.PushBack(cc), src: l.PushBack(cc)}
}

// remove takes cc out of the queue; it does nothing when cc is not queued.
func (q *preauthQueue) remove(cc *ctrlConn) {
	if cc.preauth.all == nil {
		return
	}
	q.all.Remove(cc.preauth.all)
	l := q.bySource[cc.peerIP]
	l.Remove(cc.preauth.src)
	if l.Len() == 0 {
		delete(q.bySource, cc.peerIP)
	}
	cc.preauth = preauthPos{}
}

// victim is the connection a new one from src takes the place of: the oldest
// unauthenticated connection of src itself, so that a host flooding the table only
// ever replaces its own connections and cannot cut other hosts' handshakes short;
// else the oldest one overall. It is nil when every connection has authenticated.
func (q *preauthQueue) victim(src netip.Addr) *ctrlConn {
	if l := q.bySource[src]; l != nil {
		return l.Front().Value.(*ctrlConn)
	}
	if e := q.all.Front(); e != nil {
		return e.Value.(*ctrlConn)
	}
	return nil
}
