// Package testbedtest is what tests need around testbed and nothing else
// does: topologies that live as long as a test, a tool check that fails the
// test, and binaries of this module built once per test binary. Only tests
// import it, so package testing stays out of the pptpgw binary, which links
// testbed for `pptpgw demo` and `pptpgw bench`.
//
// testbed's own tests import it from package testbed_test (a test in
// package testbed could not: testbedtest imports testbed).
package testbedtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"pptpgw/internal/nstest"
	"pptpgw/testbed"
)

// New builds a topology for a test: it skips when not root, fails the test
// when a tool or the topology is missing, and removes everything when the
// test ends (even on failure); an error from that Close fails the test.
func New(tb testing.TB, cfg testbed.Config) *testbed.Topology {
	tb.Helper()
	nstest.RequireRoot(tb)
	NeedTools(tb, "ip", "nft")
	t, err := testbed.New(cfg)
	if err != nil {
		tb.Fatalf("testbed: %v", err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Errorf("testbed cleanup: %v", err)
		}
	})
	return t
}

// NeedTools fails tb (it does not skip: the testbed's tools are part of the
// test environment) if a tool is missing.
func NeedTools(tb testing.TB, tools ...string) {
	tb.Helper()
	if err := testbed.CheckTools(tools...); err != nil {
		tb.Fatal(err)
	}
}

// PPTPGW returns the path of a pptpgw binary built from this module
// (Build of pptpgw/cmd/pptpgw). It skips tb when not root: the binary is
// only of use in a topology.
func PPTPGW(tb testing.TB) string {
	tb.Helper()
	nstest.RequireRoot(tb)
	return Build(tb, "pptpgw/cmd/pptpgw")
}

// builds holds what Build made in this test binary; Main removes dir.
var builds struct {
	sync.Mutex
	main bool // Main is running the tests
	dir  string
	bins map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Build returns the path of the main package pkg of this module (an import
// path, e.g. "pptpgw/testbed/cmd/fakeppp") built with `go build`, once per
// test binary: later calls, from any test, get the same binary. A failed
// build fails tb. The package's TestMain must be Main, which removes the
// binaries when the tests are done.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	builds.Lock()
	if !builds.main {
		builds.Unlock()
		tb.Fatalf("testbedtest.Build(%s): the package's TestMain must call testbedtest.Main", pkg)
	}
	if builds.bins == nil {
		builds.bins = map[string]*build{}
	}
	b := builds.bins[pkg]
	if b == nil {
		b = &build{}
		builds.bins[pkg] = b
	}
	builds.Unlock()
	b.once.Do(func() { b.path, b.err = goBuild(pkg) })
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

func goBuild(pkg string) (string, error) {
	builds.Lock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "testbedtest-bin-")
		if err != nil {
			builds.Unlock()
			return "", err
		}
		builds.dir = dir
	}
	dir := builds.dir
	builds.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, path.Base(pkg))
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// Main runs the tests of a package that uses Build (call it from TestMain),
// removes the binaries built, and exits with the tests' status.
func Main(m *testing.M) {
	builds.Lock()
	builds.main = true
	builds.Unlock()
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

// Counter returns the counter key of a `pptpgw calls --json` or `pptpgw
// sessions --json` reply and fails the test if the reply has no such key: a
// missing key would read as 0 and let "counter == 0" pass for a counter that
// was renamed or never exported.
func Counter(tb testing.TB, counters map[string]uint64, key string) uint64 {
	tb.Helper()
	v, ok := counters[key]
	if !ok {
		tb.Fatalf("counter %q missing from the reply (%d keys)", key, len(counters))
	}
	return v
}
