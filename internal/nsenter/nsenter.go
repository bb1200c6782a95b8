// Package nsenter is the one way this module runs code inside a network
// namespace: on a fresh goroutine whose OS thread is locked, switched into
// the namespace, and switched back before the thread is unlocked. A thread
// that cannot be switched back is never unlocked, so the Go runtime throws
// it away instead of reusing it in the wrong namespace.
//
// It owns entering and leaving namespaces only; creating, naming and
// deleting them belongs to its callers (testbed, tests).
package nsenter

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn inside the network namespace open as fd (a file descriptor of
// /var/run/netns/NAME, /proc/PID/ns/net or a netns.NsHandle) and returns its
// error. fn runs on its own locked OS thread; goroutines it starts do not
// inherit the namespace, but sockets it opens stay in it.
func Do(fd int, fn func() error) error {
	return run(func(orig int) error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		return fn()
	})
}

// Fresh runs fn inside a new, private network namespace (only lo, down)
// that disappears once nothing holds it (fn's sockets and files may).
func Fresh(fn func() error) error {
	return run(func(orig int) error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return fn()
	})
}

// errGoexit is what Do and Fresh return when fn ends in runtime.Goexit
// instead of returning (in a test: t.FailNow or t.SkipNow called in fn).
var errGoexit = errors.New("nsenter: fn did not return (runtime.Goexit)")

// run locks a new goroutine's thread, remembers its namespace, lets enter
// switch it (and run the caller's code), and switches it back, also when
// enter ends in runtime.Goexit.
func run(enter func(orig int) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		ferr := errGoexit
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// The thread stays locked and dies with this goroutine.
				errc <- errors.Join(ferr, fmt.Errorf("return to the original namespace: %w", err))
				return
			}
			runtime.UnlockOSThread()
			errc <- ferr
		}()
		ferr = enter(orig)
	}()
	return <-errc
}
