package gre

import (
	"errors"
	"net/netip"
	"sync"
)

// Pipe returns two connected in-memory PacketConns, a at addrA and b at addrB: what one
// writes, the other reads (copied, so the writer may reuse its buffer). Writes never
// block: when the reader is more than depth packets behind, packets are dropped like on
// a congested link. For tests and benchmarks.
func Pipe(addrA, addrB netip.Addr, depth int) (a, b PacketConn) {
	ab := make(chan *[]byte, depth)
	ba := make(chan *[]byte, depth)
	done := make(chan struct{})
	var once sync.Once
	closeFn := func() { once.Do(func() { close(done) }) }
	a = &pipeEnd{local: addrA, peer: addrB, in: ba, out: ab, done: done, close: closeFn}
	b = &pipeEnd{local: addrB, peer: addrA, in: ab, out: ba, done: done, close: closeFn}
	return a, b
}

var errPipeClosed = errors.New("gre: pipe closed")

type pipeEnd struct {
	local, peer netip.Addr
	in, out     chan *[]byte
	done        chan struct{}
	close       func()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func (p *pipeEnd) ReadPacket(b []byte) (int, netip.Addr, error) {
	select {
	case <-p.done:
		return 0, netip.Addr{}, errPipeClosed
	case pkt := <-p.in:
		n := copy(b, *pkt)
		bufPool.Put(pkt)
		return n, p.peer, nil
	}
}

func (p *pipeEnd) WritePacket(b []byte, dst netip.Addr) error {
	select {
	case <-p.done:
		return errPipeClosed
	default:
	}
	if dst != p.peer {
		return nil // nobody there
	}
	pkt := bufPool.Get().(*[]byte)
	*pkt = append((*pkt)[:0], b...)
	select {
	case p.out <- pkt:
	default: // congested: drop
		bufPool.Put(pkt)
	}
	return nil
}

func (p *pipeEnd) Close() error { p.close(); return nil }
