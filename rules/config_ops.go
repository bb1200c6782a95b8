package rules

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Operations (issue 8): the state file, and which settings a live reload
// can change.

// DefaultStateFile is where `pptpgw run` saves its call table (state_file).
const DefaultStateFile = "/var/lib/pptpgw/state.json"

// validateOps checks the keys of issue 8; bad reports one (file/line/key).
func (c *Config) validateOps(bad func(field, format string, a ...any)) {
	switch {
	case c.StateFile == "":
	case !filepath.IsAbs(c.StateFile):
		bad("state_file", "%q must be an absolute path (or \"\" to keep no state)", c.StateFile)
	case strings.HasSuffix(c.StateFile, "/"):
		bad("state_file", "%q is a directory; name the file", c.StateFile)
	}
}

// FixedKeys are the settings a running gateway cannot change: it is bound
// to its queue (queue, queue_len), owns its table by name (table), listens
// on its admin socket (admin_socket) and translates every tracked call to
// the WAN's address (wan, public_address). A reload that changes one of
// them is refused; they take a restart, which keeps the calls (state_file)
// when table, queue, wan and public_address stay the same.
// The uplinks (issue 10) are the WAN's kind: the engine's uplink table,
// its pin writer and the followers of each uplink are set up at start, so
// their interfaces and public addresses are fixed (their via and table
// are routing's, applied live).
var FixedKeys = []string{"table", "queue", "queue_len", "wan", "public_address", "admin_socket", "uplinks"}

// fixedUplinks is the part of the uplinks a reload cannot change: each
// one's interface and public address ("" with a single WAN).
func (c *Config) fixedUplinks() string {
	if len(c.Uplinks) < 2 {
		return ""
	}
	var b strings.Builder
	for i, u := range c.Uplinks {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(u.Interface)
		if u.PublicAddress != "" {
			b.WriteString(" " + u.PublicAddress)
		}
	}
	return b.String()
}

// FixedChanges returns an error naming every fixed key (FixedKeys) whose
// value differs between c (running) and next, each as a *FieldError with
// next's file and line; nil if there is none.
func (c *Config) FixedChanges(next *Config) error {
	val := func(x *Config) map[string]string {
		return map[string]string{
			"table": x.Table, "queue": strconv.Itoa(int(x.Queue)), "queue_len": strconv.Itoa(int(x.QueueLen)),
			"wan": x.WAN, "public_address": x.PublicAddress, "admin_socket": x.AdminSocket,
			"uplinks": x.fixedUplinks(),
		}
	}
	a, b := val(c), val(next)
	var errs []error
	for _, k := range FixedKeys {
		if a[k] != b[k] {
			fe := &FieldError{Field: k, Msg: fmt.Sprintf("cannot change while running (%q now, %q in the new configuration): restart to apply it", a[k], b[k])}
			if next.lines[k] > 0 {
				fe.File, fe.Line = next.file, next.lines[k]
			}
			errs = append(errs, fe)
		}
	}
	return errors.Join(errs...)
}

// StateOwner says which gateway a saved call table belongs to: a restart
// restores it only when these are the same (see CONFIG.md, state_file).
func (c *Config) StateOwner() map[string]string {
	return map[string]string{
		"table": c.Table, "queue": strconv.Itoa(int(c.Queue)), "wan": c.WAN, "public_address": c.PublicAddress,
	}
}
