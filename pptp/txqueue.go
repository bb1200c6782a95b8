package pptp

import "sync"

// txQueueMax bounds the packets one session keeps while its peer's GRE window is full
// (two default windows: with 128, a saturating TCP download lost ~8% of its segments
// here, with 512 under 1%); txQueueTotal bounds them over all sessions (~32 MiB of
// pooled 2 KiB buffers), so thousands of slow clients cannot pile up memory.
const (
	txQueueMax   = 512
	txQueueTotal = 16384
)

// txQueue holds a session's packets from the kernel while the peer's GRE receive window
// is full. The kernel hands them over in bursts (a TSO super-packet becomes up to ~48
// segments at once), which would otherwise be dropped whenever the peer's
// acknowledgements lag behind (and TCP would retransmit). Packets wait in plaintext and
// are encrypted when they leave, in order, so stateful MPPE sees no gap.
type txQueue struct {
	mu   sync.Mutex
	pkts []*[]byte // FIFO from head
	head int
	kick chan struct{}
}

var txBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func (q *txQueue) len() int { return len(q.pkts) - q.head }

func (q *txQueue) push(pkt []byte) {
	b := txBufPool.Get().(*[]byte)
	*b = append((*b)[:0], pkt...)
	if q.head > txQueueMax { // compact: the slice does not grow while it never empties
		n := copy(q.pkts, q.pkts[q.head:])
		clear(q.pkts[n:])
		q.pkts, q.head = q.pkts[:n], 0
	}
	q.pkts = append(q.pkts, b)
}

func (q *txQueue) pop() *[]byte {
	b := q.pkts[q.head]
	q.pkts[q.head] = nil
	if q.head++; q.head == len(q.pkts) {
		q.pkts, q.head = q.pkts[:0], 0
	}
	return b
}

// sendNet is step 4 of the packet's way for one session: kernel -> session. The packet
// goes out at once when nothing is queued and the peer's window is open; otherwise it
// waits in the queue (or is dropped and counted when the queue is full).
func (ss *session) sendNet(pkt []byte) {
	q := &ss.txq
	q.mu.Lock()
	if q.len() == 0 && ss.call.WindowOpen() {
		err := ss.ppp.SendIP(pkt)
		q.mu.Unlock()
		if err != nil {
			ss.countOnce(cSendIPFailed, err)
		}
		return
	}
	if q.len() >= txQueueMax {
		q.mu.Unlock()
		ss.srv.count(cNetPeerWindowFull)
		return
	}
	if ss.srv.txQueued.Add(1) > txQueueTotal {
		ss.srv.txQueued.Add(-1)
		q.mu.Unlock()
		ss.srv.count(cNetTxQueueFull)
		return
	}
	q.push(pkt)
	q.mu.Unlock()
	select {
	case <-ss.endCh: // ended while we pushed: drainTx may be gone already
		ss.dropQueue()
		return
	default:
	}
	if ss.call.WindowOpen() { // an ack may have arrived before the push: do not wait for the next
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
}

// drainTx sends queued packets as the peer's acknowledgements open the window, until
// the session ends. One goroutine per session that is up.
func (ss *session) drainTx() {
	q := &ss.txq
	for {
		select {
		case <-ss.endCh:
			ss.dropQueue()
			return
		case <-ss.call.AckSignal():
		case <-q.kick:
		}
		q.mu.Lock()
		for q.len() > 0 && ss.call.WindowOpen() {
			b := q.pop()
			ss.srv.txQueued.Add(-1)
			if err := ss.ppp.SendIP(*b); err != nil {
				ss.countOnce(cSendIPFailed, err)
			}
			txBufPool.Put(b)
		}
		q.mu.Unlock()
	}
}

// dropQueue empties the queue of an ended session.
func (ss *session) dropQueue() {
	q := &ss.txq
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.len() > 0 {
		txBufPool.Put(q.pop())
		ss.srv.txQueued.Add(-1)
	}
}
