package rules

// The queue readers' wait (issue 12, call setups per second): how a reader
// waits for packets. See nat/nfq/wait.go.
const (
	// QueueWaitPoller: the socket non-blocking in the Go runtime's network
	// poller (the default).
	QueueWaitPoller = "poller"
	// QueueWaitSyscall: a blocking recvmmsg per batch.
	QueueWaitSyscall = "syscall"
)

// validateSetups checks queue_wait; Validate calls it with its error
// collector. An empty value becomes the default.
func (c *Config) validateSetups(bad func(field, format string, a ...any)) {
	switch c.QueueWait {
	case QueueWaitPoller, QueueWaitSyscall:
	case "":
		c.QueueWait = QueueWaitPoller
	default:
		bad("queue_wait", "%q is not one of poller, syscall", c.QueueWait)
	}
}
