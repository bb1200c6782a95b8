package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
)

// memoryReply answers the admin command "memory" of `pptpgw run` (issue
// 12: how `pptpgw bench` measures the daemon's memory per live call): a
// forced garbage collection that also returns freed memory to the kernel
// (runtime/debug.FreeOSMemory), then the Go heap in use and the process's
// resident set. A collection stops the world for well under a millisecond
// at 10,000 calls; the command is for measurements, not for monitoring.
type memoryReply struct {
	HeapInuse   uint64 `json:"heap_inuse_bytes"`
	HeapObjects uint64 `json:"heap_objects"`
	Sys         uint64 `json:"sys_bytes"` // what the Go runtime holds from the kernel
	RSS         uint64 `json:"rss_bytes"` // VmRSS of /proc/self/status
	Goroutines  int    `json:"goroutines"`
	// Memory (issue 12): where the runtime's memory goes, from
	// runtime/metrics /memory/classes/ (names without that prefix and the
	// ":bytes" suffix, e.g. "heap/objects", "metadata/mspan/inuse",
	// "os-stacks"), to see what the resident set holds beyond the heap.
	Classes map[string]uint64 `json:"classes,omitempty"`
	// VmRSS's parts (/proc/self/status): anonymous memory (the runtime's
	// heap, stacks and metadata) and file-backed pages (the binary's code
	// and data as far as it has run: they grow the first time a code path
	// runs, not per call; shared and reclaimable).
	RSSAnon uint64 `json:"rss_anon_bytes,omitempty"`
	RSSFile uint64 `json:"rss_file_bytes,omitempty"`
}

// memoryProfiled is memoryNow, then, if file is not "", a heap profile of
// the live objects written to file (`go tool pprof -sample_index=inuse_space`;
// the runtime samples one allocation per 512 KiB by default, so small
// objects' figures are estimates).
func memoryProfiled(file string) (memoryReply, error) {
	r, err := memoryNow()
	if err != nil || file == "" {
		return r, err
	}
	f, err := os.Create(file)
	if err != nil {
		return r, err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return r, err
	}
	return r, f.Close()
}

// memProfileFile is `pptpgw run --memprofile`: where the admin command
// memory writes a heap profile, "" for none.
var memProfileFile string

// setMemProfile sets memProfileFile and, when a profile is asked for,
// samples one allocation per 4 KiB instead of 512 KiB: fine enough to see
// objects of a few hundred bytes per call, too costly to be the default.
func setMemProfile(file string) {
	memProfileFile = file
	if file != "" {
		runtime.MemProfileRate = 4096
	}
}

// memoryClasses reads every /memory/classes/ metric of runtime/metrics.
func memoryClasses() map[string]uint64 {
	var ss []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, memClassPrefix) && d.Kind == metrics.KindUint64 {
			ss = append(ss, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(ss)
	out := make(map[string]uint64, len(ss))
	for _, s := range ss {
		if s.Value.Kind() == metrics.KindUint64 {
			out[strings.TrimSuffix(strings.TrimPrefix(s.Name, memClassPrefix), ":bytes")] = s.Value.Uint64()
		}
	}
	return out
}

const memClassPrefix = "/memory/classes/"

func memoryNow() (memoryReply, error) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st, err := procStatus(os.Getpid(), "VmRSS", "RssAnon", "RssFile")
	return memoryReply{HeapInuse: ms.HeapInuse, HeapObjects: ms.HeapObjects, Sys: ms.Sys, RSS: st[0],
		Goroutines: runtime.NumGoroutine(), Classes: memoryClasses(), RSSAnon: st[1], RSSFile: st[2]}, err
}

// vmRSS is VmRSS of process pid, in bytes.
func vmRSS(pid int) (uint64, error) {
	v, err := procStatus(pid, "VmRSS")
	return v[0], err
}

// procStatus returns fields (in kB there) of /proc/pid/status, in bytes.
func procStatus(pid int, fields ...string) ([]uint64, error) {
	out := make([]uint64, len(fields))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out, err
	}
	found := 0
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		for i, name := range fields {
			if f[0] == name+":" {
				kb, err := strconv.ParseUint(f[1], 10, 64)
				if err != nil {
					return out, fmt.Errorf("/proc/%d/status: %s: %w", pid, name, err)
				}
				out[i] = kb * 1024
				found++
			}
		}
	}
	if found < len(fields) {
		return out, fmt.Errorf("/proc/%d/status: not all of %v", pid, fields)
	}
	return out, nil
}
