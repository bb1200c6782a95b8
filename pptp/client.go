package pptp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/mppe"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/wire"
)

// ClientConfig configures a Go PPTP client (PNS side), used by tests and load runs.
type ClientConfig struct {
	Server             string // "host" or "host:port" (port 1723 default)
	Username, Password string

	Auth             []ppp.AuthMethod // methods the client accepts; default ppp's client default
	AllowUnencrypted bool             // default: MPPE required
	MPPEStrengths    []mppe.Strength  // default [128]
	StatelessOnly    bool
	StatefulOnly     bool
	MRU              uint16

	// Mux is a shared GRE endpoint (many clients, one raw socket, distinct call IDs).
	// Nil: the client opens its own raw GRE socket and serves it.
	Mux *gre.Mux
	// Dial makes the control connection; default net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	Now    func() time.Time
	Logger *slog.Logger
}

// Client is one PPTP client call with its PPP session.
type Client struct {
	cfg      ClientConfig
	conn     net.Conn
	serverIP netip.Addr
	mux      *gre.Mux
	ownMux   bool
	call     *gre.Call
	sess     *ppp.Session

	wmu  sync.Mutex
	wbuf []byte

	peerCallID uint16
	cdn        chan struct{}
	stopped    chan struct{}
	closeOnce  sync.Once
	done       chan struct{}
}

// Dial connects, sets up the control connection and one outgoing call, and runs PPP
// until it is up (or ctx ends / PPP fails).
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	addr := cfg.Server
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, strconv.Itoa(wire.ControlPort))
	}
	conn, err := cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	rap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &Client{cfg: cfg, conn: conn, serverIP: rap.Addr().Unmap(), mux: cfg.Mux,
		cdn: make(chan struct{}), stopped: make(chan struct{}), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			c.teardown()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = conn.SetDeadline(dl)
	}
	buf := make([]byte, 256)
	if err := c.send(&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion, FramingCaps: wire.FramingSync,
		BearerCaps: wire.BearerAnalog, MaxChannels: 1, FirmwareRevision: 1, Hostname: "pptpgw-client", Vendor: "pptpgw"}); err != nil {
		return nil, err
	}
	m, err := wire.ReadMessage(conn, buf)
	if err != nil {
		return nil, fmt.Errorf("pptp: reading SCCRP: %w", err)
	}
	rep, isRep := m.(*wire.SCCRP)
	if !isRep || rep.Result != wire.SCCRPResultOK {
		return nil, fmt.Errorf("pptp: control connection refused: %v", m)
	}
	if c.mux == nil {
		pc, err := gre.ListenRaw(netip.Addr{})
		if err != nil {
			return nil, fmt.Errorf("pptp: GRE socket: %w", err)
		}
		c.mux = gre.NewMux(pc, gre.Config{Now: cfg.Now, Logger: cfg.Logger})
		c.ownMux = true
		go c.mux.Serve()
		go c.mux.RunTicker(10*time.Millisecond, c.done)
	}
	call, err := c.mux.RegisterAuto(gre.CallConfig{Peer: c.serverIP})
	if err != nil {
		return nil, err
	}
	c.call = call
	// The server starts LCP right after its OCRP, possibly before we have read it.
	var gate inputGate
	call.SetHandler(gate.input)
	if err := c.send(&wire.OCRQ{CallID: call.LocalID(), CallSerial: call.LocalID(), MinBPS: 300, MaxBPS: 100_000_000,
		BearerType: wire.BearerAnalog | wire.BearerDigital, FramingType: wire.FramingSync,
		RecvWindow: c.mux.Config().RecvWindow}); err != nil {
		return nil, err
	}
	m, err = wire.ReadMessage(conn, buf)
	if err != nil {
		return nil, fmt.Errorf("pptp: reading OCRP: %w", err)
	}
	ocrp, isOCRP := m.(*wire.OCRP)
	if !isOCRP || ocrp.PeerCallID != call.LocalID() {
		return nil, fmt.Errorf("pptp: unexpected reply to OCRQ: %T", m)
	}
	if ocrp.Result != wire.OCRPResultConnected {
		return nil, fmt.Errorf("pptp: call refused: result %d error %d", ocrp.Result, ocrp.Error)
	}
	_ = conn.SetDeadline(time.Time{})
	c.peerCallID = ocrp.CallID
	call.SetPeerID(ocrp.CallID)
	call.SetPeerWindow(ocrp.RecvWindow)

	pc := ppp.Config{
		Role: ppp.Client, MRU: cfg.MRU, Auth: cfg.Auth, RequireMPPE: !cfg.AllowUnencrypted,
		MPPEStrengths: cfg.MPPEStrengths, AllowStateless: !cfg.StatefulOnly, AllowStateful: !cfg.StatelessOnly,
		Username: cfg.Username, Password: cfg.Password, Now: cfg.Now,
		Logger: cfg.Logger.With("client_call_id", call.LocalID()),
	}
	c.sess = ppp.NewSession(pc, func(frame []byte) { _ = call.SendPrefixed(hdlcAddrCtrl, frame) })
	go c.readControl()
	go tickSession(c.sess, c.done, c.cfg.Now)
	c.sess.Start()
	gate.start(c.sess.Input)
	select {
	case <-c.sess.Up():
	case <-c.sess.Done():
		return nil, fmt.Errorf("pptp: PPP failed before up (state %s)", c.sess.State())
	case <-c.stopped:
		return nil, errors.New("pptp: server closed the call")
	case <-ctx.Done():
		return nil, fmt.Errorf("pptp: PPP not up: %w (state %s)", ctx.Err(), c.sess.State())
	}
	ok = true
	return c, nil
}

func (c *Client) send(m wire.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = m.Append(c.wbuf[:0])
	_, err := c.conn.Write(c.wbuf)
	return err
}

func (c *Client) readControl() {
	defer c.closeOnce.Do(func() { close(c.stopped) })
	buf := make([]byte, 256)
	for {
		m, err := wire.ReadMessage(c.conn, buf)
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *wire.EchoRQ:
			_ = c.send(&wire.EchoRP{ID: m.ID, Result: wire.EchoRPResultOK})
		case *wire.CDN:
			if m.CallID == c.peerCallID {
				select {
				case <-c.cdn:
				default:
					close(c.cdn)
					c.sess.LowerDown("call disconnected by server")
				}
			}
		case *wire.StopCCRQ:
			_ = c.send(&wire.StopCCRP{Result: wire.StopCCRPResultOK})
			c.sess.LowerDown("control connection stopped by server")
			return
		case *wire.StopCCRP:
			return
		}
	}
}

// tickSession drives a client session's PPP timers (restart, echo) every
// 100 ms until done is closed.
func tickSession(sess *ppp.Session, done <-chan struct{}, now func() time.Time) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			sess.Tick(now())
		}
	}
}

// Session is the client's PPP session (Info, State, Up, Done).
func (c *Client) Session() *ppp.Session { return c.sess }

// LocalCallID is the client's call ID; PeerCallID the server's.
func (c *Client) LocalCallID() uint16 { return c.call.LocalID() }
func (c *Client) PeerCallID() uint16  { return c.peerCallID }

// SendIP sends one IPv4 packet through the tunnel. It waits up to 100 ms for the
// server's GRE receive window (backpressure instead of loss; a dropped packet would
// also cost stateful MPPE a reset).
func (c *Client) SendIP(pkt []byte) error {
	c.call.WaitWindow(100 * time.Millisecond)
	return c.sess.SendIP(pkt)
}

// OnIP sets the receiver of IPv4 packets from the tunnel.
func (c *Client) OnIP(f func(pkt []byte)) { c.sess.OnIP(f) }

// Stopped is closed when the server ended the control connection.
func (c *Client) Stopped() <-chan struct{} { return c.stopped }

// CallDisconnected is closed when the server sent Call-Disconnect-Notify for our call.
func (c *Client) CallDisconnected() <-chan struct{} { return c.cdn }

// Close tears down cleanly: LCP Terminate, Call-Clear-Request (waits for the CDN),
// Stop-Control-Connection-Request (waits for the reply), then closes everything.
func (c *Client) Close() error {
	c.sess.Close("client close")
	select {
	case <-c.sess.Done():
	case <-time.After(500 * time.Millisecond):
	}
	var err error
	if e := c.send(&wire.CCRQ{CallID: c.call.LocalID()}); e == nil {
		select {
		case <-c.cdn:
		case <-c.stopped:
		case <-time.After(2 * time.Second):
			err = errors.New("pptp: no Call-Disconnect-Notify")
		}
	}
	if e := c.send(&wire.StopCCRQ{Reason: wire.StopReasonNone}); e == nil {
		select {
		case <-c.stopped:
		case <-time.After(2 * time.Second):
			if err == nil {
				err = errors.New("pptp: no Stop-Control-Connection-Reply")
			}
		}
	}
	c.teardown()
	return err
}

func (c *Client) teardown() {
	select {
	case <-c.done:
		return
	default:
		close(c.done)
	}
	c.conn.Close()
	if c.call != nil {
		c.call.Close()
	}
	if c.ownMux && c.mux != nil {
		c.mux.Close()
	}
}
