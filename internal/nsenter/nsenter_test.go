package nsenter

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func nsID(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestFreshAndDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	var inside uint64
	var fd int
	err := Fresh(func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" {
			t.Errorf("fresh namespace has %v, want only lo", ifs)
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if inside == nsID(t) {
		t.Fatal("Fresh ran fn in the caller's namespace")
	}
	var again uint64
	boom := errors.New("boom")
	err = Do(fd, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		again = st.Ino
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	if again != inside {
		t.Fatalf("Do entered namespace %d, want %d", again, inside)
	}
}

func TestDoBadFD(t *testing.T) {
	called := false
	err := Do(-1, func() error { called = true; return nil })
	if err == nil || called {
		t.Fatalf("Do(-1) = %v, fn called %v; want an error and no call", err, called)
	}
}

// fn ending in runtime.Goexit (t.FailNow inside fn) still returns from Do
// and Fresh, with an error, instead of leaving the caller waiting.
func TestGoexit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	self, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(self)
	for name, call := range map[string]func(func() error) error{
		"Fresh": Fresh,
		"Do":    func(fn func() error) error { return Do(self, fn) },
	} {
		errc := make(chan error, 1)
		go func() { errc <- call(func() error { runtime.Goexit(); return nil }) }()
		select {
		case err := <-errc:
			if !errors.Is(err, errGoexit) {
				t.Errorf("%s: fn called runtime.Goexit, got %v, want errGoexit", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no return within 5s of fn calling runtime.Goexit", name)
		}
	}
}
