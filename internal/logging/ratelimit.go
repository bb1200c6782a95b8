package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// The rate limit on repeated warnings, shared by the gateway and the server
// (it started as the server's, pptp/ratelog.go).

// RateLimiter writes the lines that a flood can trigger (one per connection,
// call, packet or HTTP request) without letting the flood write the log: per
// message, the first line of each interval is logged as it is, the rest are
// only counted, and when the interval is over the count goes out as one line
// with "suppressed": n, at the message's level.
// A message therefore costs at most two lines per interval, however many peers
// trigger it. The clock is injected (NewRateLimiter's now), so tests run it on
// fake time.
type RateLimiter struct {
	logger     *slog.Logger
	every      time.Duration
	now        func() time.Time
	suppressed func(n int) // counts the lines left out (e.g. the server's log_suppressed); may be nil

	mu   sync.Mutex
	msgs map[string]*rateEntry // by message
}

type rateEntry struct {
	start      time.Time // when the line that opened the interval was logged
	level      slog.Level
	suppressed int
}

// NewRateLimiter returns a RateLimiter writing to log, one line per message per
// interval every; now is the clock (time.Now outside tests).
func NewRateLimiter(log *slog.Logger, every time.Duration, now func() time.Time, suppressed func(int)) *RateLimiter {
	return &RateLimiter{logger: log, every: every, now: now, suppressed: suppressed, msgs: map[string]*rateEntry{}}
}

// Warn logs msg with args at level Warn, or counts it when msg was already logged in
// this interval.
func (r *RateLimiter) Warn(msg string, args ...any) { r.log(slog.LevelWarn, msg, args...) }

// Info is Warn at level Info.
func (r *RateLimiter) Info(msg string, args ...any) { r.log(slog.LevelInfo, msg, args...) }

func (r *RateLimiter) log(level slog.Level, msg string, args ...any) {
	now := r.now()
	r.mu.Lock()
	e := r.msgs[msg]
	if e != nil && now.Sub(e.start) < r.every {
		e.suppressed++
		r.mu.Unlock()
		if r.suppressed != nil {
			r.suppressed(1)
		}
		return
	}
	var n int
	if e == nil {
		e = &rateEntry{}
		r.msgs[msg] = e
	} else {
		n = e.suppressed
	}
	prev := e.level
	e.start, e.level, e.suppressed = now, level, 0
	r.mu.Unlock()
	if n > 0 {
		r.summary(prev, msg, n)
	}
	r.logger.Log(context.Background(), level, msg, args...)
}

// Flush writes the count of every message whose interval is over and forgets the
// message, so that the next occurrence is logged in full. Call it periodically
// (the server calls it from Tick).
func (r *RateLimiter) Flush(now time.Time) {
	type line struct {
		level slog.Level
		msg   string
		n     int
	}
	var out []line
	r.mu.Lock()
	for msg, e := range r.msgs {
		if now.Sub(e.start) < r.every {
			continue
		}
		if e.suppressed > 0 {
			out = append(out, line{e.level, msg, e.suppressed})
		}
		delete(r.msgs, msg)
	}
	r.mu.Unlock()
	for _, l := range out {
		r.summary(l.level, l.msg, l.n)
	}
}

func (r *RateLimiter) summary(level slog.Level, msg string, n int) {
	r.logger.Log(context.Background(), level, msg, "suppressed", n, "interval", r.every.String())
}

// Writer returns an io.Writer whose every write is one Warn line of msg with
// the written text as "err" (trailing newline trimmed): for log.Logger users
// such as http.Server.ErrorLog, whose lines a client can trigger at will.
func (r *RateLimiter) Writer(msg string) io.Writer { return &limitedWriter{r, msg} }

type limitedWriter struct {
	r   *RateLimiter
	msg string
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	w.r.Warn(w.msg, "err", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
