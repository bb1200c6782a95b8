#!/bin/sh
# Derives the text fixtures from NAME.pcap (needs tshark): sh extract.sh NAME
#   NAME.segments.txt: every TCP segment: frame srcport dstport seq(absolute) flags payload-hex
#   NAME.fields.txt: tshark's PPTP dissection of every control message (one line per message)
set -eu
N=${1:?usage: extract.sh NAME}
tshark -r "$N.pcap" -o tcp.relative_sequence_numbers:FALSE -T fields -E separator=' ' \
	-Y tcp -e frame.number -e tcp.srcport -e tcp.dstport -e tcp.seq -e tcp.flags.str -e tcp.payload \
	| sed 's/ *$//' > "$N.segments.txt"
F="frame.number pptp.control_message_type pptp.length pptp.call_id pptp.peer_call_id
pptp.identifier pptp.protocol_version pptp.control_result pptp.out_result pptp.echo_result pptp.error
pptp.framing_capabilities pptp.bearer_capabilities pptp.maximum_channels pptp.firmware_revision
pptp.call_serial_number pptp.minimum_bps pptp.maximum_bps pptp.bearer_type pptp.framing_type
pptp.packet_receive_window_size pptp.packet_processing_delay pptp.phone_number_length
pptp.connect_speed pptp.physical_channel_id pptp.cause pptp.host_name pptp.vendor_name"
ARGS=""
for f in $F; do ARGS="$ARGS -e $f"; done
{ echo "#" $F; tshark -r "$N.pcap" -Y pptp -T fields -E separator='|' -E occurrence=a -E aggregator=, $ARGS; } > "$N.fields.txt"
