// Package secrets reads pppd's chap-secrets format, so existing
// /etc/ppp/chap-secrets files (as used with pptpd) work unchanged.
//
// Format, one entry per line (pppd(8) "AUTHENTICATION"):
//
//	# client    server   secret            IP addresses
//	alice       pptpd    "two words"       10.0.0.5
//	bob         *        s3cret            *
//	carol       *        'x#y'             -
//
// Words are separated by blanks; '#' starts a comment outside quotes; a word
// may be quoted with " or ' to contain blanks or '#'; a backslash escapes the
// next character (\n \t \r \s \\ \" \' \ooo \xHH as in pppd), and a backslash
// at the end of a line continues the entry on the next one. '*' as client or
// server matches any name. The words after the secret list the addresses
// the peer may use: none, or "-", means no address is allowed, "*" any
// (pppd semantics; they are returned as written). A "--" word ends the
// address list; the words after it are kept as Options.
//
// It owns the file format and the lookup by client and server name. It must
// not know about PPP, sessions or the address pool (pptp decides what a
// listed address means).
package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxFileSize bounds what Load reads.
const MaxFileSize = 16 << 20

// ErrWorldReadable is wrapped by Load's error for a file others can read.
var ErrWorldReadable = errors.New("secrets file is world-readable")

// Entry is one line of the file.
type Entry struct {
	Client, Server, Secret string
	IPs                    []string // as written; empty for none or "-"
	Options                []string // words after "--"
	Line                   int      // 1-based line where the entry starts
}

// Wildcard reports whether w is the '*' wildcard.
func Wildcard(w string) bool { return w == "*" }

// Secrets is a parsed file. It is immutable after Load/Parse.
type Secrets struct {
	Entries []Entry
}

// ParseError locates a syntax error.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Load reads and parses path. It refuses a file that is readable by others
// (mode o+r): the secrets are clear-text passwords.
func Load(path string) (*Secrets, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o004 != 0 {
		return nil, fmt.Errorf("secrets: %s: %w (mode %04o); restrict it with: chmod 600 %s",
			path, ErrWorldReadable, perm, path)
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("secrets: %s is larger than %d bytes", path, MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("secrets: %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("secrets: %s is larger than %d bytes", path, MaxFileSize)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("secrets: %s: %w", path, err)
	}
	return s, nil
}

// Parse parses the contents of a chap-secrets file.
func Parse(data []byte) (*Secrets, error) {
	lx := lexer{data: data, line: 1}
	s := &Secrets{}
	for {
		words, line, err := lx.entry()
		if err != nil {
			return nil, err
		}
		if words == nil {
			return s, nil
		}
		if len(words) == 0 {
			continue
		}
		if len(words) < 3 {
			return nil, &ParseError{line, fmt.Sprintf("want client, server and secret, got %d word(s)", len(words))}
		}
		e := Entry{Client: words[0], Server: words[1], Secret: words[2], Line: line}
		if strings.HasPrefix(e.Secret, "@") {
			return nil, &ParseError{line, "secrets read from a file (@path) are not supported"}
		}
		rest := words[3:]
		for i, w := range rest {
			if w == "--" {
				e.Options = append([]string(nil), rest[i+1:]...)
				rest = rest[:i]
				break
			}
		}
		if len(rest) > 0 && rest[0] == "-" {
			rest = rest[1:]
			if len(rest) > 0 {
				return nil, &ParseError{line, `"-" (no addresses) must be the only address word`}
			}
		}
		e.IPs = append(make([]string, 0, len(rest)), rest...)
		s.Entries = append(s.Entries, e)
	}
}

// Lookup finds the secret of client when authenticated by server. An entry
// naming both exactly wins over one naming the client exactly, which wins
// over one naming the server exactly, which wins over "* *"; among equals
// the first in the file wins. An empty secret is a valid secret (pppd allows
// it); ok reports whether an entry matched.
func (s *Secrets) Lookup(client, server string) (secret string, ips []string, ok bool) {
	e, ok := s.Find(client, server)
	if !ok {
		return "", nil, false
	}
	return e.Secret, e.IPs, true
}

// Find is Lookup returning the whole entry.
func (s *Secrets) Find(client, server string) (Entry, bool) {
	anyServer := server == "" || Wildcard(server)
	best, bestScore := -1, -1
	for i, e := range s.Entries {
		score := 0
		switch {
		case e.Client == client:
			score += 2
		case Wildcard(e.Client):
		default:
			continue
		}
		switch {
		case anyServer:
		case e.Server == server:
			score++
		case Wildcard(e.Server):
		default:
			continue
		}
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return Entry{}, false
	}
	return s.Entries[best], true
}

// Len is the number of entries.
func (s *Secrets) Len() int { return len(s.Entries) }

// lexer splits the file into entries of words.
type lexer struct {
	data []byte
	pos  int
	line int
}

// entry returns the words of the next entry (nil at EOF, empty for a blank
// or comment-only line) and the line it starts on.
func (lx *lexer) entry() ([]string, int, error) {
	if lx.pos >= len(lx.data) {
		return nil, lx.line, nil
	}
	start := lx.line
	words := []string{}
	for {
		// skip blanks
		for lx.pos < len(lx.data) && (lx.data[lx.pos] == ' ' || lx.data[lx.pos] == '\t' || lx.data[lx.pos] == '\r') {
			lx.pos++
		}
		if lx.pos >= len(lx.data) {
			return words, start, nil
		}
		c := lx.data[lx.pos]
		switch {
		case c == '\n':
			lx.pos++
			lx.line++
			return words, start, nil
		case c == '#':
			i := bytes.IndexByte(lx.data[lx.pos:], '\n')
			if i < 0 {
				lx.pos = len(lx.data)
			} else {
				lx.pos += i
			}
			continue
		case c == '\\' && lx.pos+1 < len(lx.data) && lx.data[lx.pos+1] == '\n':
			lx.pos += 2 // continuation between words
			lx.line++
			continue
		}
		w, err := lx.word()
		if err != nil {
			return nil, start, err
		}
		words = append(words, w)
	}
}

// word reads one word starting at a non-blank character.
func (lx *lexer) word() (string, error) {
	var b strings.Builder
	var quote byte
	startLine := lx.line
	for lx.pos < len(lx.data) {
		c := lx.data[lx.pos]
		if quote != 0 {
			switch c {
			case quote:
				quote = 0
				lx.pos++
				continue
			case '\n':
				return "", &ParseError{startLine, "unterminated quoted string"}
			case '\\':
				if err := lx.escape(&b); err != nil {
					return "", err
				}
				continue
			}
			b.WriteByte(c)
			lx.pos++
			continue
		}
		switch c {
		case ' ', '\t', '\r', '\n', '#':
			return b.String(), nil
		case '"', '\'':
			quote = c
			lx.pos++
			continue
		case '\\':
			if err := lx.escape(&b); err != nil {
				return "", err
			}
			continue
		}
		b.WriteByte(c)
		lx.pos++
	}
	if quote != 0 {
		return "", &ParseError{startLine, "unterminated quoted string"}
	}
	return b.String(), nil
}

// escape handles a backslash at lx.pos.
func (lx *lexer) escape(b *strings.Builder) error {
	lx.pos++ // the backslash
	if lx.pos >= len(lx.data) {
		return &ParseError{lx.line, "backslash at end of file"}
	}
	c := lx.data[lx.pos]
	lx.pos++
	switch c {
	case '\n':
		lx.line++ // continuation inside a word
	case 'a':
		b.WriteByte('\a')
	case 'b':
		b.WriteByte('\b')
	case 'f':
		b.WriteByte('\f')
	case 'n':
		b.WriteByte('\n')
	case 'r':
		b.WriteByte('\r')
	case 's':
		b.WriteByte(' ')
	case 't':
		b.WriteByte('\t')
	case 'v':
		b.WriteByte('\v')
	case 'x':
		v, n := 0, 0
		for n < 2 && lx.pos < len(lx.data) && isHex(lx.data[lx.pos]) {
			v = v*16 + hexVal(lx.data[lx.pos])
			lx.pos++
			n++
		}
		if n == 0 {
			return &ParseError{lx.line, `\x without hex digits`}
		}
		b.WriteByte(byte(v))
	case '0', '1', '2', '3', '4', '5', '6', '7':
		v, n := int(c-'0'), 1
		for n < 3 && lx.pos < len(lx.data) && lx.data[lx.pos] >= '0' && lx.data[lx.pos] <= '7' {
			v = v*8 + int(lx.data[lx.pos]-'0')
			lx.pos++
			n++
		}
		if v > 0xFF {
			return &ParseError{lx.line, "octal escape out of range"}
		}
		b.WriteByte(byte(v))
	default:
		b.WriteByte(c) // \\ \" \' \# and any other character stand for themselves
	}
	return nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}
