#!/bin/sh
# Captures real pptp-linux <-> pptpd control traffic (and any GRE) between two
# throwaway network namespaces (203.0.113.1 client, 203.0.113.2 server) into OUT.pcap.
# Run as root from this directory: sh capture.sh OUT; then sh extract.sh OUT.
# The client is pptp --nolaunchpppd on a pty, closed after 4 s; what pptp sends
# depends on timing, so two runs are kept:
#   long.pcap:  SCCRQ/RP, OCRQ/RP, three Echo-Request/Reply, FIN both ways.
#   clear.pcap: SCCRQ/RP, OCRQ/RP, Echo-Request + Call-Clear-Request in ONE
#               segment, Echo-Reply, pptpd FIN, a second CCRQ, RST.
set -eu
OUT=${1:?usage: capture.sh OUT}
P=pg$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
T=$(mktemp -d)
cleanup() {
	[ -f "$T/pptpd.pid" ] && kill "$(cat "$T/pptpd.pid")" 2>/dev/null || true
	[ -n "${TSHARK:-}" ] && kill "$TSHARK" 2>/dev/null || true
	ip netns pids ${P}c 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns pids ${P}s 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns del ${P}c 2>/dev/null || true
	ip netns del ${P}s 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
ip netns add ${P}c
ip netns add ${P}s
ip link add ${P}a netns ${P}c type veth peer name ${P}b netns ${P}s
ip -n ${P}c addr add 203.0.113.1/24 dev ${P}a
ip -n ${P}s addr add 203.0.113.2/24 dev ${P}b
for n in c s; do ip -n ${P}$n link set lo up; done
ip -n ${P}c link set ${P}a up
ip -n ${P}s link set ${P}b up

# Stand-in for pppd: writes one async-HDLC LCP frame, then waits.
cat > "$T/fakeppp" <<'EOP'
#!/bin/sh
printf '\176\377\175\043\300\041\175\041\175\041\175\040\175\044\043\042\176' >&0
exec sleep 20
EOP
chmod +x "$T/fakeppp"
printf 'option %s/options\nlocalip 10.0.0.1\nremoteip 10.0.0.2-9\n' "$T" > "$T/pptpd.conf"
: > "$T/options"

ip netns exec ${P}s tshark -q -i ${P}b -w "$T/cap.pcap" -f "tcp port 1723 or ip proto 47" 2>/dev/null &
TSHARK=$!
sleep 2
ip netns exec ${P}s pptpd -f -c "$T/pptpd.conf" -e "$T/fakeppp" -p "$T/pptpd.pid" -l 203.0.113.2 &
sleep 1
# pptp-linux keeps its socket in /var/run/pptp: give it a private tmpfs.
mkdir -p /var/run/pptp
cat > "$T/client.py" <<'EOP'
import os, pty, select, signal, sys, time
# pptp --nolaunchpppd wants a pty on stdin/stdout; hold the master open.
pid, fd = pty.fork()
if pid == 0:
    os.execvp("pptp", ["pptp", "203.0.113.2", "--nolaunchpppd", "--idle-wait", "1"])
end = time.time() + float(sys.argv[1])
sent = False
while time.time() < end:
    if not sent and time.time() > end - 2.5:
        # one async-HDLC LCP Configure-Request: pptp sends it as GRE
        os.write(fd, bytes.fromhex("7eff7d23c0217d217d217d207d24d1b57e"))
        sent = True
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            os.read(fd, 4096)
        except OSError:
            break
os.close(fd)  # EOF/EIO on the pty: pptp clears the call and stops the connection
time.sleep(2)
try:
    os.kill(pid, signal.SIGTERM)
except ProcessLookupError:
    pass
EOP
ip netns exec ${P}c unshare -m sh -c "mount -t tmpfs none /var/run/pptp && python3 $T/client.py 4"
sleep 2
kill $TSHARK; wait $TSHARK 2>/dev/null || true
TSHARK=
cp "$T/cap.pcap" "$OUT.pcap"
