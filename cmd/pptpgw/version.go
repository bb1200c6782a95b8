package main

import (
	"fmt"
	"runtime/debug"
)

// version is set at link time with -ldflags "-X main.version=..."; otherwise
// it is derived from the module's build information.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel (" + bi.GoVersion + ")"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev + " (" + bi.GoVersion + ")"
}

func cmdVersion(args []string) int {
	fmt.Println("pptpgw", versionString())
	return 0
}
