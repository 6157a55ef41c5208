package secure

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

// loopServer runs ServerConns over TCP connections the way an event loop
// does: it reads what arrives in chunks of the sizes chunk returns (so
// records arrive split anywhere), steps the ServerConn and answers every
// frame with what handle returns. Unknown keys get a plaintext ERROR.
type loopServer struct {
	t      *testing.T
	keys   *KeyStore
	ln     net.Listener
	chunk  func() int
	handle func(agency uint32, f frame.Frame) []frame.Frame
	wrap   func(net.Conn) net.Conn // records the server's side, when set
	errs   chan error              // one per connection served
	wg     sync.WaitGroup
}

func newLoopServer(t *testing.T, keys *KeyStore, chunk func() int, handle func(uint32, frame.Frame) []frame.Frame) *loopServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &loopServer{t: t, keys: keys, ln: ln, chunk: chunk, handle: handle, errs: make(chan error, 16)}
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// start serves the next connection in the background.
func (s *loopServer) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c, err := s.ln.Accept()
		if err != nil {
			s.errs <- err
			return
		}
		defer c.Close()
		if s.wrap != nil {
			c = s.wrap(c)
		}
		s.errs <- s.serve(c)
	}()
}

func (s *loopServer) dial(t *testing.T) net.Conn {
	t.Helper()
	s.start()
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *loopServer) serve(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	src := &memSource{}
	sc := NewServerConn(s.keys, src)
	buf := make([]byte, 3*MaxRecordSize)
	var dec frame.Decoder
	var out []byte
	for {
		n, err := c.Read(buf[:min(max(s.chunk(), 1), len(buf))])
		src.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if !sc.Established() {
			reply, err := sc.Handshake()
			switch {
			case errors.Is(err, frame.ErrIncomplete):
				continue
			case errors.Is(err, ErrUnknownKey):
				frame.Write(c, &frame.Error{Code: frame.CodeUnknownAgency, Reason: "key not on file"})
				return err
			case err != nil:
				return err
			}
			if _, err := c.Write(reply); err != nil {
				return err
			}
		}
		for {
			f, err := dec.Next(sc)
			if errors.Is(err, frame.ErrIncomplete) {
				break
			}
			if err != nil {
				return err
			}
			for _, r := range s.handle(sc.Agency(), f) {
				b, err := frame.Encode(r)
				if err != nil {
					return err
				}
				if out, err = sc.Seal(out[:0], b); err != nil {
					return err
				}
				if _, err := c.Write(out); err != nil {
					return err
				}
			}
		}
	}
}

// echo answers HELLO with WELCOME holding the proven agency id and echoes
// every other frame.
func echo(agency uint32, f frame.Frame) []frame.Frame {
	if _, ok := f.(*frame.Hello); ok {
		return []frame.Frame{&frame.Welcome{Held: uint64(agency)}}
	}
	return []frame.Frame{f}
}

func TestTCPSession(t *testing.T) {
	fx := newFixture(t, 4)
	rng := rand.New(rand.NewPCG(3, 4))
	var mu sync.Mutex
	chunkings := map[string]func() int{
		"byte by byte": func() int { return 1 },
		"random":       func() int { mu.Lock(); defer mu.Unlock(); return 1 + rng.IntN(2*MaxRecordSize) },
		"large":        func() int { return 1 << 20 },
	}
	for name, chunk := range chunkings {
		t.Run(name, func(t *testing.T) {
			srv := newLoopServer(t, fx.keys, chunk, echo)
			cc, err := Client(srv.dial(t), fx.agencies[3], fx.server.Public(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var dec frame.Decoder
			if err := cc.WriteFrame(&frame.Hello{Agency: 4}); err != nil {
				t.Fatal(err)
			}
			f, err := dec.Next(cc)
			if w, ok := f.(*frame.Welcome); err != nil || !ok || w.Held != 4 {
				t.Fatalf("answer to HELLO: %v, %v; want WELCOME from proven agency 4", f, err)
			}
			// One goroutine writes while this one reads.
			frames := sampleFrames(t)
			var parsed []frame.Frame
			for _, f := range frames[1:] {
				parsed = append(parsed, mustParse(t, f))
			}
			done := make(chan error, 1)
			go func() {
				for _, f := range parsed {
					if err := frame.Write(cc, f); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for i, want := range frames[1:] {
				f, err := dec.Next(cc)
				if err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
				if got := mustEncode(t, f); !bytes.Equal(got, want) {
					t.Errorf("echo %d differs", i)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			cc.Close()
			if err := <-srv.errs; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
}

// mustParse decodes one encoded frame.
func mustParse(t testing.TB, b []byte) frame.Frame {
	t.Helper()
	var dec frame.Decoder
	f, err := dec.Next(&memSource{buf: bytes.Clone(b)}) // Discard poisons what it drops
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestUnknownKeyIsRefused(t *testing.T) {
	fx := newFixture(t, 1)
	srv := newLoopServer(t, fx.keys, func() int { return 4096 }, echo)
	_, err := Client(srv.dial(t), testKey(t, 55), fx.server.Public(), 5*time.Second)
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != frame.CodeUnknownAgency {
		t.Fatalf("Client with an unknown key: %v, want a *RefusedError unknown_agency", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "unknown_agency") || !strings.Contains(msg, "key not on file") {
		t.Errorf("error %q does not name the code and reason", msg)
	}
	if err := <-srv.errs; !errors.Is(err, ErrUnknownKey) {
		t.Errorf("server: %v, want ErrUnknownKey", err)
	}
}

// TestHandshakeAnswers checks what Client makes of the answers a server may
// give to message 1.
func TestHandshakeAnswers(t *testing.T) {
	fx := newFixture(t, 1)
	pong := mustEncode(t, &frame.Pong{})
	refuse := mustEncode(t, &frame.Error{Code: frame.CodeTooManyConns, Reason: "full"})
	cases := []struct {
		name   string
		answer []byte
		want   error
	}{
		{"refusal", refuse, nil},
		{"plaintext PONG", pong, ErrHandshake},
		{"bad plaintext", []byte{frame.Version, 0xEE, 0, 0}, ErrHandshake},
		{"transport record", []byte{KindTransport, 0, 20}, ErrRecord},
		{"oversize message 2", []byte{KindHandshake2, 0, Handshake2Size + 1}, ErrRecord},
		{"garbage message 2", append([]byte{KindHandshake2, 0, Handshake2Size}, make([]byte, Handshake2Size)...), ErrHandshake},
		{"cut message 2", []byte{KindHandshake2, 0, Handshake2Size, 1, 2}, io.ErrUnexpectedEOF},
		{"silence", nil, io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := &memConn{answer: func(c *memConn) {
				c.inbox.Write(tc.answer)
				c.answer = nil
			}}
			_, err := Client(conn, fx.agencies[0], fx.server.Public(), time.Second)
			if tc.want == nil {
				var re *RefusedError
				if !errors.As(err, &re) || re.Code != frame.CodeTooManyConns || re.Reason != "full" {
					t.Errorf("got %v, want a *RefusedError", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c) // never answers
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = Client(c, testKey(t, 1), testKey(t, 2).Public(), 100*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("silent server: %v after %v, want a deadline error after 100ms", err, time.Since(start))
	}
}

func TestClientDecryptFailure(t *testing.T) {
	fx := newFixture(t, 1)
	s := newSession(t, fx, 1, nil)
	rec, err := s.server.Seal(nil, mustEncode(t, &frame.Ping{Payload: []byte("abc")}))
	if err != nil {
		t.Fatal(err)
	}
	rec[HeaderSize+5] ^= 0x80
	s.conn.inbox.Write(rec)
	if _, err := s.client.Peek(frame.HeaderSize); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered record: %v, want ErrDecrypt", err)
	}
	// The failure sticks even once a good record follows.
	good, _ := s.server.Seal(nil, mustEncode(t, &frame.Ping{}))
	s.conn.inbox.Write(good)
	if _, err := s.client.Peek(frame.HeaderSize); !errors.Is(err, ErrDecrypt) {
		t.Errorf("after a failure: %v, want ErrDecrypt again", err)
	}
	s2 := newSession(t, fx, 1, nil)
	s2.conn.inbox.Write([]byte{KindTransport, 0, 30, 1, 2})
	if _, err := s2.client.Peek(1); err != io.ErrUnexpectedEOF {
		t.Errorf("connection ends inside a record: %v, want io.ErrUnexpectedEOF", err)
	}
}

// recorder keeps a copy of every byte read from or written to a connection.
type recorder struct {
	net.Conn
	mu  *sync.Mutex
	log *bytes.Buffer
}

func (r recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.log.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.log.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// TestNothingInTheClear records a session carrying personal data and checks
// that none of it crosses the wire readable.
func TestNothingInTheClear(t *testing.T) {
	const agency = 4242
	fx := sparseFixture(t, agency, agency)
	var mu sync.Mutex
	var wire bytes.Buffer
	bet := frame.Bet{FirstName: "Valentina", LastName: "Ortega", Document: "30904465",
		Birthdate: frame.NewDate(1999, 3, 17), Number: 7574}
	srv := newLoopServer(t, fx.keys, func() int { return 4096 }, func(a uint32, f frame.Frame) []frame.Frame {
		switch f := f.(type) {
		case *frame.Hello:
			return []frame.Frame{&frame.Welcome{}}
		case *frame.Bets:
			return []frame.Frame{&frame.Ack{First: f.First, Count: uint16(len(f.Bets))}}
		}
		return []frame.Frame{&frame.Winners{Last: true, Documents: []string{bet.Document}}}
	})
	srv.wrap = func(c net.Conn) net.Conn { return recorder{c, &mu, &wire} }
	cc, err := Client(srv.dial(t), fx.agencies[agency-1], fx.server.Public(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var dec frame.Decoder
	for _, f := range []frame.Frame{&frame.Hello{Agency: agency}, &frame.Bets{Bets: []frame.Bet{bet}}, &frame.QueryWinners{}} {
		if err := cc.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		if _, err := dec.Next(cc); err != nil {
			t.Fatal(err)
		}
	}
	cc.Close()
	if err := <-srv.errs; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if wire.Len() < 200 {
		t.Fatalf("recorded only %d bytes", wire.Len())
	}
	for _, secret := range []string{bet.FirstName, bet.LastName, bet.Document, strconv.Itoa(agency), "7574"} {
		if bytes.Contains(wire.Bytes(), []byte(secret)) {
			t.Errorf("%q crosses the wire in the clear", secret)
		}
	}
}

// TestIdentityKeepsOnlyTheServerDH reconnects with one Identity: every
// handshake works, and the only DH it remembers is the one with the
// server's static key (never one with an ephemeral key).
func TestIdentityKeepsOnlyTheServerDH(t *testing.T) {
	fx := newFixture(t, 1)
	ident := NewIdentity(fx.agencies[0])
	if ident.Public() != fx.agencies[0].Public() {
		t.Fatalf("identity public key %s, the key's is %s", ident.Public(), fx.agencies[0].Public())
	}
	for i := range 3 {
		s := newSessionAs(t, fx, ident, nil)
		s.client.WriteFrame(&frame.Hello{Agency: 1})
		s.toServer()
		got, _ := decodeAll(s.server)
		if want := mustEncode(t, &frame.Hello{Agency: 1}); len(got) != 1 || !bytes.Equal(got[0], want) {
			t.Fatalf("handshake %d: server decoded %x, want %x", i+1, got, want)
		}
	}
	kept := map[PublicKey][]byte{}
	ident.dhs.m.Range(func(k, v any) bool {
		kept[PublicKey(k.([KeySize]byte))] = v.([]byte)
		return true
	})
	priv, err := ecdh.X25519().NewPrivateKey(fx.agencies[0][:])
	if err != nil {
		t.Fatal(err)
	}
	server := fx.server.Public()
	pub, err := ecdh.X25519().NewPublicKey(server[:])
	if err != nil {
		t.Fatal(err)
	}
	want, err := priv.ECDH(pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 1 || !bytes.Equal(kept[fx.server.Public()], want) {
		t.Errorf("identity keeps %d DHs %x, want only the server key's %x", len(kept), kept, want)
	}
}

// trickle hands out what it holds a few bytes at a time, as a slow network
// would, then io.EOF.
type trickle struct {
	data []byte
	step int
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, t.data[:min(len(t.data), t.step)])
	t.data = t.data[n:]
	return n, nil
}

// A recordReader hands back exactly what arrived, record by record, in
// pieces of any size; its buffer starts small and grows only as far as the
// largest record, never past MaxRecordSize.
func TestRecordReaderGrowsToTheLargestRecord(t *testing.T) {
	sizes := []int{3, 40, 2, MaxRecordSize, 100, MaxRecordSize - 1, 17}
	var stream []byte
	for i, n := range sizes {
		stream = append(stream, bytes.Repeat([]byte{byte(i + 1)}, n)...)
	}
	for _, step := range []int{1, 7, 500, 1 << 20} {
		rr := &recordReader{r: &trickle{data: slices.Clone(stream), step: step}}
		for i, n := range sizes {
			b, err := rr.Peek(n)
			if err != nil || len(b) != n || !bytes.Equal(b, bytes.Repeat([]byte{byte(i + 1)}, n)) {
				t.Fatalf("step %d, record %d: Peek(%d) = %d bytes, %v", step, i, n, len(b), err)
			}
			if i == 0 && cap(rr.buf) != recordReaderStart && step < recordReaderStart {
				t.Errorf("step %d: buffer of %d bytes for a %d-byte record, want %d", step, cap(rr.buf), n, recordReaderStart)
			}
			if cap(rr.buf) > MaxRecordSize {
				t.Fatalf("step %d: buffer grew to %d bytes, past a record", step, cap(rr.buf))
			}
			if _, err := rr.Discard(n); err != nil {
				t.Fatal(err)
			}
		}
		if b, err := rr.Peek(1); err != io.EOF || len(b) != 0 {
			t.Errorf("step %d: after the last record Peek gave %d bytes, %v; want io.EOF", step, len(b), err)
		}
	}
	if _, err := (&recordReader{r: &trickle{data: []byte{1}}}).Peek(MaxRecordSize + 1); !errors.Is(err, ErrRecord) {
		t.Errorf("a peek past a record: %v, want ErrRecord", err)
	}
}

// TestWindowWriteReusesBuffer: connections that each send a window of
// frames once (thousands of agencies in one bench process) seal into a
// shared buffer sized once, instead of each growing one record at a time.
func TestWindowWriteReusesBuffer(t *testing.T) {
	fx := newFixture(t, 1)
	s := newSession(t, fx, 1, nil)
	window := bytes.Repeat(frame4K(t), 16)
	allocs := testing.AllocsPerRun(50, func() {
		c := &ClientConn{conn: s.client.conn, send: s.client.send}
		s.conn.sent.Reset()
		if _, err := c.Write(window); err != nil {
			t.Fatal(err)
		}
		if want := len(window) + 16*(HeaderSize+TagSize); s.conn.sent.Len() != want {
			t.Fatalf("one write sent %d bytes, want %d", s.conn.sent.Len(), want)
		}
	})
	// The race detector makes sync.Pool drop some of what it is given, so
	// allow an allocation now and then; growing record by record costs dozens.
	if allocs > 3 {
		t.Errorf("a window write on a fresh connection allocates %.1f times, want at most 3", allocs)
	}
}

// countingReader counts the reads made of it.
type countingReader struct {
	io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.Reader.Read(p)
}

// The draw's push to an agency, a COMMITMENT whose proof covers 10,000
// agencies followed by its WINNERS, is taken in a single read.
func TestRecordReaderTakesTheDrawsPushInOneRead(t *testing.T) {
	c := &frame.Commitment{Agencies: 10000, Proof: make([]frame.Hash, 14)}
	w := &frame.Winners{Last: true, Documents: []string{"30904465", "31291379", "33099270"}}
	var stream []byte
	var sizes []int
	for _, f := range []frame.Frame{c, w} {
		body := len(mustEncode(t, f)) + TagSize
		rec := append([]byte{KindTransport, byte(body >> 8), byte(body)}, make([]byte, body)...)
		stream = append(stream, rec...)
		sizes = append(sizes, len(rec))
	}
	cr := &countingReader{Reader: bytes.NewReader(stream)}
	rr := &recordReader{r: cr}
	for _, n := range sizes {
		if b, err := rr.Peek(HeaderSize); err != nil || len(b) != HeaderSize {
			t.Fatalf("Peek(header) = %d bytes, %v", len(b), err)
		}
		if b, err := rr.Peek(n); err != nil || len(b) != n {
			t.Fatalf("Peek(%d) = %d bytes, %v", n, len(b), err)
		}
		rr.Discard(n)
	}
	if cr.reads != 1 {
		t.Errorf("the push of %d bytes took %d reads, want 1", len(stream), cr.reads)
	}
}
