package logging

import (
	"log/slog"
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"":        slog.LevelInfo,
		"debug":   slog.LevelDebug,
		"INFO":    slog.LevelInfo,
		"warn":    slog.LevelWarn,
		"Warning": slog.LevelWarn,
		"error":   slog.LevelError,
		"info+2":  slog.LevelInfo + 2,
		"DEBUG-4": slog.LevelDebug - 4,
	} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"verbose", "2", "info+", "+1", "warn x"} {
		if _, err := ParseLevel(in); err == nil || !strings.Contains(err.Error(), "is not one of debug, info, warn, error") {
			t.Errorf("ParseLevel(%q): err %v", in, err)
		}
	}
}
