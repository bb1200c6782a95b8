package nfq

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// How Run waits for packets (issue 12, call setups per second).
//
// Every control segment of a PPTP set-up crosses the queue, so the set-up
// rate is bounded by the cost of a crossing, and most of that cost is not
// the engine: it is waking threads. A reader blocked in recvmmsg is, to the
// Go scheduler, a goroutine in a system call holding its P. When every P is
// in a system call (two readers on a 2-CPU machine), the runtime's sysmon
// thread takes the Ps back after 20 µs and keeps waking every 20 µs while it
// does; when the readers are idle it sleeps, and the next entry into or exit
// from a system call wakes it again (runtime.entersyscall/exitsyscall
// notewakeup(&sched.sysmonnote)). So each crossing cost a wake-up of sysmon
// on top of the reader's own, on a machine with two vCPUs whose idle vCPU
// halts: `perf record -g` of the daemon during `pptpgw bench --only setups`
// had runtime.sysmon at 16-23 % of the daemon's CPU samples.
//
// WaitPoller (the default) takes the reader out of system calls while it
// waits: the socket is non-blocking and registered with the runtime's
// network poller (os.File + syscall.RawConn), so an idle reader is a parked
// goroutine ("IO wait") like any network read, the packet's arrival wakes
// the one thread waiting in epoll, and the reads (MSG_DONTWAIT) and the
// batch's verdict sendmsg are raw system calls that never block (a netlink
// message to the kernel is handled synchronously; re-injecting the batch's
// packets takes microseconds), so no P is ever parked in a system call for
// sysmon to take. Measured on the project's 2-vCPU VM (README, "pptpgw
// bench additions"): 28-42 % less daemon CPU and 35-43 % fewer context
// switches per set-up. WaitSyscall is the reader as it was
// (a blocking recvmmsg per batch): kept for comparison and as a fallback.

// WaitMode is how Run waits for packets (Config.Wait).
type WaitMode uint8

const (
	// WaitPoller: a non-blocking socket in the runtime's network poller
	// (the default).
	WaitPoller WaitMode = iota
	// WaitSyscall: a blocking recvmmsg.
	WaitSyscall
)

func (w WaitMode) String() string {
	switch w {
	case WaitPoller:
		return "poller"
	case WaitSyscall:
		return "syscall"
	}
	return fmt.Sprintf("WaitMode(%d)", uint8(w))
}

// poller is the Queue's state in WaitPoller mode (nil in WaitSyscall mode).
type poller struct {
	file *os.File // owns the fd from Open on; Close closes it
	rc   syscall.RawConn
	read func(fd uintptr) bool // preallocated: Run calls it per batch
	n    int
	err  unix.Errno
}

// usePoller makes c's socket non-blocking and registers it with the
// runtime's poller.
func (c *Queue) usePoller() error {
	if err := unix.SetNonblock(c.fd, true); err != nil {
		return err
	}
	f := os.NewFile(uintptr(c.fd), "nfqueue")
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	p := &poller{file: f, rc: rc}
	p.read = func(fd uintptr) bool {
		p.n, p.err = recvmmsgNoWait(int(fd), c.msgs)
		return p.err != unix.EAGAIN
	}
	c.poll = p
	return nil
}

// receive waits for packets and reads a batch into c.msgs: in the poller,
// or in a blocking recvmmsg.
func (c *Queue) receive() (int, unix.Errno) {
	if c.poll == nil {
		return recvmmsg(c.fd, c.msgs, unix.MSG_WAITFORONE)
	}
	if err := c.poll.rc.Read(c.poll.read); err != nil {
		return 0, unix.EBADF // the file was closed
	}
	return c.poll.n, c.poll.err
}

// recvmmsgNoWait is recvmmsg with MSG_DONTWAIT as a raw system call: it
// never blocks, so the scheduler need not know.
func recvmmsgNoWait(fd int, msgs []unix.Mmsghdr) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])),
		uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

// sendBatch sends the batch's verdicts (one datagram): a raw system call in
// poller mode (it does not block), a scheduler-aware one otherwise.
func (c *Queue) sendBatch(msg *unix.Msghdr) unix.Errno {
	var errno unix.Errno
	if c.poll != nil {
		_, _, errno = unix.RawSyscall(unix.SYS_SENDMSG, uintptr(c.fd), uintptr(unsafe.Pointer(msg)), unix.MSG_DONTWAIT)
	} else {
		_, _, errno = unix.Syscall(unix.SYS_SENDMSG, uintptr(c.fd), uintptr(unsafe.Pointer(msg)), 0)
	}
	return errno
}

// closeFD closes the socket: through the poller's file if it owns it.
func (c *Queue) closeFD() error {
	if c.poll != nil {
		return c.poll.file.Close()
	}
	return unix.Close(c.fd)
}
