package pptp

import "sync"

// inputGate holds PPP frames that arrive on a call before its ppp.Session is started
// (the peer may answer our OCRP faster than we call Start), and replays them after.
// Without it the first LCP Configure-Request is dropped and the link waits one restart
// timer (3 s).
type inputGate struct {
	mu      sync.Mutex
	open    bool
	frames  [][]byte
	deliver func([]byte)
	first   func() // called once when the first frame is held (see onFirst)
}

const maxGated = 16

func (g *inputGate) input(p []byte) {
	g.mu.Lock()
	if !g.open {
		if len(g.frames) < maxGated {
			g.frames = append(g.frames, append([]byte(nil), p...))
		}
		first := g.first
		g.first = nil
		g.mu.Unlock()
		if first != nil {
			first()
		}
		return
	}
	f := g.deliver
	g.mu.Unlock()
	f(p)
}

// start opens the gate: replays the held frames to deliver, in order, then passes
// later frames straight through.
func (g *inputGate) start(deliver func([]byte)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deliver = deliver
	for _, f := range g.frames {
		deliver(f)
	}
	g.frames = nil
	g.open = true
}

// onFirst arranges for f to run (once, without the gate's lock) when the first frame is
// held, or at once if one already is. f must not block: it runs on the GRE receive path.
func (g *inputGate) onFirst(f func()) {
	g.mu.Lock()
	if g.open || len(g.frames) == 0 {
		if !g.open {
			g.first = f
		}
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	f()
}
