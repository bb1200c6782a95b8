// Package nstest runs test code inside network namespaces, through
// internal/nsenter (the module's one way into a namespace), for tests only.
package nstest

import (
	"os"
	"testing"

	"pptpgw/internal/nsenter"
)

// RequireRoot skips tb unless running as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces")
	}
}

// Run runs f inside a fresh network namespace (only lo, down), on a locked
// OS thread of a goroutine of its own that returns to its namespace after.
// It skips tb when not root. f may call tb.Fatal or tb.Skip: that ends f,
// then the test.
func Run(tb testing.TB, f func()) {
	tb.Helper()
	RequireRoot(tb)
	returned := false
	err := nsenter.Fresh(func() error { f(); returned = true; return nil })
	finish(tb, returned, err)
}

// Do runs f inside the network namespace open as fd; like Run, a Fatal or
// Skip inside f ends the test, but Do does not skip when not root (the
// caller opened fd, so it has the privileges already).
func Do(tb testing.TB, fd int, f func()) {
	tb.Helper()
	returned := false
	err := nsenter.Do(fd, func() error { f(); returned = true; return nil })
	finish(tb, returned, err)
}

// finish carries the end of f over to the test's own goroutine: a Fatal or
// Skip in f (whose message is logged already) stops the test too.
func finish(tb testing.TB, returned bool, err error) {
	tb.Helper()
	switch {
	case !returned && tb.Skipped():
		tb.SkipNow()
	case !returned:
		tb.FailNow()
	case err != nil:
		tb.Fatal(err)
	}
}
