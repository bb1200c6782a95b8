package conntrack

// setupHooks link an entry into a setupQueue.
type setupHooks[T any] struct {
	prev, next *T
	queued     bool
}

// setupQueue is an intrusive FIFO of entries in setup (control connections
// without Start-Control-Connection-Reply, calls without their reply),
// oldest first: the candidates for early drop. Push, remove and front are
// O(1) and allocate nothing beyond the entry itself.
type setupQueue[T any, P interface {
	*T
	hooks() *setupHooks[T]
}] struct {
	head, tail *T
	n          int
}

func (q *setupQueue[T, P]) push(x P) {
	h := x.hooks()
	if h.queued {
		return
	}
	h.prev, h.next, h.queued = q.tail, nil, true
	if q.tail != nil {
		P(q.tail).hooks().next = x
	} else {
		q.head = x
	}
	q.tail = x
	q.n++
}

func (q *setupQueue[T, P]) remove(x P) {
	h := x.hooks()
	if !h.queued {
		return
	}
	if h.prev != nil {
		P(h.prev).hooks().next = h.next
	} else {
		q.head = h.next
	}
	if h.next != nil {
		P(h.next).hooks().prev = h.prev
	} else {
		q.tail = h.prev
	}
	*h = setupHooks[T]{}
	q.n--
}

// front returns the oldest entry, nil if the queue is empty.
func (q *setupQueue[T, P]) front() P { return q.head }
