// Package logging holds what the commands of both products share about
// logging: the one parser of a log level as configs and flags spell it, and
// the one rate limit on repeated warnings (RateLimiter).
//
// It owns the spelling of levels and the rate limit only. It must not know
// about handlers, outputs or any product's configuration.
package logging

import (
	"fmt"
	"log/slog"
	"strings"
)

// ParseLevel maps a level name (debug, info, warn or warning, error; any
// case; "" is info) to a slog.Level. A name may carry an offset the way slog
// writes one ("info+2", "DEBUG-4"), as `pptpgw serve` has always accepted.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	var l slog.Level
	if strings.ContainsAny(s, "+-") && l.UnmarshalText([]byte(s)) == nil {
		return l, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}
