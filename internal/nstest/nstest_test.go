package nstest

import (
	"runtime"
	"testing"
)

// fakeTB records how a test would have ended; FailNow and SkipNow end the
// calling goroutine as the real ones do.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	last            string // the last of FailNow, SkipNow called
}

func (f *fakeTB) Helper()             {}
func (f *fakeTB) Skipped() bool       { return f.skipped }
func (f *fakeTB) Fatal(...any)        { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Skip(...any)         { f.skipped = true; runtime.Goexit() }
func (f *fakeTB) FailNow()            { f.failed, f.last = true, "FailNow"; runtime.Goexit() }
func (f *fakeTB) SkipNow()            { f.skipped, f.last = true, "SkipNow"; runtime.Goexit() }
func (f *fakeTB) Logf(string, ...any) {}

// A Fatal or Skip inside f, which runs on nsenter's goroutine, ends the
// test's own goroutine the same way; an f that returns ends nothing.
func TestRunEndsTheTestAsFDid(t *testing.T) {
	RequireRoot(t)
	for _, tc := range []struct {
		name                string
		f                   func(tb *fakeTB)
		returns, fail, skip bool
		last                string
	}{
		{name: "returns", f: func(*fakeTB) {}, returns: true},
		{name: "Fatal", f: func(tb *fakeTB) { tb.Fatal("boom") }, fail: true, last: "FailNow"},
		{name: "Skip", f: func(tb *fakeTB) { tb.Skip("later") }, skip: true, last: "SkipNow"},
	} {
		tb := &fakeTB{}
		returned := false
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(tb, func() { tc.f(tb) })
			returned = true
		}()
		<-done
		if returned != tc.returns || tb.failed != tc.fail || tb.skipped != tc.skip || tb.last != tc.last {
			t.Errorf("%s: Run returned %v, failed %v, skipped %v, ended with %q; want %v, %v, %v, %q",
				tc.name, returned, tb.failed, tb.skipped, tb.last, tc.returns, tc.fail, tc.skip, tc.last)
		}
	}
}
