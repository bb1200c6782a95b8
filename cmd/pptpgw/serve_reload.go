package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"pptpgw/internal/metrics"
	"pptpgw/pptp"
	"pptpgw/pptp/secrets"
)

// Live reload of `pptpgw serve` (issue 8): SIGHUP or the admin command
// "reload" (`pptpgw reload --admin-socket SERVE'S SOCKET`) read the config
// file and the chap-secrets file again, with the start-up flags still
// overriding the file, and hand the result to pptp.Server.Reload: limits,
// timeouts, secrets, server_name, dns, split_routes, log_level and a grown pool apply
// to new connections and sessions; live sessions stay. An invalid file, a
// secrets file that cannot be read, or a change to a setting fixed while
// running (tun, admin_socket, metrics and admin_group here, listen, local_ip, mru, auth,
// encryption, mppe_*, gre.* in pptp) is refused, logged and counted
// (reloads_total{result}), and the server goes on as it was.

// serveSource reads the server's configuration as at start.
type serveSource struct {
	path  string
	flags func(*pptp.FileConfig)
}

// load returns the file's settings (flags applied) and the server's Config
// with its secrets loaded.
func (s serveSource) load() (*pptp.FileConfig, pptp.Config, error) {
	sc := &pptp.FileConfig{}
	if s.path != "" {
		var err error
		if sc, err = pptp.LoadFileConfig(s.path); err != nil {
			return nil, pptp.Config{}, fmt.Errorf("config: %w", err)
		}
	}
	if s.flags != nil {
		s.flags(sc)
	}
	if _, err := sc.Level(); err != nil {
		return nil, pptp.Config{}, s.inFile(err)
	}
	cfg, err := sc.Config()
	if err != nil {
		return nil, pptp.Config{}, s.inFile(err)
	}
	if err := validateServeObs(sc); err != nil { // metrics, admin_group (serve_obs.go)
		return nil, pptp.Config{}, err
	}
	if sc.Secrets == "" {
		return nil, pptp.Config{}, errors.New("no secrets file: set --secrets FILE (pppd chap-secrets format)")
	}
	sec, err := secrets.Load(sc.Secrets)
	if err != nil {
		return nil, pptp.Config{}, err
	}
	cfg.Secrets = sec
	if sc.TUN == "" {
		sc.TUN = pptp.DefaultTUN
	}
	if sc.AdminSocket == "" {
		sc.AdminSocket = pptp.DefaultAdminSocket
	}
	return sc, cfg, nil
}

// inFile names the config file in a validation error and, when the error
// starts with a key the file sets ("limits.max_conns -1: ..."), its line.
func (s serveSource) inFile(err error) error {
	if s.path == "" {
		return err
	}
	if line := keyLine(s.path, err.Error()); line > 0 {
		return fmt.Errorf("config %s:%d: %w", s.path, line, err)
	}
	return fmt.Errorf("config %s: %w", s.path, err)
}

// serveKeyNames maps the words pptp's validation errors start with to the
// file's keys where they differ.
var serveKeyNames = map[string]string{"log level": "log_level", "local IP": "local_ip", "split route": "split_routes"}

// keyLine returns the line of the config file at path that sets the key
// msg starts with, or 0.
func keyLine(path, msg string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil {
		return 0
	}
	lines := map[string]int{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := prefix + n.Content[i].Value
				lines[k] = n.Content[i].Line
				walk(n.Content[i+1], k+".")
			}
		}
	}
	walk(&root, "")
	best, line := "", 0
	for k, l := range lines {
		if strings.HasPrefix(msg, k+" ") && len(k) > len(best) {
			best, line = k, l
		}
	}
	for word, k := range serveKeyNames {
		if strings.HasPrefix(msg, word+" ") && len(word) > len(best) && lines[k] > 0 {
			best, line = word, lines[k]
		}
	}
	return line
}

// serveReloader runs the server's reloads, one at a time.
type serveReloader struct {
	src        serveSource
	log        *slog.Logger
	level      *slog.LevelVar
	counters   *metrics.Counters
	admin, tun string // fixed while running
	srv        *pptp.Server
	// Fixed while running too: the /metrics listener and the admin
	// socket's group are set up once at start.
	metrics, adminGroup string

	mu sync.Mutex
}

// Collect makes the reloader a metrics.Source (reloads_total).
func (r *serveReloader) Collect(emit func(metrics.Sample)) { r.counters.Collect(emit) }

func (r *serveReloader) reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	return recordReload(r.counters, r.log, trigger, start, r.reloadLocked())
}

func (r *serveReloader) reloadLocked() error {
	sc, cfg, err := r.src.load()
	if err != nil {
		return err
	}
	var fixed []error
	if sc.AdminSocket != r.admin {
		fixed = append(fixed, fmt.Errorf("admin_socket: cannot change while running (%q now, %q in the new configuration)", r.admin, sc.AdminSocket))
	}
	if sc.TUN != r.tun {
		fixed = append(fixed, fmt.Errorf("tun: cannot change while running (%q now, %q in the new configuration)", r.tun, sc.TUN))
	}
	if sc.Metrics != r.metrics {
		fixed = append(fixed, fmt.Errorf("metrics: cannot change while running (%q now, %q in the new configuration)", r.metrics, sc.Metrics))
	}
	if sc.AdminGroup != r.adminGroup {
		fixed = append(fixed, fmt.Errorf("admin_group: cannot change while running (%q now, %q in the new configuration)", r.adminGroup, sc.AdminGroup))
	}
	if len(fixed) > 0 {
		return r.src.inFile(errors.Join(fixed...))
	}
	if err := r.srv.Reload(cfg); err != nil {
		return err
	}
	l, _ := sc.Level() // checked by load
	r.level.Set(l)
	return nil
}

// run reloads on every SIGHUP until ctx ends.
func (r *serveReloader) run(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = r.reload("SIGHUP")
		}
	}
}
