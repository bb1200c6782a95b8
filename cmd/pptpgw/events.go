package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"pptpgw/nat"
	"pptpgw/rules"
)

// `pptpgw events` (issue 8): the gateway's call events, streamed over the
// admin socket like `conntrack -E`.

func cmdEvents(args []string) int {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object per line instead of text")
	sock := fs.String("admin-socket", rules.DefaultAdminSocket, "admin socket of the running gateway")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw events [--json] [--admin-socket PATH]

Streams the call events of a running 'pptpgw run' until interrupted, one line
per event, like 'conntrack -E': control-new (a PPTP control connection is
tracked), call-setup (inside, outside and peer call IDs), call-cleared,
call-expired, call-evicted (with the reason and the call's GRE counters) and
refused (a connection or call not tracked: table_full, per_source, per_conn,
callid_exhausted). Several listeners may run at once. A listener that reads
too slowly never slows the gateway: events that do not fit its buffer are
dropped and it sees a "lost N events" line (counted in events_lost_total).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE)
	err := streamEvents(ctx, *sock, func(ev nat.EventJSON) error {
		if *asJSON {
			b, _ := json.Marshal(ev)
			_, err := fmt.Fprintf(os.Stdout, "%s\n", b)
			return err
		}
		_, err := fmt.Fprintln(os.Stdout, formatEvent(ev))
		return err
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "pptpgw events:", err)
		return 1
	}
	return 0
}

// streamEvents subscribes at the admin socket and calls f for each event
// until ctx ends, the daemon closes the stream, or f fails.
func streamEvents(ctx context.Context, path string, f func(nat.EventJSON) error) error {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("no pptpgw run answers at %s (is it running? set --admin-socket to its socket)", path)
		}
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer c.Close()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	if _, err := io.WriteString(c, "events\n"); err != nil {
		return err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		var ev struct {
			nat.EventJSON
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad line from daemon: %v", err)
		}
		if ev.Error != "" {
			return errors.New(ev.Error)
		}
		if err := f(ev.EventJSON); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	if ctx.Err() == nil {
		return errors.New("the gateway closed the stream (stopped?)")
	}
	return nil
}

// formatEvent is one line of the text output:
//
//	22:51:07.412 [CALL-SETUP] inside=10.0.0.2:40000 call=5 outside=203.0.113.1 call=27314 peer=198.51.100.7:1723 call=77
func formatEvent(ev nat.EventJSON) string {
	var b strings.Builder
	b.WriteString(ev.Time.Local().Format("15:04:05.000"))
	if ev.Event == nat.EventLost {
		fmt.Fprintf(&b, " lost %d events (this listener read too slowly)", ev.Lost)
		return b.String()
	}
	fmt.Fprintf(&b, " [%s]", strings.ToUpper(ev.Event))
	if ev.Event == "refused" {
		fmt.Fprintf(&b, " %s", ev.What)
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", ev.Reason)
	}
	call := func(id uint16) {
		if ev.What == "call" {
			fmt.Fprintf(&b, " call=%d", id)
		}
	}
	fmt.Fprintf(&b, " inside=%s", hostPort(ev.InsideIP.String(), ev.InsidePort))
	call(ev.InsideCallID)
	if ev.PublicIP.IsValid() {
		fmt.Fprintf(&b, " outside=%s", ev.PublicIP)
		if ev.OutsideCallID != 0 || ev.Event != "refused" {
			call(ev.OutsideCallID)
		}
	}
	fmt.Fprintf(&b, " peer=%s", hostPort(ev.PeerIP.String(), ev.PeerPort))
	if ev.Event == "call-setup" || ev.PeerCallID != 0 {
		call(ev.PeerCallID)
	}
	switch ev.Event {
	case "call-cleared", "call-expired", "call-evicted":
		fmt.Fprintf(&b, " pkts=%d/%d bytes=%d/%d", ev.PktsOut, ev.PktsIn, ev.BytesOut, ev.BytesIn)
	}
	return b.String()
}

func hostPort(h string, p uint16) string {
	if p == 0 {
		return h
	}
	return net.JoinHostPort(h, strconv.Itoa(int(p)))
}

// eventsStream answers the admin command "events": one listener of e's
// events, written as JSON lines until the client goes or ctx ends. A client
// that reads slowly blocks only this goroutine: its buffer fills and the
// engine drops and counts (the next line says "lost N").
func eventsStream(e *nat.Engine) adminStream {
	return func(ctx context.Context, c net.Conn) {
		sub := e.SubscribeEvents(0)
		defer sub.Close()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { // the client hung up
			io.Copy(io.Discard, c)
			cancel()
		}()
		bw := bufio.NewWriter(c)
		enc := json.NewEncoder(bw)
		lost := func() {
			if n := sub.TakeLost(); n > 0 {
				enc.Encode(nat.EventJSON{Time: time.Now(), Event: nat.EventLost, Lost: n})
			}
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-sub.C:
				lost()
				enc.Encode(ev.JSON())
				if len(sub.C) > 0 && bw.Buffered() < 32<<10 {
					continue // more are waiting: one write for them all
				}
			case <-tick.C:
				lost()
			}
			c.SetWriteDeadline(time.Now().Add(time.Minute))
			if bw.Flush() != nil {
				return
			}
		}
	}
}

// listenAdminGroup is listenAdmin with the socket's group set by
// setAdminGroup.
func listenAdminGroup(path, group string) (net.Listener, error) {
	if _, err := lookupGroup(group); err != nil { // before the socket exists
		return nil, err
	}
	l, err := listenAdmin(path)
	if err != nil {
		return nil, err
	}
	if err := setAdminGroup(path, group); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// setAdminGroup gives the admin socket at path to group (a name or number;
// admin_group) with mode 0660, or to the daemon's user alone (0600, its own
// group) when group is "".
// Idempotent: a reload calls it with the new admin_group.
func setAdminGroup(path, group string) error {
	gid, err := lookupGroup(group)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o660)
	if group == "" {
		gid, mode = os.Getegid(), 0o600
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}

// lookupGroup returns the gid of a group name or number ("" is 0).
func lookupGroup(group string) (int, error) {
	if group == "" {
		return 0, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		if g, err = user.LookupGroupId(group); err != nil {
			return 0, fmt.Errorf("admin_group %q: no such group", group)
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("admin_group %q: gid %q", group, g.Gid)
	}
	return gid, nil
}
