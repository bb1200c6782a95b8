package conntrack

// setupHooks link an entry into a setupQueue. An entry is queued if it has
// a predecessor or is the queue's head (no flag: 8 bytes less per entry).
type setupHooks[T any] struct {
	prev, next *T
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

// queued reports whether x is in q.
func (q *setupQueue[T, P]) queued(x P) bool {
	return x.hooks().prev != nil || q.head == (*T)(x)
}

func (q *setupQueue[T, P]) push(x P) {
	h := x.hooks()
	if q.queued(x) {
		return
	}
	h.prev, h.next = q.tail, nil
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
	if !q.queued(x) {
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
