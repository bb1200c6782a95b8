// Package qos owns shaping of the gateway's traffic (issue 9): the
// configuration's types (classes, first match wins, over addresses,
// protocols, ports, DSCP and PPTP calls; shaping; policing), rates and
// sizes in tc's units, and the HTB trees on shaped interfaces (Shaper,
// over netlink, with Apply/Close for reload; ReadStats for `pptpgw qos`).
// The class ids it hands out (ClassID) are what nftables (rules/nft_qos.go)
// and the engine (nat/policing.go) put in skb->priority; the token bucket of
// per-call policing and of the server's session limits is qos/police.
//
// It must not know about NFQUEUE, the call table's internals or PPTP's wire
// formats: the engine and the server ask it for classes and buckets.
package qos
