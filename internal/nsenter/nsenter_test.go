package nsenter

import (
	"errors"
	"net"
	"os"
	"testing"

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
