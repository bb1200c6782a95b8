package fakeppp

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of the server mode (pptpd passes pppd arguments we ignore).
const (
	EnvLog        = "FAKEPPP_LOG"         // append a line per run to this file
	EnvMaxSeconds = "FAKEPPP_MAX_SECONDS" // lifetime bound, default 30
)

// MakeRaw puts the terminal on fd into raw mode (cfmakeraw), so the line
// discipline passes HDLC bytes untouched. Not a terminal: no-op.
func MakeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

type stdio struct{}

func (stdio) Read(b []byte) (int, error)  { return os.Stdin.Read(b) }
func (stdio) Write(b []byte) (int, error) { return os.Stdout.Write(b) }

// Main is the fakeppp program. "fakeppp client -tag T -frames N" runs the
// client mode on stdin/stdout and prints a JSON Summary on stderr (exit 0 only
// if OK). Any other arguments (what pptpd passes to pppd) run the server
// mode: echo on fd 0, which pptpctrl makes the pty.
func Main(args []string) int {
	if len(args) > 0 && args[0] == "client" {
		fs := flag.NewFlagSet("fakeppp client", flag.ContinueOnError)
		var cfg ClientConfig
		fs.StringVar(&cfg.Tag, "tag", "c0", "client tag")
		fs.IntVar(&cfg.Frames, "frames", 100, "frames to round-trip")
		fs.IntVar(&cfg.Window, "window", 4, "frames in flight")
		fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "overall bound")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		_ = MakeRaw(0)
		s := Client(context.Background(), stdio{}, cfg)
		fmt.Fprintln(os.Stderr, s.JSON())
		if !s.OK() {
			return 1
		}
		return 0
	}
	max := 30 * time.Second
	if v, err := strconv.Atoi(os.Getenv(EnvMaxSeconds)); err == nil && v > 0 {
		max = time.Duration(v) * time.Second
	}
	_ = MakeRaw(0)
	// fd 0 is the pty slave opened read-write: use it both ways.
	rw := struct {
		io.Reader
		io.Writer
	}{os.Stdin, os.Stdin}
	n, err := Echo(context.Background(), rw, max)
	if p := os.Getenv(EnvLog); p != "" {
		if f, ferr := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); ferr == nil {
			fmt.Fprintf(f, "fakeppp server pid=%d args=%q echoed=%d err=%v\n", os.Getpid(), args, n, err)
			f.Close()
		}
	}
	return 0
}
