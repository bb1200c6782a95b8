package conntrack

// Memory (issue 12): the calls' LRU is intrusive. golang-lru's simplelru
// keeps one list entry per call (about 80 bytes: links, key, value and an
// expiry this table never uses) beside its map; here the links live in the
// call record (Call.lru, 16 bytes) and the map points at the call. It has
// the subset of simplelru's API the table uses, with the same semantics:
// Remove and Purge call the eviction callback after unlinking the call,
// Values lists the oldest first. It never evicts on its own (the table
// checks its bounds before adding, as it did with simplelru).

// lruHooks link a call into the LRU list.
type lruHooks struct{ prev, next *Call }

// callLRU is the primary store of calls and their inbound index, in
// least-recently-used order.
type callLRU struct {
	items *callSet // by inbound key (callset.go)
	// head is the most recently used call, tail the least.
	head, tail *Call
	onEvict    func(InKey, *Call)
}

func newCallLRU(onEvict func(InKey, *Call)) *callLRU {
	return &callLRU{items: newCallSet(false), onEvict: onEvict}
}

func (l *callLRU) Len() int { return l.items.len() }

func (l *callLRU) Contains(k InKey) bool { return l.items.getIn(k) != nil }

// Peek returns the call of k without marking it used.
func (l *callLRU) Peek(k InKey) (*Call, bool) {
	c := l.items.getIn(k)
	return c, c != nil
}

// Get returns the call of k and marks it the most recently used.
func (l *callLRU) Get(k InKey) (*Call, bool) {
	c := l.items.getIn(k)
	ok := c != nil
	if ok && l.head != c {
		l.unlink(c)
		l.pushFront(c)
	}
	return c, ok
}

// Add adds c, whose inbound key is k, as the most recently used call (the
// table never adds a key it holds: it checks Contains first).
func (l *callLRU) Add(k InKey, c *Call) {
	if old := l.items.getIn(k); old != nil {
		l.unlink(old)
	}
	l.items.put(c)
	l.pushFront(c)
}

// Remove removes k's call and calls the eviction callback.
func (l *callLRU) Remove(k InKey) bool {
	c := l.items.removeIn(k)
	if c == nil {
		return false
	}
	l.unlink(c)
	if l.onEvict != nil {
		l.onEvict(k, c)
	}
	return true
}

// Values returns the calls, the least recently used first.
func (l *callLRU) Values() []*Call {
	out := make([]*Call, 0, l.items.len())
	for c := l.tail; c != nil; c = c.lru.prev {
		out = append(out, c)
	}
	return out
}

// Purge removes every call, calling the eviction callback for each.
func (l *callLRU) Purge() {
	for _, c := range l.items.all() {
		if l.onEvict != nil {
			l.onEvict(c.inKey(), c)
		}
	}
	l.items.clear()
	for c := l.head; c != nil; {
		next := c.lru.next
		c.lru = lruHooks{}
		c = next
	}
	l.head, l.tail = nil, nil
}

// Resize is a no-op: the map has no size, and the table enforces its bound
// (maxCalls) itself. It returns 0 (nothing evicted), as simplelru's would.
func (l *callLRU) Resize(int) int { return 0 }

func (l *callLRU) pushFront(c *Call) {
	c.lru = lruHooks{next: l.head}
	if l.head != nil {
		l.head.lru.prev = c
	} else {
		l.tail = c
	}
	l.head = c
}

func (l *callLRU) unlink(c *Call) {
	if c.lru.prev != nil {
		c.lru.prev.lru.next = c.lru.next
	} else {
		l.head = c.lru.next
	}
	if c.lru.next != nil {
		c.lru.next.lru.prev = c.lru.prev
	} else {
		l.tail = c.lru.prev
	}
	c.lru = lruHooks{}
}
