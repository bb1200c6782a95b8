package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Entry
		err  string
	}{
		{"empty", "", nil, ""},
		{"comments and blanks", "# c\n\n   \t# x\n", nil, ""},
		{"pptpd style", "alice pptpd secret *\n", []Entry{{Client: "alice", Server: "pptpd", Secret: "secret", IPs: []string{"*"}, Line: 1}}, ""},
		{"three words no addresses", "bob * pw", []Entry{{Client: "bob", Server: "*", Secret: "pw", IPs: []string{}, Line: 1}}, ""},
		{"dash means none", "bob * pw -\n", []Entry{{Client: "bob", Server: "*", Secret: "pw", IPs: []string{}, Line: 1}}, ""},
		{"addresses", "c s p 10.0.0.5 10.1.0.0/24 !10.1.0.7\n", []Entry{{Client: "c", Server: "s", Secret: "p", IPs: []string{"10.0.0.5", "10.1.0.0/24", "!10.1.0.7"}, Line: 1}}, ""},
		{"double quotes with space and hash", `"al ice" * "two words # not a comment" 10.0.0.1 # comment`,
			[]Entry{{Client: "al ice", Server: "*", Secret: "two words # not a comment", IPs: []string{"10.0.0.1"}, Line: 1}}, ""},
		{"single quotes", `u * 'a "b" c'`, []Entry{{Client: "u", Server: "*", Secret: `a "b" c`, IPs: []string{}, Line: 1}}, ""},
		{"empty secret", `u * "" *`, []Entry{{Client: "u", Server: "*", Secret: "", IPs: []string{"*"}, Line: 1}}, ""},
		{"escapes", `u * a\ b\\c\"d\x41\101\s\t *`, []Entry{{Client: "u", Server: "*", Secret: "a b\\c\"dAA \t", IPs: []string{"*"}, Line: 1}}, ""},
		{"crlf", "u\t*\tp\t*\r\nv * q *\r\n", []Entry{
			{Client: "u", Server: "*", Secret: "p", IPs: []string{"*"}, Line: 1},
			{Client: "v", Server: "*", Secret: "q", IPs: []string{"*"}, Line: 2}}, ""},
		{"continuation", "u * \\\n  p \\\n  10.0.0.1\nv * q\n", []Entry{
			{Client: "u", Server: "*", Secret: "p", IPs: []string{"10.0.0.1"}, Line: 1},
			{Client: "v", Server: "*", Secret: "q", IPs: []string{}, Line: 4}}, ""},
		{"options after --", "u * p 10.0.0.1 -- mtu 1400\n", []Entry{{Client: "u", Server: "*", Secret: "p", IPs: []string{"10.0.0.1"}, Options: []string{"mtu", "1400"}, Line: 1}}, ""},
		{"line numbers", "# head\n\nu * p\n", []Entry{{Client: "u", Server: "*", Secret: "p", IPs: []string{}, Line: 3}}, ""},
		{"too few words", "u *\n", nil, "line 1: want client, server and secret, got 2 word(s)"},
		{"unterminated quote", "u * \"abc\nv * q\n", nil, "line 1: unterminated quoted string"},
		{"dash not alone", "u * p - 10.0.0.1\n", nil, `line 1: "-" (no addresses) must be the only address word`},
		{"secret from file", "u * @/etc/x\n", nil, "line 1: secrets read from a file (@path) are not supported"},
		{"bad hex escape", `u * \xZZ`, nil, `line 1: \x without hex digits`},
		{"trailing backslash", `u * p\`, nil, "line 1: backslash at end of file"},
		{"error on later line", "a * p\n\nb *\n", nil, "line 3: want client, server and secret, got 2 word(s)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.in))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Entries, tc.want) {
				t.Fatalf("got  %#v\nwant %#v", s.Entries, tc.want)
			}
		})
	}
}

func TestLookupPrecedence(t *testing.T) {
	s, err := Parse([]byte(`
* * any-any
alice * alice-any 10.0.0.1
* pptpd any-pptpd
alice pptpd alice-pptpd 10.0.0.2
alice pptpd alice-pptpd-second
bob other bob-other
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		client, server, want string
		ips                  []string
	}{
		{"alice", "pptpd", "alice-pptpd", []string{"10.0.0.2"}},
		{"alice", "gw", "alice-any", []string{"10.0.0.1"}},
		{"carol", "pptpd", "any-pptpd", []string{}},
		{"carol", "gw", "any-any", []string{}},
		{"bob", "pptpd", "any-pptpd", []string{}},
		{"bob", "other", "bob-other", []string{}},
	}
	for _, tc := range tests {
		sec, ips, ok := s.Lookup(tc.client, tc.server)
		if !ok || sec != tc.want || !reflect.DeepEqual(ips, tc.ips) {
			t.Errorf("Lookup(%q,%q) = %q %v %v, want %q %v", tc.client, tc.server, sec, ips, ok, tc.want, tc.ips)
		}
	}
	// A nameless server ("*" or "") accepts any server column; the client
	// must still match.
	for _, srv := range []string{"*", ""} {
		if sec, _, ok := s.Lookup("bob", srv); !ok || sec != "bob-other" {
			t.Errorf("Lookup(bob, %q) = %q %v", srv, sec, ok)
		}
		if sec, _, ok := s.Lookup("alice", srv); !ok || sec != "alice-any" {
			t.Errorf("Lookup(alice, %q) = %q %v, want the first alice entry", srv, sec, ok)
		}
	}
	s2, _ := Parse([]byte("alice pptpd pw\n"))
	if _, _, ok := s2.Lookup("bob", "pptpd"); ok {
		t.Error("unknown client matched")
	}
	if _, _, ok := s2.Lookup("alice", "other"); ok {
		t.Error("wrong server matched")
	}
	if _, _, ok := s2.Lookup("Alice", "pptpd"); ok {
		t.Error("client names are case sensitive")
	}
}

func write(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "chap-secrets")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // explicit: WriteFile obeys the umask
		t.Fatal(err)
	}
	return p
}

func TestLoadPermissions(t *testing.T) {
	const content = "alice * s3cret *\n"
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640} {
		p := write(t, content, mode)
		s, err := Load(p)
		if err != nil {
			t.Fatalf("mode %o: %v", mode, err)
		}
		if sec, _, ok := s.Lookup("alice", "pptpd"); !ok || sec != "s3cret" {
			t.Fatalf("mode %o: lookup %q %v", mode, sec, ok)
		}
	}
	for _, mode := range []os.FileMode{0o644, 0o604, 0o666} {
		p := write(t, content, mode)
		_, err := Load(p)
		if !errors.Is(err, ErrWorldReadable) {
			t.Fatalf("mode %o: err = %v, want ErrWorldReadable", mode, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, p) || !strings.Contains(msg, "chmod 600 "+p) {
			t.Fatalf("error must name the file and the fix: %q", msg)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	p := write(t, "u *\n", 0o600)
	_, err := Load(p)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 1 || !strings.Contains(err.Error(), p) {
		t.Errorf("parse error: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("alice pptpd \"two words\" 10.0.0.5 # c\n* * x *\n")
	f.Add("u * 'a\\x41' - \\\n")
	f.Add("u * p 1 -- a b\r\n")
	f.Add("\"")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse([]byte(in))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		lines := strings.Count(in, "\n") + 1
		for _, e := range s.Entries {
			if e.Line < 1 || e.Line > lines {
				t.Fatalf("entry line %d outside 1..%d", e.Line, lines)
			}
			for _, ip := range e.IPs {
				if ip == "-" && len(e.IPs) == 1 {
					t.Fatal(`"-" must be turned into an empty list`)
				}
			}
			// Every entry must be found by its own exact names (possibly
			// shadowed by an earlier entry with the same names).
			got, ok := s.Find(e.Client, e.Server)
			if !ok || got.Client != e.Client && !Wildcard(got.Client) {
				t.Fatalf("entry %+v not found", e)
			}
		}
	})
}
