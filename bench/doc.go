// Package bench measures the event server with thousands of concurrent
// agencies, side by side with a goroutine-per-connection server that does
// the same work (the same session, window and liveness, hub, store and
// Noise transport) over Go's net package, and next to the machine's own
// limits (loopback TCP and append+fsync on the data disk).
//
// The servers run at their defaults: secured (keys written by bin/keygen),
// default log level and window. Each runs as a separate process on
// loopback with a fresh data directory; one bench process drives every
// agency (pipelined up to the window WELCOME announces, every ACK's chain,
// the receipt, the commitment and the winners checked), samples the
// server's memory and CPU from /proc, checks the stored bets against what
// was sent, then restarts the server on the same data and reconnects every
// agency at once (a reconnect storm). The same invocation can compare
// secured with --insecure and metrics on with off, estimate what the
// chain's hashing costs, and time real bin/agency processes end to end
// over files bin/gendata writes (the course's five, or two big ones).
//
// With --store (RunScaleOut) it measures the store instead: at each K,
// the gnet server on the file store, then one and two gnet front ends
// sharing one PostgreSQL database, the agencies split across them; bets/s,
// ACK latency and the commit latency each front end's /metrics reports.
package bench
