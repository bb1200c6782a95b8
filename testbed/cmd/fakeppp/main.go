// Command fakeppp stands in for pppd in PPTP interop tests: run by pptpd via
// -e it echoes HDLC frames on its pty; "fakeppp client" sends tagged frames on
// stdin/stdout and checks they come back. See package pptpgw/testbed/fakeppp.
package main

import (
	"os"

	"pptpgw/testbed/fakeppp"
)

func main() { os.Exit(fakeppp.Main(os.Args[1:])) }
