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

// gatewayMetrics is the gateway's /metrics: the exporter, to which another
// feature adds its families with one line (m.Exp.Sources.Add(src), e.g.
// reloads_total), and the endpoint, which a reload brings to the new
// `metrics` address with m.Endpoint.Apply(cfg.Metrics).
type gatewayMetrics struct {
	Exp      *promexport.Exporter
	Endpoint *promexport.Endpoint
}

// startGatewayMetrics builds the gateway's exporter (pptpgw_*: the engine's
// and the queue's families) and serves it on cfg.Metrics (if set) until ctx
// ends.
func startGatewayMetrics(ctx context.Context, cfg *rules.Config, e *nat.Engine, q metrics.Source, log *slog.Logger) (*gatewayMetrics, error) {
	m := &gatewayMetrics{Exp: newExporter("pptpgw_", e, q)}
	m.Endpoint = promexport.NewEndpoint(m.Exp, log)
	if err := m.Endpoint.Apply(cfg.Metrics); err != nil {
		return nil, err
	}
	go func() {
		<-ctx.Done()
		m.Endpoint.Close()
	}()
	if a := m.Endpoint.Addr(); a != nil {
		log.Info("serving Prometheus metrics", "url", "http://"+a.String()+"/metrics")
	}
	return m, nil
}

// newExporter is promexport.New with this build's version.
func newExporter(prefix string, srcs ...metrics.Source) *promexport.Exporter {
	v, gov := buildVersion()
	return promexport.New(prefix, v, gov, srcs...)
}

// Apply brings /metrics to cfg.Metrics on a reload (the reload contract:
// the same address keeps its listener; a new one is bound before the old
// closes; a taken one is an error and the old one keeps serving).
func (m *gatewayMetrics) Apply(cfg *rules.Config) error { return m.Endpoint.Apply(cfg.Metrics) }

// adminGroup applies admin_group to the admin socket at Path on a reload
// (the socket's path itself changes only with a restart).
type adminGroup struct{ Path string }

// Apply sets the socket's group and mode for cfg.AdminGroup.
func (a adminGroup) Apply(cfg *rules.Config) error { return setAdminGroup(a.Path, cfg.AdminGroup) }
