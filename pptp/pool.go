package pptp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// ErrPoolExhausted is returned when every pool address is in use.
var ErrPoolExhausted = errors.New("pptp: address pool exhausted")

// Pool hands out IPv4 addresses of an inclusive range, lowest free first.
type Pool struct {
	mu         sync.Mutex
	start, end netip.Addr
	used       map[netip.Addr]bool
}

// ParseRange parses "A-B" (inclusive IPv4 range; B may be a last octet: "10.0.0.10-50").
func ParseRange(s string) (start, end netip.Addr, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return start, end, fmt.Errorf("pool %q: want A-B, e.g. 10.8.0.10-10.8.0.200", s)
	}
	start, err = netip.ParseAddr(strings.TrimSpace(a))
	if err != nil || !start.Is4() {
		return start, end, fmt.Errorf("pool %q: bad start address", s)
	}
	b = strings.TrimSpace(b)
	if !strings.Contains(b, ".") {
		a4 := start.As4()
		b = fmt.Sprintf("%d.%d.%d.%s", a4[0], a4[1], a4[2], b)
	}
	end, err = netip.ParseAddr(b)
	if err != nil || !end.Is4() {
		return start, end, fmt.Errorf("pool %q: bad end address", s)
	}
	if end.Less(start) {
		return start, end, fmt.Errorf("pool %q: end before start", s)
	}
	return start, end, nil
}

// NewPool makes a pool of [start, end].
func NewPool(start, end netip.Addr) (*Pool, error) {
	if !start.Is4() || !end.Is4() || end.Less(start) {
		return nil, fmt.Errorf("pptp: bad pool %s-%s", start, end)
	}
	return &Pool{start: start, end: end, used: make(map[netip.Addr]bool)}, nil
}

// Contains reports whether a is in the range.
func (p *Pool) Contains(a netip.Addr) bool {
	return a.Is4() && !a.Less(p.start) && !p.end.Less(a)
}

// Alloc takes the lowest free address.
func (p *Pool) Alloc() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a := p.start; ; a = a.Next() {
		if !p.used[a] {
			p.used[a] = true
			return a, nil
		}
		if a == p.end {
			return netip.Addr{}, ErrPoolExhausted
		}
	}
}

// Take reserves a specific address (a static one from chap-secrets, inside the pool or not).
func (p *Pool) Take(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[a] {
		return false
	}
	p.used[a] = true
	return true
}

// Release returns an address.
func (p *Pool) Release(a netip.Addr) {
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}

// InUse is the number of addresses handed out.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used)
}
