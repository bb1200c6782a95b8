package pptp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"pptpgw/pptp/hdlc"
	"pptpgw/pptp/ppp"
)

// PTYClient is a PPP client (the Go ppp.Session, Client role) speaking async HDLC on
// the master side of a pty whose slave is stdin/stdout of a third-party PPTP client,
// Debian's `pptp SERVER --nolaunchpppd`: pptp-linux does the control connection and
// GRE, we do PPP, MS-CHAPv2, MPPE and IP. No TUN is needed: callers send raw IP packets
// with SendIP and get replies through OnIP.
type PTYClient struct {
	cfg    ClientConfig
	rw     io.ReadWriter
	sess   *ppp.Session
	enc    hdlc.Encoder
	wmu    sync.Mutex
	wbuf   []byte
	rawBuf []byte
	done   chan struct{}
	once   sync.Once
	dec    hdlc.Decoder
}

// DialPTY runs PPP over rw (the pty master) until it is up. cfg.Server, Mux and Dial
// are not used.
func DialPTY(ctx context.Context, rw io.ReadWriter, cfg ClientConfig) (*PTYClient, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &PTYClient{cfg: cfg, rw: rw, enc: hdlc.NewEncoder(), done: make(chan struct{})}
	pc := ppp.Config{
		Role: ppp.Client, MRU: cfg.MRU, Auth: cfg.Auth, RequireMPPE: !cfg.AllowUnencrypted,
		MPPEStrengths: cfg.MPPEStrengths, AllowStateless: !cfg.StatefulOnly, AllowStateful: !cfg.StatelessOnly,
		Username: cfg.Username, Password: cfg.Password, Now: cfg.Now, Logger: cfg.Logger.With("pty", true),
	}
	c.sess = ppp.NewSession(pc, c.write)
	go c.read()
	go tickSession(c.sess, c.done, c.cfg.Now)
	c.sess.Start()
	select {
	case <-c.sess.Up():
		return c, nil
	case <-c.sess.Done():
		c.stop()
		return nil, fmt.Errorf("pptp: PPP over pty failed before up (state %s)", c.sess.State())
	case <-ctx.Done():
		c.stop()
		return nil, fmt.Errorf("pptp: PPP over pty not up: %w (state %s, hdlc %+v)", ctx.Err(), c.sess.State(), c.dec.Stats())
	}
}

// write frames one PPP frame (FF 03 + protocol + info) for the async line.
func (c *PTYClient) write(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	raw := append(c.rawBuf[:0], hdlcAddrCtrl...)
	raw = append(raw, frame...)
	out := c.enc.Append(c.wbuf[:0], raw)
	c.rawBuf, c.wbuf = raw, out
	_, _ = c.rw.Write(out)
}

func (c *PTYClient) read() {
	buf := make([]byte, 8192)
	for {
		n, err := c.rw.Read(buf)
		if n > 0 {
			c.dec.FeedFunc(buf[:n], c.sess.Input)
		}
		if err != nil {
			c.sess.LowerDown("pty closed")
			c.stop()
			return
		}
	}
}

func (c *PTYClient) stop() { c.once.Do(func() { close(c.done) }) }

// Session is the PPP session.
func (c *PTYClient) Session() *ppp.Session { return c.sess }

// SendIP sends one IPv4 packet through the tunnel.
func (c *PTYClient) SendIP(pkt []byte) error { return c.sess.SendIP(pkt) }

// OnIP sets the receiver of IPv4 packets from the tunnel.
func (c *PTYClient) OnIP(f func(pkt []byte)) { c.sess.OnIP(f) }

// Close terminates PPP (LCP Terminate-Request, waits up to a second for the ack). The
// caller then stops pptp-linux (SIGTERM), which clears the call and control connection.
func (c *PTYClient) Close() {
	c.sess.Close("client close")
	select {
	case <-c.sess.Done():
	case <-time.After(time.Second):
	}
	c.stop()
}
