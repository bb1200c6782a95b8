package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
)

// Every sample, back to back in one stream and delivered a byte at a time,
// comes out of ReadMessage whole and in order, through one reused buffer;
// then the stream's end is io.EOF.
func TestReadMessageStream(t *testing.T) {
	var stream []byte
	for _, m := range samples() {
		stream = m.Append(stream)
	}
	r := iotest.OneByteReader(bytes.NewReader(stream))
	buf := make([]byte, MaxMsgLen)
	var got []Message
	for {
		m, err := ReadMessage(r, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		got = append(got, m)
	}
	if want := samples(); !reflect.DeepEqual(got, want) {
		t.Fatalf("read %d messages:\n%+v\nwant %d:\n%+v", len(got), got, len(want), want)
	}
}

func TestReadMessageErrors(t *testing.T) {
	ok := (&OCRQ{CallID: 7}).Append(nil)
	badMagic := bytes.Clone(ok)
	badMagic[MagicOffset] ^= 0xFF
	for _, tc := range []struct {
		name   string
		stream []byte
		bufLen int
		want   error
	}{
		{"empty", nil, MaxMsgLen, io.EOF},
		{"inside the header", ok[:5], MaxMsgLen, io.ErrUnexpectedEOF},
		{"after the header", ok[:HeaderLen], MaxMsgLen, io.EOF},
		{"inside the body", ok[:HeaderLen+3], MaxMsgLen, io.ErrUnexpectedEOF},
		{"bad magic", badMagic, MaxMsgLen, ErrBadMagic},
		{"buffer too small", ok, len(ok) - 1, ErrBadLength},
	} {
		_, err := ReadMessage(bytes.NewReader(tc.stream), make([]byte, tc.bufLen))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
