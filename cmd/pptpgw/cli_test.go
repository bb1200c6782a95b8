package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"pptpgw/nat"
)

// The test binary doubles as pptpgw: with this variable set, TestMain runs
// main() instead of the tests, so CLI behaviour (exit codes, messages) is
// tested on the real entry point without a separate build.
const envRunMain = "PPTPGW_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// pptpgw runs the binary with args (optionally through a wrapper such as
// `unshare -n`) and returns its combined output and exit code.
func pptpgw(t *testing.T, wrap []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append(append(append([]string{}, wrap...), os.Args[0]), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return string(out), code
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the gateway in a private network namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1) from util-linux")
	}
}

func TestCLIUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Commands:"},
		{[]string{"help"}, 0, "Commands:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"run", "--help"}, 0, "Usage: pptpgw run --wan IFACE --lan IFACE"},
		{[]string{"calls", "--help"}, 0, "Usage: pptpgw calls"},
		{[]string{"demo", "--help"}, 0, "Usage: pptpgw demo"},
		{[]string{"bench", "--help"}, 0, "Usage: pptpgw bench"},
		{[]string{"bench", "--only", "tunnel,nope"}, 2, `unknown case "nope" (cases: clients, multicall, split, greburst, grepps, grebw, memory, tunnel, setups, bulk)`},
		{[]string{"run", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"run", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"run"}, 2, "wan"},
		{[]string{"version"}, 0, "pptpgw "},
	} {
		out, code := pptpgw(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("pptpgw %v: exit %d, output:\n%s\nwant exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

func TestRunBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte("wan: eth0\nlan: [eth1]\ntimeouts:\n  gre_unrepleid: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := pptpgw(t, nil, "run", "--config", cfg)
	if code != 2 || !strings.Contains(out, "line 4") || !strings.Contains(out, "gre_unrepleid") {
		t.Errorf("typo in config: exit %d, output:\n%s\nwant exit 2 naming line 4 and the key", code, out)
	}
	out, code = pptpgw(t, nil, "run", "--config", filepath.Join(dir, "missing.yaml"))
	if code != 2 || !strings.Contains(out, "missing.yaml") {
		t.Errorf("missing config: exit %d, output:\n%s", code, out)
	}
}

func TestRunUnknownInterface(t *testing.T) {
	requireRoot(t)
	// A private, empty network namespace: even a bug that got past the
	// interface check could not touch the host's rules.
	out, code := pptpgw(t, []string{"unshare", "-n"}, "run", "--wan", "pgnope0", "--lan", "lo",
		"--admin-socket", filepath.Join(t.TempDir(), "a.sock"))
	if code != 1 || !strings.Contains(out, "pgnope0") {
		t.Errorf("unknown WAN: exit %d, output:\n%s\nwant exit 1 naming the interface", code, out)
	}
}

// asNobody returns a copy of the test binary in a fresh directory that the
// unprivileged user can read (the test binary's own may not be), and that
// directory; the caller runs it with credentials 65534.
func asNobody(t *testing.T) (bin, dir string) {
	t.Helper()
	requireRoot(t) // root is needed to drop to another user
	dir, err := os.MkdirTemp("", "pptpgw-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin = filepath.Join(dir, "pptpgw")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

func TestRunNotRoot(t *testing.T) {
	bin, _ := asNobody(t)
	cmd := exec.Command(bin, "run", "--wan", "lo", "--lan", "lo2")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "needs root") {
		t.Errorf("as nobody: %v, output:\n%s\nwant exit 1 and 'needs root'", err, out)
	}
}

func TestCallsNoDaemon(t *testing.T) {
	out, code := pptpgw(t, nil, "calls", "--admin-socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(out, "no pptpgw run answers") {
		t.Errorf("calls without daemon: exit %d, output:\n%s", code, out)
	}
}

// The daemon starts in a private namespace with no config file, answers
// `calls --json` over its admin socket, reloads its configuration on SIGHUP, and on
// SIGTERM exits with status 0, reducing its table to the fail-safe rule.
func TestRunLifecycle(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft(8) to inspect the ruleset")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	script := `set -e
ip link set lo up
ip link add pgw0 type veth peer name pgw1; ip link set pgw0 up; ip addr add 203.0.113.1/24 dev pgw0
ip link add pgl0 type veth peer name pgl1; ip link set pgl0 up; ip addr add 10.99.0.1/24 dev pgl0
"$0" run --wan pgw0 --lan pgl0 --admin-socket "$1" --state-file "$1.state" 2>"$2" &
pid=$!
for i in $(seq 100); do grep -q 'msg=ready' "$2" && break; sleep 0.05; done
grep -q 'msg=ready' "$2"
"$0" calls --json --admin-socket "$1" > "$3"
nft list table ip pptpgw > "$4"
kill -HUP $pid
for i in $(seq 100); do grep -q 'configuration reloaded' "$2" && break; sleep 0.05; done
kill -TERM $pid; wait $pid
echo "exit=$?" >> "$3"
nft list table ip pptpgw > "$5" 2>&1 || true
`
	logf := filepath.Join(dir, "log")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c", script, os.Args[0], sock, logf,
		filepath.Join(dir, "calls"), filepath.Join(dir, "rules"), filepath.Join(dir, "after"))
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logf)
		t.Fatalf("%v: %s\ndaemon log:\n%s", err, out, log)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	js, rest, _ := strings.Cut(string(calls), "\n")
	var r nat.CallsReply
	if err := json.Unmarshal([]byte(js), &r); err != nil || r.Calls == nil || r.Counters == nil {
		t.Errorf("calls --json = %q (%v), want {calls: [], counters: {...}}", js, err)
	}
	if !strings.Contains(rest, "exit=0") {
		t.Errorf("daemon exit after SIGTERM: %q, want exit=0", rest)
	}
	rules, _ := os.ReadFile(filepath.Join(dir, "rules"))
	for _, want := range []string{"notrack", `oifname "pgw0" masquerade`, "tcp dport 1723"} {
		if !strings.Contains(string(rules), want) {
			t.Errorf("installed ruleset lacks %q:\n%s", want, rules)
		}
	}
	after, _ := os.ReadFile(filepath.Join(dir, "after"))
	if !strings.Contains(string(after), "chain failsafe") ||
		!strings.Contains(string(after), `ip protocol gre oifname "pgw0" fib saddr type != local drop`) {
		t.Errorf("after SIGTERM the table is not the fail-safe rule:\n%s", after)
	}
	for _, gone := range []string{"queue", "masquerade", "notrack", "1723"} {
		if strings.Contains(string(after), gone) {
			t.Errorf("after SIGTERM the table still has %q:\n%s", gone, after)
		}
	}
	log, _ := os.ReadFile(logf)
	for _, want := range []string{`msg="configuration reloaded" trigger=SIGHUP`, "left the fail-safe nftables table", "nft delete table ip pptpgw"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("daemon log lacks %q:\n%s", want, log)
		}
	}
}

// With its stderr a pipe nobody reads any more (a log collector that went
// away), the daemon keeps running when it next logs (here: that it
// reloaded on SIGHUP) instead of dying of SIGPIPE, and still stops cleanly.
func TestRunSurvivesBrokenLogPipe(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	script := `set -e
ip link set lo up
ip link add pgw0 type veth peer name pgw1; ip link set pgw0 up; ip addr add 203.0.113.1/24 dev pgw0
ip link add pgl0 type veth peer name pgl1; ip link set pgl0 up; ip addr add 10.99.0.1/24 dev pgl0
mkfifo "$2"
sh -c 'exec <"$1"' reader "$2" &
reader=$!
"$0" run --wan pgw0 --lan pgl0 --admin-socket "$1" --state-file "$1.state" 2>"$2" &
pid=$!
wait $reader
for i in $(seq 100); do "$0" calls --json --admin-socket "$1" >/dev/null 2>&1 && break; sleep 0.05; done
"$0" calls --json --admin-socket "$1" >/dev/null
kill -HUP $pid
sleep 0.3
set +e
kill -0 $pid 2>/dev/null && echo "alive after SIGHUP" > "$3"
kill -TERM $pid; wait $pid
echo "exit=$?" >> "$3"
`
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := filepath.Join(dir, "result")
	cmd := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c", script, os.Args[0],
		filepath.Join(dir, "admin.sock"), filepath.Join(dir, "log"), res)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got, _ := os.ReadFile(res)
	if string(got) != "alive after SIGHUP\nexit=0\n" {
		t.Errorf("daemon with a broken log pipe: %q, want alive after SIGHUP and exit=0", got)
	}
}
