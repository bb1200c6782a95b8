package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"pptpgw/internal/metrics"
	"pptpgw/nat"
	"pptpgw/rules"
)

// The Prometheus endpoint (issue 8): `metrics: ADDR` / --metrics ADDR serve
// /metrics for `run` (series pptpgw_*) and `serve` (pptpgw_serve_*).
//
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

// promSources is a prometheus.Collector reading metrics.Sources at scrape
// time: one Snapshot per scrape, each family's samples as const metrics.
type promSources struct {
	prefix string
	mu     sync.Mutex
	srcs   []metrics.Source
	descs  map[*metrics.Desc]*prometheus.Desc
}

// Add registers one more source: the one line a feature needs to appear in
// /metrics (and it should be in the admin reply's snapshot too).
func (p *promSources) Add(src metrics.Source) {
	p.mu.Lock()
	p.srcs = append(p.srcs, src)
	p.mu.Unlock()
}

// Describe sends nothing: the families are known only from a snapshot, so
// this is an unchecked collector; the registry still checks every scrape's
// output for consistency.
func (p *promSources) Describe(chan<- *prometheus.Desc) {}

// Collect takes one snapshot of every source and sends its samples.
func (p *promSources) Collect(ch chan<- prometheus.Metric) {
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

func (p *promSources) desc(d *metrics.Desc) *prometheus.Desc {
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

// metricsExporter is the registry of one daemon.
type metricsExporter struct {
	Sources *promSources
	reg     *prometheus.Registry
}

// newMetricsExporter returns an exporter of srcs under prefix ("pptpgw_"),
// with build_info and the Go runtime and process collectors (go_*,
// process_*: memory, goroutines, open files, the usual first questions).
func newMetricsExporter(prefix string, srcs ...metrics.Source) *metricsExporter {
	p := &promSources{prefix: prefix, descs: map[*metrics.Desc]*prometheus.Desc{}}
	ver, gover := buildVersion()
	p.Add(metrics.SourceFunc(func(emit func(metrics.Sample)) {
		emit(metrics.Sample{Desc: descBuildInfo, LabelValues: []string{ver, gover}, Key: "build_info", Value: 1})
	}))
	for _, s := range srcs {
		p.Add(s)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(p, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &metricsExporter{Sources: p, reg: reg}
}

// Handler serves the exposition.
func (m *metricsExporter) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// serveMetrics listens on addr (so a taken or bad address fails the start)
// and serves /metrics until ctx ends. It returns the address bound.
func serveMetrics(ctx context.Context, addr string, m *metricsExporter, log *slog.Logger) (net.Addr, error) {
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
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

// buildVersion is build_info's labels: the version without the Go version
// versionString appends, and the Go version.
func buildVersion() (string, string) {
	v, _, _ := strings.Cut(versionString(), " (")
	return v, runtime.Version()
}

// startGatewayMetrics builds the gateway's exporter (pptpgw_*: the engine's
// and the queue's families) and, when cfg.Metrics is set, serves it until
// ctx ends. The exporter is returned even when not served, so another
// feature registers its metrics.Source with one line:
// exp.Sources.Add(src).
func startGatewayMetrics(ctx context.Context, cfg *rules.Config, e *nat.Engine, q *queue, log *slog.Logger) (*metricsExporter, error) {
	exp := newMetricsExporter("pptpgw_", e, q.conn)
	if cfg.Metrics == "" {
		return exp, nil
	}
	addr, err := serveMetrics(ctx, cfg.Metrics, exp, log)
	if err != nil {
		return nil, err
	}
	log.Info("serving Prometheus metrics", "url", "http://"+addr.String()+"/metrics")
	return exp, nil
}
