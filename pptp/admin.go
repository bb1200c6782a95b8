package pptp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultAdminSocket is where `pptpgw serve` answers `pptpgw sessions`.
const DefaultAdminSocket = "/run/pptpgw/serve.sock"

// AdminReply is the JSON answer of the admin socket.
type AdminReply struct {
	Sessions []SessionInfo     `json:"sessions"`
	Counters map[string]uint64 `json:"counters"`
	Error    string            `json:"error,omitempty"`
}

// ServeAdmin answers requests on a unix socket at path (mode 0600) until ctx is done.
// Protocol: the client writes one line ("sessions"), the server writes one JSON
// AdminReply and closes.
func (s *Server) ServeAdmin(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A stale socket from a crashed run; a live server would still answer.
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return fmt.Errorf("admin socket %s: another server is running", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer os.Remove(path)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.adminConn(c)
		}
	}()
	return nil
}

func (s *Server) adminConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	var rep AdminReply
	switch strings.TrimSpace(line) {
	case "sessions", "":
		rep.Sessions = s.Sessions()
		rep.Counters = s.Counters()
	default:
		rep.Error = "unknown request"
	}
	_ = json.NewEncoder(c).Encode(&rep)
}

// QueryAdmin asks a running server for its sessions.
func QueryAdmin(path string, timeout time.Duration) (*AdminReply, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w (is `pptpgw serve` running?)", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("sessions\n")); err != nil {
		return nil, err
	}
	var rep AdminReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return nil, fmt.Errorf("admin socket %s: bad reply: %w", path, err)
	}
	if rep.Error != "" {
		return nil, errors.New(rep.Error)
	}
	return &rep, nil
}
