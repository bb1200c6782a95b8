package pptp

import (
	"log/slog"
	"time"

	"pptpgw/internal/logging"
)

// rateLog writes the lines that a flood of connections can trigger (one per
// connection or call) without letting the flood write the log: the first line
// of each interval per message, then one line with the count left out. It is
// logging.RateLimiter, shared with the gateway.
type rateLog = logging.RateLimiter

func newRateLog(log *slog.Logger, every time.Duration, now func() time.Time, suppressed func(int)) *rateLog {
	return logging.NewRateLimiter(log, every, now, suppressed)
}
