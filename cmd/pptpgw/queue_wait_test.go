package main

import (
	"flag"
	"strings"
	"testing"

	"pptpgw/nat/nfq"
	"pptpgw/rules"
)

func TestQueueWaitSetting(t *testing.T) {
	for s, want := range map[string]nfq.WaitMode{rules.QueueWaitPoller: nfq.WaitPoller, rules.QueueWaitSyscall: nfq.WaitSyscall, "": nfq.WaitPoller} {
		if got := nfqWait(s); got != want {
			t.Errorf("nfqWait(%q) = %v, want %v", s, got, want)
		}
	}
	a := queueWaitApplier(rules.QueueWaitPoller)
	if err := a.Apply(&rules.Config{QueueWait: rules.QueueWaitPoller}); err != nil {
		t.Errorf("same queue_wait: %v", err)
	}
	if err := a.Apply(&rules.Config{}); err != nil {
		t.Errorf("queue_wait not given: %v", err)
	}
	err := a.Apply(&rules.Config{QueueWait: rules.QueueWaitSyscall})
	if err == nil || !strings.Contains(err.Error(), "needs a restart") {
		t.Errorf("changed queue_wait: %v, want a restart error", err)
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	v := addQueueWaitFlag(fs)
	if err := fs.Parse([]string{"--queue-wait", "syscall"}); err != nil || *v != "syscall" {
		t.Errorf("--queue-wait syscall: %q, %v", *v, err)
	}
}
