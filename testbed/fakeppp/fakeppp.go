// Package fakeppp is a stand-in for pppd on the far ends of a PPTP call. It
// speaks RFC 1662 async HDLC on a pty (or any byte stream) without running
// PPP: the server side echoes every frame back; the client side sends frames
// tagged with its own identity and checks that what comes back is its own.
//
// Test frame (inside HDLC framing, looks like PPP-in-HDLC carrying IPv4 so
// that the PPTP peers forward it untouched):
//
//	FF 03 00 21 | 'P' 'G' 'T' 'B' | tagLen(1) | tag | seq (4, big endian) | padding
package fakeppp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"pptpgw/pptp/hdlc"
)

var (
	pppHeader = []byte{0xFF, 0x03, 0x00, 0x21}
	magic     = []byte("PGTB")
)

// HelloTag is the tag of the frame the server sends first.
const HelloTag = "hello"

// MakeFrame builds a test frame (without HDLC framing).
func MakeFrame(tag string, seq uint32, pad int) []byte {
	if len(tag) > 255 {
		tag = tag[:255]
	}
	b := make([]byte, 0, len(pppHeader)+len(magic)+1+len(tag)+4+pad)
	b = append(b, pppHeader...)
	b = append(b, magic...)
	b = append(b, byte(len(tag)))
	b = append(b, tag...)
	b = binary.BigEndian.AppendUint32(b, seq)
	for i := 0; i < pad; i++ {
		b = append(b, byte(seq)+byte(i)) // includes bytes that need escaping
	}
	return b
}

// ParseFrame returns the tag and sequence number of a test frame.
func ParseFrame(f []byte) (tag string, seq uint32, ok bool) {
	h := len(pppHeader) + len(magic)
	if len(f) < h+1 || !bytes.Equal(f[:len(pppHeader)], pppHeader) || !bytes.Equal(f[len(pppHeader):h], magic) {
		return "", 0, false
	}
	n := int(f[h])
	if len(f) < h+1+n+4 {
		return "", 0, false
	}
	return string(f[h+1 : h+1+n]), binary.BigEndian.Uint32(f[h+1+n:]), true
}

// Echo is the server mode: it sends one hello frame first (pptpd expects the
// "pppd" side to speak first), then writes every good HDLC frame it reads
// back unchanged, until rw fails, ctx ends or maxDur passes (0: no limit).
// It returns the number of frames echoed.
func Echo(ctx context.Context, rw io.ReadWriter, maxDur time.Duration) (int, error) {
	if maxDur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxDur)
		defer cancel()
	}
	enc := hdlc.NewEncoder()
	if _, err := rw.Write(enc.Append(nil, MakeFrame(HelloTag, 0, 0))); err != nil {
		return 0, err
	}
	var dec hdlc.Decoder
	n := 0
	buf := make([]byte, 65536)
	out := make([]byte, 0, 8192)
	type rd struct {
		n   int
		err error
	}
	for {
		rc := make(chan rd, 1)
		go func() { n, err := rw.Read(buf); rc <- rd{n, err} }()
		var r rd
		select {
		case r = <-rc:
		case <-ctx.Done():
			return n, ctx.Err()
		}
		if r.n > 0 {
			out = out[:0]
			dec.FeedFunc(buf[:r.n], func(f []byte) {
				out = enc.Append(out, f)
				n++
			})
			if len(out) > 0 {
				if _, err := rw.Write(out); err != nil {
					return n, err
				}
			}
		}
		if r.err != nil {
			if errors.Is(r.err, io.EOF) {
				return n, nil
			}
			return n, r.err
		}
	}
}

// ClientConfig configures the client mode.
type ClientConfig struct {
	Tag     string        // identity carried in every frame
	Frames  int           // distinct frames that must come back
	Window  int           // frames in flight (default 4)
	Pad     int           // padding bytes per frame (default 32)
	Timeout time.Duration // overall bound (default 5s)
	Resend  time.Duration // resend unanswered frames after this long without progress (default 250ms)
}

// Summary is what the client saw; it is printed as JSON by the fakeppp program.
type Summary struct {
	Tag      string  `json:"tag"`
	Want     int     `json:"want"`
	Sent     int     `json:"sent"`    // frames written, including resends
	Good     int     `json:"good"`    // distinct own frames echoed back
	Dup      int     `json:"dup"`     // own frames echoed more than once
	Foreign  int     `json:"foreign"` // test frames carrying another tag: cross-talk
	Hello    int     `json:"hello"`   // server hello frames
	Other    int     `json:"other"`   // frames that are not test frames
	BadFCS   uint64  `json:"bad_fcs"` // HDLC frames dropped for a bad FCS
	Seconds  float64 `json:"seconds"`
	Error    string  `json:"error,omitempty"`
	Complete bool    `json:"complete"` // Good == Want
}

// OK reports a complete run without cross-talk or corruption.
func (s Summary) OK() bool { return s.Complete && s.Foreign == 0 && s.BadFCS == 0 && s.Other == 0 }

// JSON returns the summary as one line of JSON.
func (s Summary) JSON() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Client runs the client mode over rw: it keeps up to Window frames in
// flight, resends unanswered ones when nothing arrives for Resend (the first
// frames can be lost while the call is being set up), and stops when all
// Frames came back, ctx ends or Timeout passes. It closes nothing.
func Client(ctx context.Context, rw io.ReadWriter, cfg ClientConfig) Summary {
	if cfg.Window <= 0 {
		cfg.Window = 4
	}
	if cfg.Pad == 0 {
		cfg.Pad = 32
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Resend <= 0 {
		cfg.Resend = 250 * time.Millisecond
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	s := Summary{Tag: cfg.Tag, Want: cfg.Frames}
	var mu sync.Mutex
	got := make(map[uint32]bool, cfg.Frames)
	progress := make(chan struct{}, 1)
	readDone := make(chan error, 1)
	var dec hdlc.Decoder
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := rw.Read(buf)
			mu.Lock()
			dec.FeedFunc(buf[:n], func(f []byte) {
				tag, seq, ok := ParseFrame(f)
				switch {
				case !ok:
					s.Other++
				case tag == HelloTag:
					s.Hello++
				case tag != cfg.Tag:
					s.Foreign++
				case seq >= uint32(cfg.Frames):
					s.Foreign++
				case got[seq]:
					s.Dup++
				default:
					got[seq] = true
					s.Good++
				}
			})
			s.BadFCS = dec.Stats().BadFCS
			mu.Unlock()
			if n > 0 {
				select {
				case progress <- struct{}{}:
				default:
				}
			}
			if err != nil {
				readDone <- err
				return
			}
		}
	}()

	enc := hdlc.NewEncoder()
	var wbuf []byte
	send := func(seq uint32) error {
		wbuf = enc.Append(wbuf[:0], MakeFrame(cfg.Tag, seq, cfg.Pad))
		_, err := rw.Write(wbuf)
		mu.Lock()
		s.Sent++
		mu.Unlock()
		return err
	}
	next := uint32(0)
	var err error
loop:
	for {
		mu.Lock()
		good := s.Good
		// Outstanding: sent (< next) but not yet echoed.
		var pending []uint32
		for q := uint32(0); q < next; q++ {
			if !got[q] {
				pending = append(pending, q)
			}
		}
		mu.Unlock()
		if good >= cfg.Frames {
			break
		}
		for len(pending) < cfg.Window && next < uint32(cfg.Frames) {
			if err = send(next); err != nil {
				break loop
			}
			pending = append(pending, next)
			next++
		}
		t := time.NewTimer(cfg.Resend)
		select {
		case <-progress:
			t.Stop()
		case <-t.C:
			for _, q := range pending {
				if err = send(q); err != nil {
					break loop
				}
			}
		case err = <-readDone:
			t.Stop()
			break loop
		case <-ctx.Done():
			t.Stop()
			err = ctx.Err()
			break loop
		}
	}
	// Give late echoes (and any cross-talk) a moment to show up.
	if err == nil {
		select {
		case <-time.After(100 * time.Millisecond):
		case err = <-readDone:
		}
	}
	mu.Lock()
	defer mu.Unlock()
	s.Seconds = time.Since(start).Seconds()
	s.Complete = s.Good == cfg.Frames
	if err != nil && !s.Complete {
		s.Error = err.Error()
	}
	return s
}
