package main

import (
	"context"
	"log/slog"
	"runtime"
	"strings"

	"pptpgw/internal/metrics"
	"pptpgw/internal/promexport"
	"pptpgw/nat"
	"pptpgw/rules"
)

// The Prometheus endpoint (issue 8): `metrics: ADDR` / --metrics ADDR serve
// /metrics for `run` (series pptpgw_*) and `serve` (pptpgw_serve_*); the
// bridge and the choice of client_golang are in internal/promexport.

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
func startGatewayMetrics(ctx context.Context, cfg *rules.Config, e *nat.Engine, q *queue, log *slog.Logger) (*promexport.Exporter, error) {
	exp := newExporter("pptpgw_", e, q.conn)
	if cfg.Metrics == "" {
		return exp, nil
	}
	addr, err := promexport.Serve(ctx, cfg.Metrics, exp, log)
	if err != nil {
		return nil, err
	}
	log.Info("serving Prometheus metrics", "url", "http://"+addr.String()+"/metrics")
	return exp, nil
}

// newExporter is promexport.New with this build's version.
func newExporter(prefix string, srcs ...metrics.Source) *promexport.Exporter {
	v, gov := buildVersion()
	return promexport.New(prefix, v, gov, srcs...)
}
