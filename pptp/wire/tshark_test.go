package wire

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// TestTsharkDissectsAllTypes writes one sample of each of the 15 messages
// into a pcap (one TCP segment each) and checks every field Wireshark's
// PPTP dissector reports against our encoder: an independent check of the
// layouts for the types the real captures do not contain.
func TestTsharkDissectsAllTypes(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	ms := samples()
	path := filepath.Join(t.TempDir(), "all.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	seq := uint32(1000)
	for _, m := range ms {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP{203, 0, 113, 1}, DstIP: net.IP{203, 0, 113, 2}}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: ControlPort, Seq: seq, Ack: 1, ACK: true, PSH: true, Window: 1000}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		payload := m.Append(nil)
		seq += uint32(len(payload))
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, tcp, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		ci := gopacket.CaptureInfo{CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}
		if err := w.WritePacket(ci, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	names := []string{"frame.number"}
	seen := map[string]bool{}
	for _, m := range ms {
		for k := range tsharkFields(m) {
			if !seen[k] {
				seen[k] = true
				names = append(names, k)
			}
		}
	}
	args := []string{"-r", path, "-Y", "pptp", "-T", "fields", "-E", "separator=|"}
	for _, n := range names {
		args = append(args, "-e", n)
	}
	cmd := exec.Command(tshark, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(ms) {
		t.Fatalf("tshark dissected %d messages, want %d:\n%s", len(lines), len(ms), out)
	}
	for i, l := range lines {
		row := strings.Split(l, "|")
		if row[0] != strconv.Itoa(i+1) {
			t.Fatalf("row %d is frame %s", i, row[0])
		}
		// Every field we encode must be reported by tshark with our value.
		for k, v := range tsharkFields(ms[i]) {
			for j, n := range names {
				if n == k && row[j] != v {
					t.Errorf("%v: %s: tshark %q, ours %q", ms[i].Type(), k, row[j], v)
				}
			}
		}
		compareFields(t, "synthetic", names, row, ms[i])
	}
}

// TestTsharkDissectsGRE checks enhanced GRE headers built by Append
// against Wireshark's GRE dissector.
func TestTsharkDissectsGRE(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	hs := []GREHeader{
		{CallID: 0x1234, PayloadLen: 4, HasSeq: true, Seq: 7},
		{CallID: 0xbeef, HasAck: true, Ack: 0x01020304},
		{CallID: 1, PayloadLen: 4, HasSeq: true, Seq: 0xfffffffe, HasAck: true, Ack: 9},
	}
	path := filepath.Join(t.TempDir(), "gre.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeRaw); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		pkt := h.Append(nil)
		if h.PayloadLen > 0 {
			pkt = append(pkt, 0xff, 0x03, 0xc0, 0x21)
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolGRE,
			SrcIP: net.IP{203, 0, 113, 1}, DstIP: net.IP{203, 0, 113, 2}}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			ip, gopacket.Payload(pkt)); err != nil {
			t.Fatal(err)
		}
		ci := gopacket.CaptureInfo{CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}
		if err := w.WritePacket(ci, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-r", path, "-T", "fields", "-E", "separator=|",
		"-e", "gre.flags.version", "-e", "gre.proto", "-e", "gre.key.payload_length", "-e", "gre.key.call_id",
		"-e", "gre.sequence_number", "-e", "gre.ack_number")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(hs) {
		t.Fatalf("tshark: %d lines:\n%s", len(lines), out)
	}
	for i, h := range hs {
		want := []string{"1", "0x880b", strconv.Itoa(int(h.PayloadLen)), strconv.Itoa(int(h.CallID)), "", ""}
		if h.HasSeq {
			want[4] = strconv.FormatUint(uint64(h.Seq), 10)
		}
		if h.HasAck {
			want[5] = strconv.FormatUint(uint64(h.Ack), 10)
		}
		if got := strings.Split(lines[i], "|"); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%+v: tshark %q, want %q", h, got, want)
		}
	}
}
