package eventserver

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/tp0/loteria/secure"
)

// relay is a TCP proxy between agencies and the server that records every
// byte both ways. On a secured connection it also cuts each direction into
// records (kind, length, body), so that a test can look at them or change
// one on its way.
type relay struct {
	ln     net.Listener
	target string
	edit   func(r relayRecord) // may change r.bytes in place; nil forwards as is

	mu    sync.Mutex
	up    [][]relayRecord // per connection, agency to server
	down  [][]relayRecord // per connection, server to agency
	raw   bytes.Buffer    // every byte, both ways, as forwarded
	conns []net.Conn
	done  bool
	wg    sync.WaitGroup
}

// relayRecord is one record (or, on a plaintext stream, one read) that
// went through the relay.
type relayRecord struct {
	conn  int  // the relay's connection number, from 0
	up    bool // agency to server
	index int  // its place in that direction of that connection
	bytes []byte
}

// startRelay listens on 127.0.0.1 and forwards every connection to target
// until the test ends.
func startRelay(t testing.TB, target string, edit func(relayRecord)) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target, edit: edit}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", r.target)
		if err != nil {
			in.Close()
			continue
		}
		r.mu.Lock()
		if r.done {
			r.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		n := len(r.up)
		r.up, r.down = append(r.up, nil), append(r.down, nil)
		r.conns = append(r.conns, in, out)
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(n, true, in, out)
		go r.pump(n, false, out, in)
	}
}

// pump forwards src to dst record by record while the stream looks like
// records, and as it comes otherwise; at the end it closes both.
func (r *relay) pump(n int, up bool, src, dst net.Conn) {
	defer r.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 0, secure.MaxRecordSize)
	records := true
	for index := 0; ; index++ {
		var b []byte
		if records {
			head := buf[:secure.HeaderSize]
			if _, err := io.ReadFull(src, head); err != nil {
				return
			}
			switch head[0] {
			case secure.KindHandshake1, secure.KindHandshake2, secure.KindTransport:
				size := int(binary.BigEndian.Uint16(head[1:]))
				b = buf[:secure.HeaderSize+size]
				if _, err := io.ReadFull(src, b[secure.HeaderSize:]); err != nil {
					return
				}
			default:
				records, b = false, head // plaintext: forward as it comes from here on
			}
		} else {
			k, err := src.Read(buf[:cap(buf)])
			if err != nil {
				return
			}
			b = buf[:k]
		}
		rec := relayRecord{conn: n, up: up, index: index, bytes: append([]byte(nil), b...)}
		if r.edit != nil {
			r.edit(rec)
		}
		r.mu.Lock()
		if up {
			r.up[n] = append(r.up[n], rec)
		} else {
			r.down[n] = append(r.down[n], rec)
		}
		r.raw.Write(rec.bytes)
		r.mu.Unlock()
		if _, err := dst.Write(rec.bytes); err != nil {
			return
		}
	}
}

// records returns what went through connection n in one direction.
func (r *relay) records(n int, up bool) []relayRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n >= len(r.up) {
		return nil
	}
	if up {
		return append([]relayRecord(nil), r.up[n]...)
	}
	return append([]relayRecord(nil), r.down[n]...)
}

// captured returns every byte forwarded so far, both ways.
func (r *relay) captured() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.raw.Bytes())
}

func (r *relay) connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.up)
}

func (r *relay) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	r.done = true
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
