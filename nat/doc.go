// Package nat is the gateway's userspace data path for PPTP: the Engine that
// decides about and rewrites every packet NFQUEUE hands the daemon (GRE
// entirely, TCP 1723 control segments through the helper ALG), and the
// outside call-ID allocator.
//
// It owns the translation: which call a GRE packet belongs to, which address
// and key it leaves with, which call IDs a control segment carries after
// the gateway. It must not know about nftables (package rules), the netlink
// socket (nat/nfq reads it and hands over nfq.Packet), configuration files or
// the admin socket (cmd/pptpgw): it gets an EngineConfig and packets.
//
// # Files, in the order a packet meets them
//
//	engine.go    Engine, EngineConfig, Process: the one entry point, direction
//	gre.go       the GRE path: processGRE
//	control.go   the control path: processTCP, the control connection, held
//	             segments, the helper.Mapper on top of the table and allocator
//	alloc.go     outside call IDs per (public IP, peer IP), with quarantine
//	tick.go      Tick: held segments, idle calls, quarantine, drop summary
//	counters.go  reasons and metrics (internal/metrics): Collect, Counters
//	calls.go     CallInfo and CallsReply: the calls view and its JSON (`pptpgw calls`)
//	events.go    call events for `pptpgw events`: Event, SubscribeEvents, the hub
//	metrics_obs.go  the Prometheus-facing families (packets, bytes, drops, teardowns)
//	pool.go      server pools: member choice, per-member accounting, `pptpgw pool`
//	pool_probe.go health probes of pool members
//	hairpin.go   NAT loopback to a pool from inside
//	kernelpath.go the kernel fast path: the nftables maps kept in step with
//	             the call table, their counters read back (gre_path: kernel)
//	reload.go    Reconfigure: the reloadable settings behind an atomic.Pointer
//	state.go     SaveState/RestoreState: the call table across a restart
//
// # One GRE packet
//
// A PPTP client at 10.0.0.2 sends GRE to its server 198.51.100.7 with the key
// (call ID) the server gave it. nftables queues it in postrouting on its way
// out of the WAN; nfq.Queue.Run hands the nfq.Packet to Engine.Handle, which
// calls Process (engine.go). Process parses the packet once (pkt.Parsed),
// finds it outbound (postrouting) and calls processGRE (gre.go):
// wire.ParseGRE checks enhanced GRE, conntrack.Table.Outbound finds the call
// by (10.0.0.2, 198.51.100.7, key) and returns its public address, and
// pkt.IPv4.SetSourceAddressWithChecksumUpdate rewrites the source with an
// RFC 1624 checksum update. The verdict (Accept, Modified) goes back through
// nfq in the batch's one sendmsg; the kernel's SNAT leaves the source alone,
// it is already the public address. The server's answer comes in on the WAN
// (prerouting) to the public address with the outside call ID as key:
// Table.Inbound finds the call, and the destination becomes 10.0.0.2 and the
// key the client's own call ID. GRE that matches no call is dropped and
// counted (gre_no_call), never forwarded: GRE is notracked, so the kernel
// would send it on untranslated.
//
// # One control segment
//
// The same client's Outgoing-Call-Request arrives from the LAN (prerouting)
// on TCP port 1723. Process calls processTCP (control.go): controlFor finds
// the control connection (conntrack.Table.LookupControl, created from its SYN
// by AddControl), and the segment's payload (an owned copy, in case it must be
// held) goes to that connection's helper.Translator. The translator
// reassembles the stream by sequence number, and at the call-ID field asks its
// Mapper (mapper, control.go) for an outside ID: Allocator.Alloc, then
// Table.AddCall. It rewrites the field in place and returns the patches;
// processTCP applies them to the packet and patches the TCP checksum byte by
// byte (pkt.UpdateByte). The server's Outgoing-Call-Reply gets its Peer's Call
// ID translated back, and the Translator's CallEstablished event makes
// Table.Establish install the outbound GRE index: from here GRE flows. A
// segment that ends between the two bytes of a call-ID field is held
// (pkt.Hold): its bytes are kept in Engine.holds until the next segment
// completes the field, then released through the releaser (nfq's
// SetVerdict), or given up by Tick after timeouts.hold (let go unmodified;
// dropped in strict mode).
//
// # Bounds
//
// Nothing a packet can make the engine keep grows without a bound, and
// established state is never given up to make room for state that is not
// (conntrack's package comment has the policy): AddControl early-drops a
// control connection still in setup or refuses the new one, and the SYN
// or segment that asked for it is dropped (ctl_refused); AddCall does the
// same for calls and enforces the per-source and per-connection limits,
// and a refused call's Outgoing-Call-Request passes untranslated
// (helper_alloc_failed). An outside call ID goes back to the allocator
// through OnCallRemoved, into quarantine only if the call carried GRE
// (Allocator.Release; otherwise ReleaseUnused), and a refused call's ID at
// once. Held segments share MaxHeldBytes. A translator allocates its patch
// memory on first use and the allocator its bitsets by chunk, so a
// connection or pool costs what it holds (memory_test.go measures it).
//
// # Lock order
//
// Engine.ctlMu (the control path: translators, held segments, the public
// address of new connections) -> conntrack.Table.mu -> Allocator.mu. The GRE
// path takes only Table.mu. The table's OnCallRemoved callback runs under
// Table.mu and only takes Allocator.mu (to release the call's outside ID).
// The call events' hub lock (eventHub.mu, events.go) is a leaf taken under
// either, and only while someone listens to `pptpgw events`.
// Counters are atomics and take no lock. Pools (pool.go, hairpin.go): a
// member's counters are atomics; its probe state has its own mutex, taken
// alone; Engine.hpMu (the hairpin calls' aliases) is a leaf: taken after
// Table.mu (OnCallRemoved), under ctlMu (a hairpin call set up, or
// restored by RestoreState) or alone (the GRE path, never while holding
// Table.mu).
// The kernel fast path
// (kernelpath.go, issue 12): kernelPath.mu is a leaf, taken under Table.mu
// by OnCallEstablished and OnCallRemoved; its flusher holds kernelPath.fmu
// and takes Allocator.mu, kernelPath.mu, and Table.mu then kernelPath.mu
// (Table.View: what dirty calls want, calls by element key; no I/O) under
// it; nothing takes fmu under Table.mu or kernelPath.mu. It accounts the
// kernel's counters to the table (Table.AccountGRE, AccountPoliced) with
// no kernelPath lock held: sync after releasing fmu, flush (before a
// transaction replaces elements of calls that stay) under fmu. refreshKernelGRE (an uplink's interface changed:
// SetWANIndex, SetUplink, SetUplinks; kernelpath_qos.go) takes Table.mu
// then kernelPath.mu (Table.View) and is called with no engine lock held;
// kernelPath's eligible and fill hooks run under both and take no lock.
// Several NFQUEUE readers (queues: N) call Process concurrently; nothing above depends on which reader a
// packet came from. This is the only place the order is written; the other
// packages point here.
//
// With several uplinks (uplinks.go, issue 10), Engine.ups.pinMu is a leaf
// taken under ctlMu (a new control connection) or Table.mu
// (OnControlRemoved), and the Pinner it calls must not block.
package nat
