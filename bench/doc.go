// Package bench measures the event server with thousands of concurrent
// agencies, side by side with a goroutine-per-connection server that runs
// the same session, hub and store over Go's net package, and next to the
// machine's own limits (loopback TCP and append+fsync on the data disk).
//
// Each server under test runs as a separate process on loopback with a
// fresh data directory; one bench process drives every agency, samples the
// server's memory and CPU from /proc, and checks the stored result before
// it reports a number.
package bench
