// Package pkt is the packet layer both products share: IPv4 and TCP (and
// UDP, ICMP) header views over a packet's bytes, the one Internet checksum
// (RFC 1071) with its incremental updates (RFC 1624), Parse, which decodes a
// packet once into a flat Parsed summary that every later step reads, and
// Verdict, the fate of a packet in the gateway.
//
// It owns wire formats of IP and its transports only. It must not know about
// PPTP (pptp/wire), NFQUEUE (nat/nfq), the call table or any configuration,
// and it never allocates: views are []byte conversions, checksums fold in
// registers.
package pkt
