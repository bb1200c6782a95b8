package conntrack

// Forward reports whether the call's control connection is a forward's
// (its inside party is a published server or pool member). Only for
// OnCallRemoved, like CarriedGRE. (pool, issue 11)
func (c *Call) Forward() bool { return c.conn != nil && c.conn.Forward }
