package secure

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/tp0/loteria/frame"
)

// RefusedError is a server's plaintext ERROR frame in answer to message 1:
// it refuses the handshake (busy, draining) or does not speak this layer.
type RefusedError struct {
	Code   frame.Code
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("secure: server refused the handshake: ERROR %s: %s", e.Code, e.Reason)
}

// ClientConn is the agency's side of a secured connection. One goroutine may
// write frames while another reads them; Peek and Discard are for a single
// reader.
type ClientConn struct {
	conn net.Conn
	r    *recordReader

	recv *cipherState
	in   pending // decrypted frames not yet discarded
	rerr error   // fatal read error

	wmu  sync.Mutex
	send *cipherState
	fbuf []byte // frames to seal
	werr error  // a failed write leaves the record stream broken
}

// Identity is an agency's static key made ready for handshakes: its public
// half is derived once and its DH with each server key it meets is kept, so
// a reconnect costs four X25519 operations instead of five. It is safe for
// concurrent use.
type Identity struct {
	static  noise.DHKey
	dhs     staticDHs
	servers sync.Map // PublicKey → struct{}: server keys this identity dialed
	count   atomic.Int32
}

// maxServerKeys bounds the server keys an Identity remembers a DH with.
const maxServerKeys = 8

// NewIdentity prepares key for handshakes.
func NewIdentity(key PrivateKey) *Identity {
	id := &Identity{static: staticPair(key)}
	id.dhs.known = func(pub []byte) bool {
		var k PublicKey
		copy(k[:], pub)
		_, ok := id.servers.Load(k)
		return ok
	}
	return id
}

// dialing notes that server is a static key this identity handshakes with,
// so its DH is worth keeping (unlike those with ephemeral keys).
func (id *Identity) dialing(server PublicKey) {
	if _, ok := id.servers.Load(server); !ok && id.count.Add(1) <= maxServerKeys {
		id.servers.Store(server, struct{}{})
	}
}

// Public is the identity's public key, the one the server must know.
func (id *Identity) Public() PublicKey {
	var p PublicKey
	copy(p[:], id.static.Public)
	return p
}

// Client performs the handshake as agency key over conn with a server whose
// static key is server, within timeout (0: no deadline), then clears conn's
// deadline. A plaintext ERROR answer is a *RefusedError. A caller that
// connects more than once should keep an Identity and use its Client.
func Client(conn net.Conn, key PrivateKey, server PublicKey, timeout time.Duration) (*ClientConn, error) {
	return NewIdentity(key).client(conn, server, timeout, nil)
}

// Client is the package's Client as this identity.
func (id *Identity) Client(conn net.Conn, server PublicKey, timeout time.Duration) (*ClientConn, error) {
	return id.client(conn, server, timeout, nil)
}

// client is Client with the source of the ephemeral key, for repeatable tests.
func (id *Identity) client(conn net.Conn, server PublicKey, timeout time.Duration, rand io.Reader) (*ClientConn, error) {
	if timeout > 0 {
		if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
			return nil, fmt.Errorf("secure: set handshake deadline: %w", err)
		}
		defer conn.SetDeadline(time.Time{})
	}
	id.dialing(server)
	cfg := handshakeConfig(id.static, &id.dhs, rand)
	cfg.Initiator, cfg.PeerStatic = true, server[:]
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	msg1 := make([]byte, HeaderSize, HeaderSize+Handshake1Size)
	msg1[0], msg1[1], msg1[2] = KindHandshake1, 0, Handshake1Size
	if msg1, _, _, err = hs.WriteMessage(msg1, nil); err != nil {
		return nil, fmt.Errorf("%w: write message 1: %w", ErrHandshake, err)
	}
	if _, err := conn.Write(msg1); err != nil {
		return nil, fmt.Errorf("secure: send handshake: %w", err)
	}

	r := &recordReader{r: conn}
	b, err := r.Peek(1)
	if err != nil {
		return nil, fmt.Errorf("secure: read handshake answer: %w", err)
	}
	switch b[0] {
	case KindHandshake2:
	case frame.Version:
		return nil, refusal(r)
	default:
		return nil, fmt.Errorf("%w: server answered with a %s, neither a %s nor a plaintext frame",
			ErrRecord, kindName(b[0]), kindName(KindHandshake2))
	}
	if b, err = r.Peek(HeaderSize); err != nil {
		return nil, fmt.Errorf("secure: read handshake answer: %w", eof(err))
	}
	size, err := checkHeader(b, KindHandshake2)
	if err != nil {
		return nil, err
	}
	if b, err = r.Peek(HeaderSize + size); err != nil {
		return nil, fmt.Errorf("secure: read handshake answer: %w", eof(err))
	}
	_, toServer, toAgency, err := hs.ReadMessage(nil, b[HeaderSize:])
	if err != nil {
		return nil, fmt.Errorf("%w: message 2 does not decrypt: %w", ErrHandshake, err)
	}
	if _, err := r.Discard(HeaderSize + size); err != nil {
		return nil, fmt.Errorf("secure: read handshake answer: %w", err)
	}
	c := &ClientConn{conn: conn, r: r}
	if c.send, err = newCipherState(toServer); err != nil {
		return nil, err
	}
	if c.recv, err = newCipherState(toAgency); err != nil {
		return nil, err
	}
	return c, nil
}

// refusal reads the plaintext frame a server answered message 1 with.
func refusal(r *recordReader) error {
	var dec frame.Decoder
	f, err := dec.Next(r)
	if err != nil {
		return fmt.Errorf("%w: server answered with a plaintext frame that does not decode: %w", ErrHandshake, err)
	}
	if e, ok := f.(*frame.Error); ok {
		return &RefusedError{Code: e.Code, Reason: e.Reason}
	}
	return fmt.Errorf("%w: server answered the handshake with a plaintext %s frame", ErrHandshake, f.Type())
}

// eof turns an end of stream inside a record into io.ErrUnexpectedEOF.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteFrame encodes f and sends it as one transport record.
func (c *ClientConn) WriteFrame(f frame.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if c.fbuf, err = frame.Append(c.fbuf[:0], f); err != nil {
		return err
	}
	return c.writeLocked(c.fbuf)
}

// Write sends p, which must hold whole encoded frames, one transport record
// per frame, with a single Write on the connection; so frame.Write works on
// a ClientConn as it does on a net.Conn.
func (c *ClientConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *ClientConn) writeLocked(frames []byte) error {
	if c.werr != nil {
		return c.werr
	}
	if len(frames) == 0 {
		return nil
	}
	// Check every frame first: a record sealed but not sent would use up a
	// nonce the server then waits for.
	size := 0
	for rest := frames; len(rest) > 0; {
		n := frameSize(rest)
		if err := checkFrame(rest[:n]); err != nil {
			return fmt.Errorf("secure: write: %w", err)
		}
		size += HeaderSize + n + TagSize
		rest = rest[n:]
	}
	buf := recordPool.Get().(*[]byte)
	defer putRecords(buf)
	records := slices.Grow((*buf)[:0], size)
	for len(frames) > 0 {
		n := frameSize(frames)
		var err error
		if records, err = c.send.seal(records, frames[:n]); err != nil {
			c.werr = fmt.Errorf("secure: write: %w", err)
			return c.werr
		}
		frames = frames[n:]
	}
	*buf = records
	if _, err := c.conn.Write(records); err != nil {
		c.werr = fmt.Errorf("secure: an earlier write failed: %w", err)
		return err
	}
	return nil
}

// recordPool holds the buffers writes seal their records into, shared by
// every ClientConn: a window of batches is sealed into one buffer sized for
// it, and thousands of connections of one process (the bench) neither grow
// one each nor keep it while they wait for the draw.
var recordPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledRecords is the largest buffer recordPool keeps: a window of 64
// largest frames; a bigger write's buffer goes to the garbage collector.
const maxPooledRecords = 64 * MaxRecordSize

func putRecords(buf *[]byte) {
	if cap(*buf) <= maxPooledRecords {
		*buf = (*buf)[:0]
		recordPool.Put(buf)
	}
}

// frameSize is the size of the frame b starts with, as far as b holds it.
func frameSize(b []byte) int {
	if len(b) < frame.HeaderSize {
		return len(b)
	}
	return min(len(b), frame.HeaderSize+int(binary.BigEndian.Uint16(b[2:4])))
}

// Peek returns the next n decrypted bytes, reading and decrypting records
// from the connection as needed. Like a bufio.Reader it returns io.EOF when
// the connection ends between records and io.ErrUnexpectedEOF inside one;
// an error wrapping ErrDecrypt or ErrRecord means the connection cannot be
// trusted any further.
func (c *ClientConn) Peek(n int) ([]byte, error) {
	if n > frame.MaxSize {
		return nil, fmt.Errorf("%w: peek of %d bytes, more than a frame", frame.ErrTooLarge, n)
	}
	for c.in.held() < max(n, 1) {
		if err := c.readRecord(); err != nil {
			return c.in.bytes(0), err
		}
	}
	return c.in.bytes(n), nil
}

// Discard drops the next n decrypted bytes; n <= 0 drops all that are held.
func (c *ClientConn) Discard(n int) (int, error) { return c.in.discard(n) }

// readRecord reads and decrypts the next transport record onto buf.
func (c *ClientConn) readRecord() error {
	if c.rerr != nil {
		return c.rerr
	}
	b, err := c.r.Peek(HeaderSize)
	if err != nil {
		if len(b) > 0 {
			return eof(err)
		}
		return err
	}
	size, err := checkHeader(b, KindTransport)
	if err != nil {
		c.rerr = err
		return err
	}
	if b, err = c.r.Peek(HeaderSize + size); err != nil {
		return eof(err)
	}
	c.in.compact()
	out, err := c.recv.open(c.in.buf, b[HeaderSize:]) // grows buf to the largest frame received
	if err != nil {
		c.rerr = err
		return err
	}
	if _, err := c.r.Discard(HeaderSize + size); err != nil {
		return err
	}
	c.in.buf = out
	return nil
}

// SetDeadline sets the connection's read and write deadlines.
func (c *ClientConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the connection's read deadline.
func (c *ClientConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline.
func (c *ClientConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Close closes the connection.
func (c *ClientConn) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for its addresses; reading or writing
// it directly breaks the record stream.
func (c *ClientConn) Conn() net.Conn { return c.conn }

var (
	_ frame.Source = (*ClientConn)(nil)
	_ frame.Source = (*ServerConn)(nil)
	_ io.Writer    = (*ClientConn)(nil)
)

// recordReader buffers what the server sent for a ClientConn, like a
// bufio.Reader whose buffer starts small and grows only to the largest
// record that arrives: most of what an agency reads is short (WELCOME,
// ACKs, the draw's COMMITMENT and WINNERS), and ten thousand connections
// need not hold 8 KiB each.
type recordReader struct {
	r io.Reader
	pending
}

// recordReaderStart is the buffer a recordReader starts with: the draw's
// push (a COMMITMENT with its Merkle proof, 604 bytes at 10,000 agencies and
// 796 at a million, then the WINNERS) arrives in one read.
const recordReaderStart = 1024

// Peek returns the next n bytes, reading as needed; with fewer it returns
// what it has and the read error. n may not exceed MaxRecordSize.
func (rr *recordReader) Peek(n int) ([]byte, error) {
	if n > MaxRecordSize {
		return nil, fmt.Errorf("%w: peek of %d bytes, more than a record", ErrRecord, n)
	}
	for empty := 0; rr.held() < n; {
		rr.compact()
		if cap(rr.buf) < n || cap(rr.buf) == len(rr.buf) {
			grown := make([]byte, len(rr.buf), min(max(n, 2*cap(rr.buf), recordReaderStart), MaxRecordSize))
			copy(grown, rr.buf)
			rr.buf = grown
		}
		m, err := rr.r.Read(rr.buf[len(rr.buf):cap(rr.buf)])
		rr.buf = rr.buf[:len(rr.buf)+m]
		if empty = empty + 1; m > 0 {
			empty = 0
		}
		if err == nil && empty >= 100 {
			err = io.ErrNoProgress
		}
		if err != nil && len(rr.buf) < n {
			return rr.buf, err
		}
	}
	return rr.bytes(n), nil
}

// Discard drops the next n bytes, which a Peek returned.
func (rr *recordReader) Discard(n int) (int, error) { return rr.discard(n) }
