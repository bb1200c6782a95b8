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
}

const maxGated = 16

func (g *inputGate) input(p []byte) {
	g.mu.Lock()
	if !g.open {
		if len(g.frames) < maxGated {
			g.frames = append(g.frames, append([]byte(nil), p...))
		}
		g.mu.Unlock()
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
