// Package qos will own shaping of the gateway's traffic: the classes of the
// configuration (first match wins, over addresses, protocols, ports, DSCP and
// PPTP calls), the HTB trees programmed on shaped interfaces (both
// directions, IFB for ingress), and per-call policing of GRE. The engine
// (nat) will ask it for a packet's class; rules will install the nftables
// classification of the traffic that stays on the kernel's path.
//
// It must not know about NFQUEUE, the call table's internals or PPTP's wire
// formats: it gets a parsed packet or a call's identity and answers with a
// class. No code lives here until the shaping issue lands.
package qos
