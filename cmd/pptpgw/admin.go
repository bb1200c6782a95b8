package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The admin socket speaks one request per connection: the client writes a
// command word and a newline ("calls"), the daemon answers with one JSON
// document and closes; or, for a command answered with an adminStream
// ("events"), keeps the connection and writes JSON lines until either side
// closes it. It is a unix socket so that file permissions (0600,
// root) are the access control, and its path is configurable so daemons in
// different network namespaces never share one.

// adminHandler answers one command with a value to encode as JSON.
type adminHandler func(cmd string) (any, error)

// listenAdmin creates the admin socket at path, replacing a stale socket
// left by a daemon that died, but refusing to replace a live one.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s is in use by another running daemon (set --admin-socket)", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return l, nil
}

// serveAdmin answers requests on l until ctx ends; it closes l and removes
// the socket file on return.
func serveAdmin(ctx context.Context, l net.Listener, h adminHandler, log *slog.Logger) {
	path := l.Addr().String()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	defer os.Remove(path)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("admin socket accept failed", "err", err)
			}
			return
		}
		go answerAdmin(ctx, c, h)
	}
}

// adminStream is a handler's answer that streams: it owns the connection
// (no deadline) until ctx ends or it returns.
type adminStream func(ctx context.Context, c net.Conn)

func answerAdmin(ctx context.Context, c net.Conn, h adminHandler) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
	if err != nil && line == "" {
		return
	}
	v, err := h(strings.TrimSpace(line))
	if s, ok := v.(adminStream); ok && err == nil {
		c.SetDeadline(time.Time{})
		s(ctx, c)
		return
	}
	enc := json.NewEncoder(c)
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	enc.Encode(v)
}

// queryAdmin sends cmd to the daemon (named for messages, e.g. "pptpgw
// serve") at path and returns its JSON answer.
func queryAdmin(daemon, path, cmd string) ([]byte, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no %s answers at %s (is it running? set --admin-socket to its socket)", daemon, path)
		}
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return nil, errors.New(e.Error)
	}
	return b, nil
}
