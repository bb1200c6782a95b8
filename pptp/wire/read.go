package wire

import "io"

// ReadMessage reads exactly one control message from a stream (the TCP
// control connection) into buf, which must hold MaxMsgLen bytes, and
// decodes it. The message does not refer to buf, so buf can be reused for
// the next one. A stream that ends early gives io.ReadFull's error (io.EOF
// at the start of the header or of the body, io.ErrUnexpectedEOF inside
// either); a header that PeekHeader refuses gives its error, and the stream
// is out of step after it.
func ReadMessage(r io.Reader, buf []byte) (Message, error) {
	if _, err := io.ReadFull(r, buf[:HeaderLen]); err != nil {
		return nil, err
	}
	n, _, err := PeekHeader(buf[:HeaderLen])
	if err != nil {
		return nil, err
	}
	if n > len(buf) || n < HeaderLen {
		return nil, ErrBadLength
	}
	if _, err := io.ReadFull(r, buf[HeaderLen:n]); err != nil {
		return nil, err
	}
	return Decode(buf[:n])
}
