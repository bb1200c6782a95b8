package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Segment is one TCP segment of a captured control connection
// (testdata/NAME.segments.txt, written by testdata/extract.sh).
type segment struct {
	Frame    int
	Src, Dst uint16
	Seq      uint32
	Flags    string // tshark's tcp.flags.str, e.g. "·······AP···"
	Payload  []byte
}

func loadSegments(t testing.TB, name string) []segment {
	t.Helper()
	f, err := os.Open("testdata/" + name + ".segments.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var segs []segment
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			t.Fatalf("bad line %q", sc.Text())
		}
		var s segment
		s.Frame, _ = strconv.Atoi(fs[0])
		src, _ := strconv.Atoi(fs[1])
		dst, _ := strconv.Atoi(fs[2])
		seq, _ := strconv.ParseUint(fs[3], 10, 32)
		s.Src, s.Dst, s.Seq, s.Flags = uint16(src), uint16(dst), uint32(seq), fs[4]
		if len(fs) > 5 {
			if s.Payload, err = hex.DecodeString(fs[5]); err != nil {
				t.Fatal(err)
			}
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		t.Fatalf("%s: no segments", name)
	}
	return segs
}

// splitMessages cuts a payload holding whole messages.
func splitMessages(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		n, _, err := PeekHeader(b)
		if err != nil || n > len(b) {
			t.Fatalf("PeekHeader(% x) = %d, %v", b[:min(len(b), HeaderLen)], n, err)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// tsharkFields renders m as tshark names its PPTP fields.
func tsharkFields(m Message) map[string]string {
	u := func(v any) string {
		switch v := v.(type) {
		case uint8:
			return strconv.Itoa(int(v))
		case uint16:
			return strconv.Itoa(int(v))
		case uint32:
			return strconv.FormatUint(uint64(v), 10)
		}
		panic("type")
	}
	f := map[string]string{
		"pptp.control_message_type": u(uint16(m.Type())),
		"pptp.length":               strconv.Itoa(m.Type().Len()),
	}
	switch m := m.(type) {
	case *SCCRQ:
		f["pptp.protocol_version"] = u(m.ProtocolVersion)
		f["pptp.framing_capabilities"], f["pptp.bearer_capabilities"] = u(m.FramingCaps), u(m.BearerCaps)
		f["pptp.maximum_channels"], f["pptp.firmware_revision"] = u(m.MaxChannels), u(m.FirmwareRevision)
		f["pptp.host_name"], f["pptp.vendor_name"] = m.Hostname, m.Vendor
	case *SCCRP:
		f["pptp.protocol_version"] = u(m.ProtocolVersion)
		f["pptp.control_result"], f["pptp.error"] = u(m.Result), u(m.Error)
		f["pptp.framing_capabilities"], f["pptp.bearer_capabilities"] = u(m.FramingCaps), u(m.BearerCaps)
		f["pptp.maximum_channels"], f["pptp.firmware_revision"] = u(m.MaxChannels), u(m.FirmwareRevision)
		f["pptp.host_name"], f["pptp.vendor_name"] = m.Hostname, m.Vendor
	case *StopCCRQ:
		f["pptp.reason"] = u(m.Reason)
	case *StopCCRP:
		f["pptp.stop_result"], f["pptp.error"] = u(m.Result), u(m.Error)
	case *EchoRQ:
		f["pptp.identifier"] = u(m.ID)
	case *EchoRP:
		f["pptp.identifier"], f["pptp.echo_result"], f["pptp.error"] = u(m.ID), u(m.Result), u(m.Error)
	case *OCRQ:
		f["pptp.call_id"], f["pptp.call_serial_number"] = u(m.CallID), u(m.CallSerial)
		f["pptp.minimum_bps"], f["pptp.maximum_bps"] = u(m.MinBPS), u(m.MaxBPS)
		f["pptp.bearer_type"], f["pptp.framing_type"] = u(m.BearerType), u(m.FramingType)
		f["pptp.packet_receive_window_size"], f["pptp.packet_processing_delay"] = u(m.RecvWindow), u(m.ProcessingDelay)
		f["pptp.phone_number_length"] = u(m.PhoneNumberLen)
		f["pptp.phone_number"], f["pptp.subaddress"] = m.PhoneNumber, m.Subaddress
	case *OCRP:
		f["pptp.call_id"], f["pptp.peer_call_id"] = u(m.CallID), u(m.PeerCallID)
		f["pptp.out_result"], f["pptp.error"], f["pptp.cause"] = u(m.Result), u(m.Error), u(m.Cause)
		f["pptp.connect_speed"] = u(m.ConnectSpeed)
		f["pptp.packet_receive_window_size"], f["pptp.packet_processing_delay"] = u(m.RecvWindow), u(m.ProcessingDelay)
		f["pptp.physical_channel_id"] = u(m.PhysChannelID)
	case *ICRQ:
		f["pptp.call_id"], f["pptp.call_serial_number"] = u(m.CallID), u(m.CallSerial)
		f["pptp.bearer_type"], f["pptp.physical_channel_id"] = u(m.BearerType), u(m.PhysChannelID)
		f["pptp.dialed_number_length"], f["pptp.dialing_number_length"] = u(m.DialedNumberLen), u(m.DialingNumberLen)
		f["pptp.dialed_number"], f["pptp.dialing_number"] = m.DialedNumber, m.DialingNumber
		f["pptp.subaddress"] = m.Subaddress
	case *ICRP:
		f["pptp.call_id"], f["pptp.peer_call_id"] = u(m.CallID), u(m.PeerCallID)
		f["pptp.in_result"], f["pptp.error"] = u(m.Result), u(m.Error)
		f["pptp.packet_receive_window_size"], f["pptp.packet_processing_delay"] = u(m.RecvWindow), u(m.TransmitDelay)
	case *ICCN:
		f["pptp.peer_call_id"], f["pptp.connect_speed"] = u(m.PeerCallID), u(m.ConnectSpeed)
		f["pptp.packet_receive_window_size"], f["pptp.packet_processing_delay"] = u(m.RecvWindow), u(m.TransmitDelay)
		f["pptp.framing_type"] = u(m.FramingType)
	case *CCRQ:
		f["pptp.call_id"] = u(m.CallID)
	case *CDN:
		f["pptp.call_id"], f["pptp.disc_result"], f["pptp.error"] = u(m.CallID), u(m.Result), u(m.Error)
		f["pptp.cause"], f["pptp.call_Statistics"] = u(m.Cause), m.CallStats
	case *WEN:
		f["pptp.peer_call_id"] = u(m.PeerCallID)
		f["pptp.crc_errors"], f["pptp.framing_errors"] = u(m.CRCErrors), u(m.FramingErrors)
		f["pptp.hardware_overruns"], f["pptp.buffer_overruns"] = u(m.HardwareOverruns), u(m.BufferOverruns)
		f["pptp.timeout_errors"], f["pptp.alignment_errors"] = u(m.TimeoutErrors), u(m.AlignmentErrors)
	case *SLI:
		f["pptp.peer_call_id"] = u(m.PeerCallID)
		// tshark prints BASE_HEX fields as 0x%08x.
		f["pptp.send_accm"] = "0x" + strconv.FormatUint(uint64(m.SendACCM)|1<<32, 16)[1:]
		f["pptp.receive_accm"] = "0x" + strconv.FormatUint(uint64(m.RecvACCM)|1<<32, 16)[1:]
	}
	for k, v := range f {
		if i := strings.IndexByte(v, 0); i >= 0 && strings.HasPrefix(k, "pptp.") {
			f[k] = v[:i] // tshark shows strings up to the first NUL
		}
	}
	return f
}

// loadFields reads NAME.fields.txt: a "# name name ..." line, then one
// '|'-separated line per PPTP frame (tshark reports the first message).
func loadFields(t testing.TB, path string) (names []string, rows [][]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	names = strings.Fields(strings.TrimPrefix(lines[0], "#"))
	for _, l := range lines[1:] {
		r := strings.Split(l, "|")
		if len(r) != len(names) {
			t.Fatalf("%s: %d columns, want %d: %q", path, len(r), len(names), l)
		}
		rows = append(rows, r)
	}
	return names, rows
}

// compareFields checks every non-empty tshark column against our decode.
func compareFields(t *testing.T, label string, names, row []string, m Message) {
	t.Helper()
	ours := tsharkFields(m)
	for i, name := range names {
		if name == "frame.number" || row[i] == "" {
			continue
		}
		got, ok := ours[name]
		if !ok {
			t.Errorf("%s %v: tshark has %s=%s, decoder has no such field", label, m.Type(), name, row[i])
			continue
		}
		if got != row[i] {
			t.Errorf("%s %v: %s = %q, tshark says %q", label, m.Type(), name, got, row[i])
		}
	}
}

// TestCapture decodes every control message pptp-linux and pptpd exchanged,
// checks the fields against tshark's dissection of the same capture and
// checks that each message re-encodes to the captured bytes.
func TestCapture(t *testing.T) {
	for _, name := range []string{"long", "clear"} {
		t.Run(name, func(t *testing.T) {
			byFrame := map[int][]Message{}
			types := map[MsgType]int{}
			for _, s := range loadSegments(t, name) {
				for _, raw := range splitMessages(t, s.Payload) {
					m, err := Decode(raw)
					if err != nil {
						t.Fatalf("frame %d: %v", s.Frame, err)
					}
					if again := m.Append(nil); !bytes.Equal(again, raw) {
						t.Errorf("frame %d %v: re-encoded\n% x\nwant\n% x", s.Frame, m.Type(), again, raw)
					}
					byFrame[s.Frame] = append(byFrame[s.Frame], m)
					types[m.Type()]++
				}
			}
			names, rows := loadFields(t, "testdata/"+name+".fields.txt")
			for _, r := range rows {
				frame, _ := strconv.Atoi(r[0])
				ms := byFrame[frame]
				if len(ms) == 0 {
					t.Fatalf("tshark saw PPTP in frame %d, we did not", frame)
				}
				compareFields(t, "frame "+r[0], names, r, ms[0])
			}
			for _, typ := range []MsgType{StartCtrlConnRequest, StartCtrlConnReply, OutgoingCallRequest,
				OutgoingCallReply, EchoRequest, EchoReply} {
				if types[typ] == 0 {
					t.Errorf("capture has no %v", typ)
				}
			}
			t.Logf("%s: %v", name, types)
		})
	}
}
