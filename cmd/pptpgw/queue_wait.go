package main

import (
	"flag"
	"fmt"

	"pptpgw/nat/nfq"
	"pptpgw/rules"
)

// The queue readers' wait (issue 12, call setups per second): `queue_wait`,
// --queue-wait. How a reader waits decides how many threads each queued
// packet wakes (nat/nfq/wait.go).

// addQueueWaitFlag defines --queue-wait on fs.
func addQueueWaitFlag(fs *flag.FlagSet) *string {
	return fs.String("queue-wait", "", "how the NFQUEUE readers wait for packets: poller (non-blocking, in the Go runtime's network poller: fewer thread wake-ups per packet) or syscall (a blocking recvmmsg) (default poller)")
}

// nfqWait is the nfq.WaitMode of a validated queue_wait.
func nfqWait(s string) nfq.WaitMode {
	if s == rules.QueueWaitSyscall {
		return nfq.WaitSyscall
	}
	return nfq.WaitPoller
}

// queueWaitApplier refuses a reload that changes queue_wait: the readers'
// sockets are set up at start; changing how they wait needs a restart.
type queueWaitApplier string

func (q queueWaitApplier) Apply(cfg *rules.Config) error {
	if w := cfg.QueueWait; w != "" && w != string(q) {
		return fmt.Errorf("queue_wait %s: the daemon's queue readers wait with %s; changing it needs a restart", w, q)
	}
	return nil
}
