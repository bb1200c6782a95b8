package rules

import (
	"net"
	"regexp"
	"strconv"
)

// Operations keys (issue 8): metrics, admin_group.

// groupRE: a group name or number as groupadd(8) and chgrp(1) accept them.
var groupRE = regexp.MustCompile(`^([a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10})$`)

// ValidMetricsAddr checks a `metrics` address: HOST:PORT or :PORT with a
// numeric port ("" is off). Shared with the server's config.
func ValidMetricsAddr(s string) string {
	if s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "want HOST:PORT or :PORT (e.g. 127.0.0.1:9247), got " + strconv.Quote(s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "port " + strconv.Quote(port) + " is not a number 0..65535"
	}
	if host != "" && net.ParseIP(host) == nil && !hostnameRE.MatchString(host) {
		return "host " + strconv.Quote(host) + " is neither an IP address nor a host name"
	}
	return ""
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)

// ValidAdminGroup checks an `admin_group` value ("" is none). Whether the
// group exists is checked when the socket is created.
func ValidAdminGroup(s string) string {
	if s == "" || groupRE.MatchString(s) {
		return ""
	}
	return strconv.Quote(s) + " is not a group name or number"
}

func (c *Config) validateObs(bad func(field, format string, a ...any)) {
	if m := ValidMetricsAddr(c.Metrics); m != "" {
		bad("metrics", "%s", m)
	}
	if m := ValidAdminGroup(c.AdminGroup); m != "" {
		bad("admin_group", "%s", m)
	}
}
