package pptp

// DefaultAdminSocket is where `pptpgw serve` answers `pptpgw sessions`.
const DefaultAdminSocket = "/run/pptpgw/serve.sock"

// AdminReply is the JSON answer to the admin command "sessions" (served by
// cmd/pptpgw on the unix socket, one request per connection).
type AdminReply struct {
	Sessions []SessionInfo     `json:"sessions"`
	Counters map[string]uint64 `json:"counters"`
}
