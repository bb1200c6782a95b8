package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"pptpgw/internal/metrics"
	"pptpgw/internal/promexport"
	"pptpgw/pptp"
	"pptpgw/rules"
)

// Operations settings of `pptpgw serve` (issue 8): metrics, admin_group.
type serveObs struct {
	Metrics    string // /metrics address; "" = off
	AdminGroup string // group of the admin socket; "" = root only
}

// validateServeObs checks the server's metrics and admin_group keys the way
// the gateway's are checked.
func validateServeObs(sc *pptp.FileConfig) error {
	var errs []error
	if m := rules.ValidMetricsAddr(sc.Metrics); m != "" {
		errs = append(errs, fmt.Errorf("metrics: %s", m))
	}
	if m := rules.ValidAdminGroup(sc.AdminGroup); m != "" {
		errs = append(errs, fmt.Errorf("admin_group: %s", m))
	}
	return errors.Join(errs...)
}

// serverSource is the server's snapshot as a metrics.Source.
func serverSource(srv *pptp.Server) metrics.Source {
	return metrics.SourceFunc(func(emit func(metrics.Sample)) {
		for _, s := range srv.Metrics() {
			emit(s)
		}
	})
}

// startServeMetrics serves the server's families as pptpgw_serve_* on addr
// until ctx ends ("" = off).
func startServeMetrics(ctx context.Context, addr string, srv *pptp.Server, log *slog.Logger, more ...metrics.Source) error {
	if addr == "" {
		return nil
	}
	a, err := promexport.Serve(ctx, addr, newExporter("pptpgw_serve_", append([]metrics.Source{serverSource(srv)}, more...)...), log)
	if err != nil {
		return err
	}
	log.Info("serving Prometheus metrics", "url", "http://"+a.String()+"/metrics")
	return nil
}
