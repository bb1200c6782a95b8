package rules

import (
	"os"
	"strings"
	"testing"
)

func TestQueueWait(t *testing.T) {
	base := "wan: wan0\nlan: [lan0]\n"
	for in, want := range map[string]string{"": QueueWaitPoller, "queue_wait: poller\n": QueueWaitPoller, "queue_wait: syscall\n": QueueWaitSyscall} {
		c, err := Parse([]byte(base + in))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", in, err)
		}
		if c.QueueWait != want {
			t.Errorf("%q: queue_wait %q, want %q", in, c.QueueWait, want)
		}
	}
	c, err := Parse([]byte(base + "\nqueue_wait: busy\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), `line 4: queue_wait: "busy" is not one of poller, syscall`) {
		t.Errorf("Validate() = %v, want the line and key of queue_wait", err)
	}
}

func TestConfigDocCoversQueueWait(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"`queue_wait`", "`poller`", "`syscall`", "`--queue-wait`"} {
		if !strings.Contains(string(doc), k) {
			t.Errorf("CONFIG.md does not mention %s", k)
		}
	}
}
