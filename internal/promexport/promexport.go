// Package promexport serves the daemons' metrics (internal/metrics
// Snapshots) in the Prometheus text format, at scrape time.
//
// It owns the bridge to github.com/prometheus/client_golang and the HTTP
// endpoint. It must not know what is counted: the commands give it
// metrics.Sources and a prefix (pptpgw_, pptpgw_serve_).
package promexport

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"pptpgw/internal/logging"
	"pptpgw/internal/metrics"
)

// Why github.com/prometheus/client_golang and not VictoriaMetrics/metrics:
// our counters already live in internal/metrics (atomic arrays on the hot
// path, gauges read on demand through metrics.Source), so what an exporter
// needs is a way to turn a Snapshot into exposition at scrape time, not a
// second set of counters. client_golang's custom Collector is exactly that
// (const metrics built from the Snapshot, nothing kept between scrapes), its
// registry checks names, help, types and label consistency on every scrape
// (a broken family is an HTTP 500 and a test failure, not a silent bad
// line), and promhttp does content negotiation and gzip. VictoriaMetrics/
// metrics would have us mirror every value into its own counters or
// write the text format through its WriteCounterUint64-style helpers
// ourselves, without that validation. Its smaller binary does not weigh
// against a daemon that already links nftables and netlink.

// Sources is a prometheus.Collector reading metrics.Sources at scrape
// time: one Snapshot per scrape, each family's samples as const metrics.
type Sources struct {
	prefix string
	mu     sync.Mutex
	srcs   []metrics.Source
	descs  map[*metrics.Desc]*prometheus.Desc
}

// Add registers one more source: the one line a feature needs to appear in
// /metrics (and it should be in the admin reply's snapshot too).
func (p *Sources) Add(src metrics.Source) {
	p.mu.Lock()
	p.srcs = append(p.srcs, src)
	p.mu.Unlock()
}

// Describe sends nothing: the families are known only from a snapshot, so
// this is an unchecked collector; the registry still checks every scrape's
// output for consistency.
func (p *Sources) Describe(chan<- *prometheus.Desc) {}

// Collect takes one snapshot of every source and sends its samples.
func (p *Sources) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	srcs := append([]metrics.Source(nil), p.srcs...)
	p.mu.Unlock()
	for _, f := range metrics.Collect(srcs...).Families() {
		d := p.desc(f.Desc)
		vt := prometheus.CounterValue
		if f.Desc.Kind == metrics.Gauge {
			vt = prometheus.GaugeValue
		}
		for _, s := range f.Samples {
			m, err := prometheus.NewConstMetric(d, vt, float64(s.Value), s.LabelValues...)
			if err != nil {
				m = prometheus.NewInvalidMetric(d, err)
			}
			ch <- m
		}
	}
}

func (p *Sources) desc(d *metrics.Desc) *prometheus.Desc {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pd, ok := p.descs[d]; ok {
		return pd
	}
	pd := prometheus.NewDesc(p.prefix+d.Name, d.Help, d.Labels, nil)
	p.descs[d] = pd
	return pd
}

// descBuildInfo is build_info{version} = 1, the usual way to export a
// version.
var descBuildInfo = &metrics.Desc{Name: "build_info", Kind: metrics.Gauge, Labels: []string{"version", "goversion"},
	Help: "Always 1; its labels say which build of pptpgw runs."}

// Exporter is the registry of one daemon.
type Exporter struct {
	Sources *Sources
	reg     *prometheus.Registry
}

// New returns an exporter of srcs under prefix ("pptpgw_"),
// with build_info and the Go runtime and process collectors (go_*,
// process_*: memory, goroutines, open files, the usual first questions).
func New(prefix, version, goVersion string, srcs ...metrics.Source) *Exporter {
	p := &Sources{prefix: prefix, descs: map[*metrics.Desc]*prometheus.Desc{}}
	p.Add(metrics.SourceFunc(func(emit func(metrics.Sample)) {
		emit(metrics.Sample{Desc: descBuildInfo, LabelValues: []string{version, goVersion}, Key: "build_info", Value: 1})
	}))
	for _, s := range srcs {
		p.Add(s)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(p, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Exporter{Sources: p, reg: reg}
}

// Handler serves the exposition.
func (m *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// Serve listens on addr (so a taken or bad address fails the start)
// and serves /metrics until ctx ends. It returns the address bound.
func Serve(ctx context.Context, addr string, m *Exporter, log *slog.Logger) (net.Addr, error) {
	ep := NewEndpoint(m, log)
	if err := ep.Apply(addr); err != nil {
		return nil, err
	}
	go func() {
		<-ctx.Done()
		ep.Close()
	}()
	return ep.Addr(), nil
}

// Endpoint is the /metrics listener of a daemon, following the reload
// contract: Apply(addr) brings it to addr ("" = off), Close stops it.
type Endpoint struct {
	exp *Exporter
	log *slog.Logger
	lim *logging.RateLimiter

	mu   sync.Mutex
	addr string // as configured
	srv  *http.Server
	l    net.Listener
	stop chan struct{}
}

// NewEndpoint returns an Endpoint of m, not listening yet.
func NewEndpoint(m *Exporter, log *slog.Logger) *Endpoint {
	// A client can make the HTTP server log at will (bad requests, TLS
	// handshakes to a plain port): one line per 10 s, then the count.
	return &Endpoint{exp: m, log: log, lim: logging.NewRateLimiter(log, 10*time.Second, time.Now, nil)}
}

// Apply serves on addr: nothing changes when it already does; a new address
// is bound before the old listener closes (a scrape is never refused for
// the change, and a bad or taken address leaves the old one serving and is
// returned); "" stops serving.
func (e *Endpoint) Apply(addr string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if addr == e.addr && (addr == "") == (e.srv == nil) {
		return nil
	}
	if addr == "" {
		e.closeLocked()
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	e.closeLocked()
	mux := http.NewServeMux()
	mux.Handle("/metrics", e.exp.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "pptpgw: metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: stdlog.New(e.lim.Writer("metrics endpoint: HTTP server error"), "", 0)}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				e.lim.Flush(now)
			case <-stop:
				return
			}
		}
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	e.addr, e.srv, e.l, e.stop = addr, srv, l, stop
	return nil
}

// Addr returns the address bound (nil when off).
func (e *Endpoint) Addr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.l == nil {
		return nil
	}
	return e.l.Addr()
}

// Close stops serving.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closeLocked()
	return nil
}

func (e *Endpoint) closeLocked() {
	if e.srv == nil {
		e.addr = ""
		return
	}
	close(e.stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e.srv.Shutdown(ctx)
	e.addr, e.srv, e.l, e.stop = "", nil, nil, nil
}
