package conntrack

// Accessors for the engine's call events (issue 8: `pptpgw events`).

// Counters returns the call's GRE packets and bytes in both directions.
// Only for OnCallRemoved (it reads state the table lock guards), like
// CarriedGRE.
func (c *Call) Counters() (pktsOut, pktsIn, bytesOut, bytesIn uint64) {
	return c.pktsOut, c.pktsIn, c.bytesOut, c.bytesIn
}

// InsidePort is the inside party's TCP port of the call's control
// connection (0 if the call has none). Only for OnCallRemoved.
func (c *Call) InsidePort() uint16 {
	if c.conn == nil {
		return 0
	}
	return c.conn.Key.InsidePort
}
