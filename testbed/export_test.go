package testbed

// CreateNamedNS lets package testbed_test make a namespace that clashes
// with a topology's.
var CreateNamedNS = createNamedNS

// SendGRE sends one GRE packet per key from a namespace (sendGRE).
var SendGRE = sendGRE
