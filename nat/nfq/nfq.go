// Package nfq is a lean NFQUEUE reader for the gateway's hot path: one
// NETLINK_NETFILTER socket, recvmmsg into preallocated buffers, one sendmsg
// carrying the verdicts of a whole batch, no allocation per packet.
//
// It owns the netlink side of a queue: binding, the Packet handed to a
// Handler, verdicts (pkt.Verdict) and their batching, its own counters, and
// the kernel's counters of the queue (KernelStats: what the kernel dropped
// before the packets reached us).
// It must not know what is in the packets (PPTP, GRE, calls: package nat)
// or which rules queue them (package rules).
//
// A packet's way through Run:
//  1. The kernel queues a packet (nft/xt NFQUEUE rule) and sends an
//     NFQNL_MSG_PACKET datagram to this socket; while we fall behind they
//     pile up in the socket's receive buffer (Config.ReadBuffer).
//  2. One recvmmsg returns up to Config.Batch datagrams, each in its own
//     fixed buffer: the reader waits in the Go runtime's network poller and
//     reads without blocking (the default, wait.go), or blocks in recvmmsg
//     (MSG_WAITFORONE; Config.Wait WaitSyscall).
//  3. parsePacket reads ID, hook, interfaces and payload as views over the
//     buffer; the Handler sees them (and may rewrite Payload in place).
//  4. The verdict (+ payload if Modified) is appended to a batch: headers in a
//     preallocated buffer, the payload by iovec straight from the receive
//     buffer.
//  5. One sendmsg sends all verdicts of the batch as consecutive netlink
//     messages in one datagram; the kernel runs them in order. Refused
//     verdicts come back as NLMSG_ERROR on the next receive and are counted.
package nfq

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"pptpgw/internal/metrics"
	"pptpgw/internal/nsenter"
	"pptpgw/internal/pkt"
)

// Hook is a netfilter hook number (enum nf_inet_hooks): where in the
// kernel's path a packet was queued.
type Hook uint8

// The hooks, as Packet.Hook reports them.
const (
	HookPrerouting  Hook = 0 // arriving, before routing (forwarded or for this host)
	HookInput       Hook = 1
	HookForward     Hook = 2
	HookOutput      Hook = 3 // sent by this host, before routing
	HookPostrouting Hook = 4 // leaving, after routing (no ingress interface reported)
)

func (h Hook) String() string {
	switch h {
	case HookPrerouting:
		return "prerouting"
	case HookInput:
		return "input"
	case HookForward:
		return "forward"
	case HookOutput:
		return "output"
	case HookPostrouting:
		return "postrouting"
	}
	return "hook?"
}

// Config configures Open. Zero fields take the defaults.
type Config struct {
	Queue       uint16
	MaxQueueLen uint32 // packets the kernel holds waiting for a verdict; default DefaultMaxQueueLen
	CopyRange   uint32 // bytes of each packet copied to us; default 0xffff
	ReadBuffer  int    // socket receive buffer (SO_RCVBUFFORCE, else SO_RCVBUF); default 16 MiB
	Batch       int    // datagrams per recvmmsg; default 64
	// NetNS, if not 0, is an open network namespace fd: the socket is created
	// inside it (tests).
	NetNS int
	// Wait is how Run waits for packets (wait.go; default WaitPoller).
	Wait WaitMode
}

// Packet is one queued packet: the one queued-packet type of the gateway
// (the engine in package nat reads it as it comes from the kernel). It and
// Payload are only valid during the Handler call; Payload points into the
// receive buffer.
type Packet struct {
	ID     uint32
	Hook   Hook
	InDev  uint32 // ifindex, 0 if none
	OutDev uint32 // ifindex, 0 if none
	// Payload is the packet from its network header on (empty in the rare
	// case the kernel queued it before Open had set the copy mode).
	Payload []byte
	// Modified: send Payload (rewritten in place, or replaced by the handler
	// with a slice it owns) back with an Accept verdict.
	Modified bool
	// Mark is the packet's skb->mark as queued (NFQA_MARK; 0 if none).
	Mark uint32
	// Set is what an Accept verdict changes besides the payload.
	Set Attrs

	// Queue is the number of the queue the packet came from (several
	// readers, issue 12): a held packet's verdict goes back to it.
	Queue uint16
}

// Attrs are the packet metadata an Accept verdict may set: skb->mark
// (NFQA_MARK), which policy routing and later rules see, and skb->priority
// (NFQA_PRIORITY, honoured in verdicts since Linux 6.12), which HTB takes as
// a leaf class id. A Drop verdict ignores them.
type Attrs struct {
	Mark        uint32
	Priority    uint32
	SetMark     bool
	SetPriority bool
}

// Handler decides about one packet. It runs on Run's goroutine and must
// not keep p or p.Payload after it returns. With pkt.Hold it copied what it
// needs and answers later with Queue.SetVerdict; the kernel keeps the packet
// (and counts it against MaxQueueLen) until then.
type Handler func(p *Packet) pkt.Verdict

// Stats are the Queue's counters.
type Stats struct {
	Packets       uint64 // packets handed to the handler
	Batches       uint64 // receive calls that returned data
	Verdicts      uint64 // verdicts sent (batched and SetVerdict)
	RecvErrors    uint64 // receive errors such as ENOBUFS (the kernel dropped messages for us)
	Malformed     uint64 // messages skipped: truncated or unparsable
	VerdictErrors uint64 // verdicts the kernel refused (NLMSG_ERROR) or that could not be sent
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("nfq: connection closed")

// Queue is a bound queue. Run reads it; SetVerdict may be called from any
// goroutine.
type Queue struct {
	fd    int
	queue uint16

	closed atomic.Bool

	// Receive side, owned by Run.
	bufs [][]byte
	iovs []unix.Iovec
	msgs []unix.Mmsghdr
	pkt  Packet
	out  batch

	// mu guards fd against Close during a send (SetVerdict, wake), Run's
	// registration, and SetVerdict's buffers. Run itself reads fd without
	// it: Close waits for Run to return before closing fd. (A handler may
	// call SetVerdict, so Run must not hold a lock Close waits for.)
	mu      sync.Mutex
	runDone chan struct{} // non-nil while Run runs
	vbuf    [verdictMaxHdr]byte
	viov    [3]unix.Iovec

	// sendmmsg: send a batch as one datagram per verdict with sendmmsg
	// instead of one datagram of all verdicts with sendmsg (measured slower;
	// kept for TestThroughputNetns).
	sendmmsg bool

	packets, batches, verdicts, recvErrors, malformed, verdictErrors atomic.Uint64

	// The kernel's own counters of this queue (KernelStats).
	kmu    sync.Mutex
	proc   *os.File // /proc/net/netfilter/nfnetlink_queue of the socket's namespace; nil if it could not be opened
	portid uint32   // the socket's netlink port ID: the kernel's peer_portid of our queue
	kbuf   []byte
	kraw   procQueueLine // last values read
	kstats KernelStats   // accumulated (the kernel's counters are 32 bits wide)

	// poll is the socket in the runtime's network poller (Config.Wait
	// WaitPoller, wait.go); nil: Run blocks in recvmmsg.
	poll *poller
}

// KernelStats are the kernel's counters of a bound queue, from its line of
// /proc/net/netfilter/nfnetlink_queue. The kernel keeps them from the bind
// on, in 32 bits; KernelStats accumulates them in 64.
type KernelStats struct {
	// Waiting is how many packets wait for a verdict now (held ones included).
	Waiting uint32
	// QueueDropped counts packets the kernel dropped because MaxQueueLen
	// packets were already waiting.
	QueueDropped uint64
	// UserDropped counts packets the kernel dropped because it could not
	// hand them to the socket (its receive buffer was full).
	UserDropped uint64
}

// DefaultMaxQueueLen is how many packets the kernel keeps waiting for a
// verdict. Bursts beyond it are dropped by the kernel, deliberately not
// accepted: fail-open on overflow (NFQA_CFG_F_FAIL_OPEN) would let GRE leave
// untranslated, with an inside source address. The kernel counts those
// drops (KernelStats). Fail-open while no reader is bound is the rule's
// bypass flag (rules.Plan.FailOpen, never set on GRE), a different thing.
const DefaultMaxQueueLen = 8192

const (
	defaultCopyRange  = 0xffff
	defaultReadBuffer = 16 << 20
	defaultBatch      = 64
	// msgOverhead: room for the netlink headers and attributes around the
	// payload in a packet message (nlmsghdr, nfgenmsg, packet header,
	// ifindexes, hw address, timestamp, mark, cap_len, uid/gid, vlan, l2hdr).
	msgOverhead = 1024
)

// Open creates the socket and binds it to cfg.Queue.
func Open(cfg Config) (*Queue, error) {
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = DefaultMaxQueueLen
	}
	if cfg.CopyRange == 0 || cfg.CopyRange > 0xffff {
		cfg.CopyRange = defaultCopyRange
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = defaultReadBuffer
	}
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.Batch > 1024 {
		cfg.Batch = 1024
	}
	fd, err := socketIn(cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("nfq: netlink socket: %w", err)
	}
	c := &Queue{fd: fd, queue: cfg.Queue}
	if err := c.setup(cfg); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if cfg.Wait == WaitPoller {
		if err := c.usePoller(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("nfq: wait for packets in the runtime's poller: %w", err)
		}
	}
	// The kernel's drop counters are only in /proc, per network namespace:
	// the file is opened in the socket's and read from then on. Without
	// it (no /proc) the queue works and KernelStats says why it cannot.
	c.proc, c.kbuf = openProcQueues(cfg.NetNS), make([]byte, 0, 4096)
	if sa, err := unix.Getsockname(fd); err == nil {
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			c.portid = nl.Pid
		}
	}
	return c, nil
}

// procQueues is the kernel's table of the queues bound in the reading
// thread's network namespace.
const procQueues = "/proc/thread-self/net/netfilter/nfnetlink_queue"

// openProcQueues opens procQueues in namespace netns (0: the caller's); nil
// if it cannot.
func openProcQueues(netns int) *os.File {
	var f *os.File
	open := func() (err error) {
		f, err = os.Open(procQueues)
		return err
	}
	if netns == 0 {
		open()
	} else {
		nsenter.Do(netns, open)
	}
	return f
}

// procQueueLine is one line of /proc/net/netfilter/nfnetlink_queue, as
// nfnetlink_queue.c's seq_show prints it:
//
//	queue_num peer_portid queue_total copy_mode copy_range queue_dropped queue_user_dropped id_sequence 1
type procQueueLine struct {
	queue, portid, total, dropped, userDropped uint32
}

// parseProcQueues finds the line of queue num bound by portid (0: any) in
// the file's contents.
func parseProcQueues(b []byte, num uint16, portid uint32) (procQueueLine, bool, error) {
	for len(b) > 0 {
		var line []byte
		if i := slices.Index(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return procQueueLine{}, false, fmt.Errorf("nfq: %d fields in queue line %q, want at least 8", len(f), line)
		}
		var v [8]uint32
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return procQueueLine{}, false, fmt.Errorf("nfq: queue line %q: field %d: %w", line, i+1, err)
			}
			v[i] = uint32(n)
		}
		if v[0] == uint32(num) && (portid == 0 || v[1] == portid) {
			return procQueueLine{queue: v[0], portid: v[1], total: v[2], dropped: v[5], userDropped: v[6]}, true, nil
		}
	}
	return procQueueLine{}, false, nil
}

// KernelStats reads the kernel's counters of the queue. It reads a small
// file in /proc: meant for snapshots and periodic checks (the daemon does
// both), not per packet. Safe for concurrent use.
func (c *Queue) KernelStats() (KernelStats, error) {
	c.kmu.Lock()
	defer c.kmu.Unlock()
	if c.proc == nil {
		return c.kstats, fmt.Errorf("nfq: cannot read the kernel's queue counters: %s not available", procQueues)
	}
	b := c.kbuf[:0]
	for off := int64(0); ; {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := c.proc.ReadAt(b[len(b):cap(b)], off)
		b, off = b[:len(b)+n], off+int64(n)
		if err == io.EOF || n == 0 && err == nil {
			break
		}
		if err != nil {
			return c.kstats, fmt.Errorf("nfq: read %s: %w", procQueues, err)
		}
	}
	c.kbuf = b
	l, ok, err := parseProcQueues(b, c.queue, c.portid)
	if err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("nfq: queue %d (port %d) not in %s", c.queue, c.portid, procQueues)
		}
		return c.kstats, err
	}
	c.kstats.add(c.kraw, l)
	c.kraw = l
	return c.kstats, nil
}

// add accumulates the kernel's counters from line prev to line cur.
// Differences mod 2^32 keep counting across a wrap of the kernel's 32-bit
// counters (as long as reads come more often than 2^32 drops).
func (k *KernelStats) add(prev, cur procQueueLine) {
	k.Waiting = cur.total
	k.QueueDropped += uint64(cur.dropped - prev.dropped)
	k.UserDropped += uint64(cur.userDropped - prev.userDropped)
}

func (c *Queue) setup(cfg Config) error {
	fd := c.fd
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("nfq: bind netlink socket: %w", err)
	}
	// Overflow of the socket buffer drops packets silently instead of
	// failing the next receive; error answers do not echo our payload.
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1); err != nil {
		return fmt.Errorf("nfq: NETLINK_NO_ENOBUFS: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.ReadBuffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.ReadBuffer); err != nil {
			return fmt.Errorf("nfq: SO_RCVBUF: %w", err)
		}
	}
	bufSize := (int(cfg.CopyRange) + msgOverhead + 7) &^ 7
	// A batch of full-size modified verdicts must fit in one sendmsg
	// (netlink refuses messages larger than the send buffer).
	want := cfg.Batch * (bufSize + verdictMaxHdr)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, want)
	}
	sndbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return fmt.Errorf("nfq: SO_SNDBUF: %w", err)
	}
	// Backstop for waking Run (see wake): it rechecks ctx at least this often.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("nfq: SO_RCVTIMEO: %w", err)
	}

	slab := make([]byte, cfg.Batch*bufSize)
	c.bufs = make([][]byte, cfg.Batch)
	c.iovs = make([]unix.Iovec, cfg.Batch)
	c.msgs = make([]unix.Mmsghdr, cfg.Batch)
	for i := range c.bufs {
		c.bufs[i] = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		c.iovs[i].Base = &c.bufs[i][0]
		c.iovs[i].SetLen(bufSize)
		c.msgs[i].Hdr.Iov = &c.iovs[i]
		c.msgs[i].Hdr.SetIovlen(1)
	}
	// sk_sndbuf - 32 is netlink_sendmsg's limit; keep a little margin.
	c.out = newBatch(cfg.Batch, sndbuf-64)
	return c.configure(cfg)
}

// configure binds the queue and sets copy mode, range and queue length in
// one datagram of three acknowledged messages, then reads the answers.
// (The PF_BIND/PF_UNBIND commands are no-ops since Linux 3.8 and are not
// sent.) No NFQA_CFG_F_FAIL_OPEN: when the queue is full the kernel drops.
func (c *Queue) configure(cfg Config) error {
	const seq0 = 1
	req := appendConfig(nil, cfg.Queue, cfg.CopyRange, cfg.MaxQueueLen, seq0)
	if err := unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("nfq: send queue %d config: %w", cfg.Queue, err)
	}
	var errs [3]int32
	acked := 0
	buf := c.bufs[0]
	for acked < 3 {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("nfq: queue %d config: no answer from the kernel: %w", cfg.Queue, err)
		}
		for b := buf[:n]; len(b) > 0; {
			typ, _, _, body, rest, ok := nextMsg(b)
			if !ok {
				c.malformed.Add(1)
				break
			}
			b = rest
			switch typ {
			case unix.NLMSG_ERROR:
				errno, seq, ok := parseError(body)
				if !ok || seq < seq0 || seq >= seq0+3 {
					continue
				}
				errs[seq-seq0] = errno
				acked++
			case typePacket:
				// Queued between the bind and the copy-mode messages:
				// nobody can look at it yet, so drop it rather than let
				// it pass untranslated.
				if _, err := parsePacket(body, &c.pkt); err == nil {
					c.SetVerdict(c.pkt.ID, false, nil)
				}
			}
		}
	}
	what := [3]string{"bind", "set copy mode", "set queue length"}
	for i, e := range errs {
		if e != 0 {
			return configError(cfg.Queue, what[i], unix.Errno(e))
		}
	}
	return nil
}

// configError explains the kernel's answer to a config message. The kernel
// says EPERM both to a caller without CAP_NET_ADMIN and to a bind of a queue
// another socket holds; the process's capabilities tell which.
func configError(queue uint16, what string, e unix.Errno) error {
	switch {
	case e == unix.EPERM && !hasCapNetAdmin():
		return fmt.Errorf("nfq: %s queue %d: needs CAP_NET_ADMIN: %w", what, queue, e)
	case e == unix.EPERM || e == unix.EBUSY:
		return fmt.Errorf("nfq: queue %d is already bound by another process (kernel said %q): %w", queue, e.Error(), unix.EBUSY)
	case e == unix.ENOENT || e == unix.EOPNOTSUPP || e == unix.EPROTONOSUPPORT:
		return fmt.Errorf("nfq: %s queue %d: kernel lacks nfnetlink_queue (modprobe nfnetlink_queue): %w", what, queue, e)
	}
	return fmt.Errorf("nfq: %s queue %d: %w", what, queue, e)
}

// hasCapNetAdmin reports whether CAP_NET_ADMIN (bit 12) is in this
// process's effective set.
func hasCapNetAdmin() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true // cannot tell; do not claim a missing capability
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || caps&(1<<unix.CAP_NET_ADMIN) != 0
		}
	}
	return true
}

// socketIn creates the netlink socket, inside the network namespace netns
// if not 0 (through internal/nsenter).
func socketIn(netns int) (int, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	}
	if netns == 0 {
		return open()
	}
	fd := -1
	err := nsenter.Do(netns, func() (err error) {
		fd, err = open()
		return err
	})
	return fd, err
}

// Run reads packets and answers them until ctx is done or Close is called
// (it then returns nil). Only one Run may be active.
func (c *Queue) Run(ctx context.Context, h Handler) error {
	c.mu.Lock()
	if c.closed.Load() || c.fd < 0 {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.runDone != nil {
		c.mu.Unlock()
		return errors.New("nfq: Run is already running")
	}
	done := make(chan struct{})
	c.runDone = done
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.runDone = nil
		c.mu.Unlock()
		close(done)
	}()
	stop := context.AfterFunc(ctx, c.wake)
	defer stop()
	for ctx.Err() == nil && !c.closed.Load() {
		n, errno := c.receive()
		if errno != 0 {
			switch errno {
			case unix.EAGAIN, unix.EINTR:
				continue
			case unix.ENOBUFS:
				c.recvErrors.Add(1)
				continue
			}
			return fmt.Errorf("nfq: recvmmsg: %w", errno)
		}
		c.batches.Add(1)
		for i := 0; i < n; i++ {
			m := &c.msgs[i]
			if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
				c.malformed.Add(1)
			}
			c.handleDatagram(c.bufs[i][:min(int(m.Len), len(c.bufs[i]))], h)
		}
		c.flush()
	}
	return nil
}

// handleDatagram parses the messages of one received datagram, runs the
// handler on the packets and queues their verdicts in c.out.
func (c *Queue) handleDatagram(b []byte, h Handler) {
	p := &c.pkt
	for len(b) > 0 {
		typ, _, _, body, rest, ok := nextMsg(b)
		if !ok {
			c.malformed.Add(1)
			// A packet message cut short (MSG_TRUNC): drop it by ID
			// rather than leave it queued forever.
			if len(b) >= nlmsgHdrLen && binary.NativeEndian.Uint16(b[4:6]) == typePacket {
				if haveID, _ := parsePacket(b[nlmsgHdrLen:], p); haveID {
					c.queueVerdict(p.ID, false, nil, false)
				}
				*p = Packet{}
			}
			return
		}
		b = rest
		switch typ {
		case typePacket:
			haveID, err := parsePacket(body, p)
			if err != nil {
				c.malformed.Add(1)
				if haveID { // truncated: do not leave it queued
					c.queueVerdict(p.ID, false, nil, false)
				}
				continue
			}
			c.packets.Add(1)
			p.Queue = c.queue
			switch h(p) {
			case pkt.Accept:
				if p.Modified && (len(p.Payload) == 0 || len(p.Payload) > 0xffff) {
					// Not a packet the kernel could send on.
					c.verdictErrors.Add(1)
					c.queueVerdict(p.ID, false, nil, false)
				} else {
					c.queueVerdictAttrs(p.ID, true, p.Payload, p.Modified, p.Set)
				}
			case pkt.Hold:
			default: // Drop, or a value that is no Verdict
				c.queueVerdict(p.ID, false, nil, false)
			}
			*p = Packet{}
		case unix.NLMSG_ERROR:
			errno, _, ok := parseError(body)
			if !ok {
				c.malformed.Add(1)
			} else if errno != 0 {
				c.verdictErrors.Add(1)
			}
		}
	}
}

func (c *Queue) queueVerdict(id uint32, accept bool, payload []byte, withPayload bool) {
	c.queueVerdictAttrs(id, accept, payload, withPayload, Attrs{})
}

func (c *Queue) queueVerdictAttrs(id uint32, accept bool, payload []byte, withPayload bool, a Attrs) {
	if !c.out.fits(len(payload)) {
		c.flush()
	}
	c.out.add(c.queue, id, accept, payload, withPayload, a)
}

// flush sends the queued verdicts in one sendmsg.
func (c *Queue) flush() {
	if c.out.n == 0 {
		return
	}
	if c.sendmmsg {
		c.flushMM()
		return
	}
	iov := c.out.iovecs()
	var msg unix.Msghdr
	msg.Iov = &iov[0]
	msg.SetIovlen(len(iov))
	var errno unix.Errno
	for try := 0; try < 3; try++ {
		errno = c.sendBatch(&msg)
		if errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.ENOBUFS {
			break
		}
	}
	if errno != 0 {
		c.verdictErrors.Add(uint64(c.out.n))
	} else {
		c.verdicts.Add(uint64(c.out.n))
	}
	c.out.reset()
}

func (c *Queue) flushMM() {
	msgs := c.out.mmsgs()
	for tries := 0; len(msgs) > 0; tries++ {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		if (errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.ENOBUFS) && tries < 3 {
			continue
		}
		if errno != 0 {
			c.verdictErrors.Add(uint64(len(msgs)))
			break
		}
		c.verdicts.Add(uint64(n))
		msgs = msgs[n:]
	}
	c.out.reset()
}

func recvmmsg(fd int, msgs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])),
		uintptr(len(msgs)), uintptr(flags), 0, 0)
	return int(n), errno
}

// wake makes a blocked recvmmsg return: it asks the kernel for an ACK of an
// NLMSG_NOOP, which lands in our own receive queue. (Closing the fd would
// not wake it, and netlink sockets do not support shutdown.)
func (c *Queue) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return
	}
	var b [nlmsgHdrLen]byte
	putNlmsgHdr(b[:], nlmsgHdrLen, unix.NLMSG_NOOP, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 0)
	unix.Sendto(c.fd, b[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

var zeros [4]byte

// SetVerdict answers a packet the handler held (or any queued packet by
// ID). accept with a non-nil payload sends the payload as the packet's new
// content. Safe for concurrent use with Run. A kernel refusal (unknown ID)
// arrives asynchronously and is counted in Stats().VerdictErrors.
func (c *Queue) SetVerdict(id uint32, accept bool, payload []byte) error {
	return c.SetVerdictAttrs(id, accept, payload, Attrs{})
}

// SetVerdictAttrs is SetVerdict that also sets a's mark and priority on an
// accepted packet.
func (c *Queue) SetVerdictAttrs(id uint32, accept bool, payload []byte, a Attrs) error {
	if len(payload) > 0xffff {
		return fmt.Errorf("nfq: verdict payload of %d bytes exceeds 65535", len(payload))
	}
	withPayload := accept && payload != nil
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	hdr, pad := putVerdict(c.vbuf[:], c.queue, id, accept, payload, withPayload, a)
	c.viov[0] = unix.Iovec{Base: &c.vbuf[0]}
	c.viov[0].SetLen(hdr)
	n := 1
	if withPayload && len(payload) > 0 {
		c.viov[1] = unix.Iovec{Base: &payload[0]}
		c.viov[1].SetLen(len(payload))
		n = 2
		if pad > 0 {
			c.viov[2] = unix.Iovec{Base: &zeros[0]}
			c.viov[2].SetLen(pad)
			n = 3
		}
	}
	var msg unix.Msghdr
	msg.Iov = &c.viov[0]
	msg.SetIovlen(n)
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&msg)), 0)
	c.viov = [3]unix.Iovec{}
	if errno != 0 {
		c.verdictErrors.Add(1)
		return fmt.Errorf("nfq: verdict for packet %d: %w", id, errno)
	}
	c.verdicts.Add(1)
	return nil
}

// Stats returns a snapshot of the counters.
func (c *Queue) Stats() Stats {
	return Stats{
		Packets:       c.packets.Load(),
		Batches:       c.batches.Load(),
		Verdicts:      c.verdicts.Load(),
		RecvErrors:    c.recvErrors.Load(),
		Malformed:     c.malformed.Load(),
		VerdictErrors: c.verdictErrors.Load(),
	}
}

// The queue's metric families (see internal/metrics).
var (
	descPackets  = &metrics.Desc{Name: "nfqueue_packets_total", Help: "Packets the kernel queued to the daemon and the handler saw."}
	descBatches  = &metrics.Desc{Name: "nfqueue_batches_total", Help: "Receive calls (recvmmsg) that returned queued packets."}
	descVerdicts = &metrics.Desc{Name: "nfqueue_verdicts_total", Help: "Verdicts sent to the kernel, batched or one by one."}
	descErrors   = &metrics.Desc{Name: "nfqueue_errors_total", Help: "Queue errors by kind: recv (the kernel dropped messages for us, e.g. ENOBUFS), malformed (messages skipped), verdict (verdicts refused or unsendable).", Labels: []string{"kind"}}
	descDropped  = &metrics.Desc{Name: "nfqueue_kernel_dropped_total", Help: "Packets the kernel dropped instead of queueing them to the daemon, by reason: queue_full (the queue length was reached), socket_full (the daemon's receive buffer was full); read from /proc/net/netfilter/nfnetlink_queue.", Labels: []string{"reason"}}
)

// Collect emits the queue's counters (metrics.Source); the keys are those
// of `pptpgw calls --json` (nfqueue_packets, ...).
func (c *Queue) Collect(emit func(metrics.Sample)) {
	st := c.Stats()
	emit(metrics.Sample{Desc: descPackets, Key: "nfqueue_packets", Value: st.Packets})
	emit(metrics.Sample{Desc: descBatches, Key: "nfqueue_batches", Value: st.Batches})
	emit(metrics.Sample{Desc: descVerdicts, Key: "nfqueue_verdicts", Value: st.Verdicts})
	emit(metrics.Sample{Desc: descErrors, LabelValues: []string{"recv"}, Key: "nfqueue_recv_errors", Value: st.RecvErrors})
	emit(metrics.Sample{Desc: descErrors, LabelValues: []string{"malformed"}, Key: "nfqueue_malformed", Value: st.Malformed})
	emit(metrics.Sample{Desc: descErrors, LabelValues: []string{"verdict"}, Key: "nfqueue_verdict_errors", Value: st.VerdictErrors})
	// On a read error the last values read stay (zero if none was).
	ks, _ := c.KernelStats()
	emit(metrics.Sample{Desc: descDropped, LabelValues: []string{"queue_full"}, Key: "nfqueue_queue_dropped", Value: ks.QueueDropped})
	emit(metrics.Sample{Desc: descDropped, LabelValues: []string{"socket_full"}, Key: "nfqueue_user_dropped", Value: ks.UserDropped})
}

// Close stops Run and closes the socket, which unbinds the queue: the
// kernel drops the packets still waiting for a verdict; later packets are
// dropped, or accepted if the rule has the bypass flag.
func (c *Queue) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	c.wake()
	c.mu.Lock()
	done := c.runDone
	c.mu.Unlock()
	if done != nil {
		<-done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.closeFD()
	c.fd = -1
	c.kmu.Lock()
	if c.proc != nil {
		c.proc.Close()
		c.proc = nil
	}
	c.kmu.Unlock()
	return err
}

// SetMarkBits makes an Accept verdict set the bits of mask in the packet's
// mark to v's, keeping every other bit: the operator's, and those an
// earlier SetMarkBits for the same verdict set (several features mark one
// packet: a class, a pool member, hairpin).
func (p *Packet) SetMarkBits(mask, v uint32) {
	m := p.Mark
	if p.Set.SetMark {
		m = p.Set.Mark
	}
	p.Set.Mark = m&^mask | v&mask
	p.Set.SetMark = true
}
