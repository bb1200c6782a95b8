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
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "pptpgw: metrics at /metrics")
	})
	// A client can make the HTTP server log at will (bad requests, TLS
	// handshakes to a plain port): one line per 10 s, then the count.
	lim := logging.NewRateLimiter(log, 10*time.Second, time.Now, nil)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: stdlog.New(lim.Writer("metrics endpoint: HTTP server error"), "", 0)}
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
	wait:
		for {
			select {
			case now := <-t.C:
				lim.Flush(now)
			case <-ctx.Done():
				break wait
			}
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	return l.Addr(), nil
}
