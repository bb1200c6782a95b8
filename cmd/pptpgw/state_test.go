package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/nat"
)

// The state keeper: a missing, corrupted, foreign or other-version file is
// logged and ignored (the engine starts empty, nothing fails); its own
// file is restored; saving writes a file the next start restores.
func TestStateKeeper(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	owner := map[string]string{"table": "pptpgw", "queue": "47", "wan": "w0", "public_address": ""}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	newEng := func() *nat.Engine {
		return nat.NewEngine(nat.EngineConfig{PublicIP: netip.MustParseAddr("203.0.113.1"), WANIf: 2},
			conntrack.NewFakeClock(time.Time{}))
	}
	keeper := func(e *nat.Engine, own map[string]string) *stateKeeper {
		return &stateKeeper{engine: e, owner: own, path: func() string { return path }, log: log}
	}
	// An empty engine's state, saved by another gateway's keeper.
	keeper(newEng(), map[string]string{"table": "other"}).save("test")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"missing":   nil,
		"corrupted": []byte(`{"version":1,"conns":[`),
		"version":   bytes.Replace(good, []byte(`"version":1`), []byte(`"version":99`), 1),
		"foreign":   good,
	} {
		os.Remove(path)
		if content != nil {
			os.WriteFile(path, content, 0o600)
		}
		logs.Reset()
		keeper(newEng(), owner).restore()
		want := map[string]string{"missing": "no saved call table", "corrupted": "cannot read it",
			"version": "cannot read it", "foreign": "another gateway"}[name]
		if !strings.Contains(logs.String(), want) {
			t.Errorf("%s: log %q, want %q", name, logs.String(), want)
		}
	}
	// Its own file: restored.
	keeper(newEng(), owner).save("test")
	logs.Reset()
	keeper(newEng(), owner).restore()
	if !strings.Contains(logs.String(), `msg="restored the saved call table"`) {
		t.Errorf("own state file: %s", logs.String())
	}
	// state_file "": nothing read or written.
	os.Remove(path)
	k := keeper(newEng(), owner)
	k.path = func() string { return "" }
	k.save("test")
	k.restore()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("state_file \"\" wrote %s", path)
	}
}
