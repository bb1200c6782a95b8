// Package ppp is a userspace PPP implementation for PPTP, either role:
// the RFC 1661 option negotiation automaton (fsm.go) shared by LCP (MRU,
// magic number, authentication protocol, ACCM/PFC/ACFC, echo keepalive,
// Protocol-Reject), IPCP (RFC 1332, DNS of RFC 1877) and CCP with MPPE
// (RFC 1962, RFC 3078); authentication by PAP (RFC 1334), CHAP-MD5
// (RFC 1994) and MS-CHAPv2 (RFC 2759) whose keys feed MPPE (RFC 3079).
//
// A Session is transport independent: frames come in through Input and go
// out through the send function given to NewSession; IPv4 packets go out
// through SendIP and come in through the OnIP callback. Time only moves
// through Tick (and Config.Now), so tests drive it with a fake clock.
//
// It owns the PPP protocols, authentication, the use of MPPE keys and its
// drop/failure reasons (counters.go, on internal/metrics). It must not know
// GRE, PPTP, TUN devices or IP beyond "a packet": where frames travel,
// where passwords come from (Config.Lookup) and where addresses come from
// (Config.AllocIP) are its callers' business.
package ppp
