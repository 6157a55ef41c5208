package secure

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/flynn/noise"

	"github.com/tp0/loteria/frame"
)

// errNoHandshake is a caller's mistake: transport use before the handshake.
var errNoHandshake = errors.New("secure: transport used before the handshake completed")

// plainPool holds the frame-sized buffers records are decrypted into.
var plainPool = sync.Pool{New: func() any { return new([frame.MaxSize]byte) }}

// ServerConn is the server's side of one secured connection, a state machine
// over the bytes an event loop has received: it does no I/O, never blocks
// and holds no goroutine. Handshake answers the agency's message 1; after
// that ServerConn is itself a frame.Source of the decrypted frames, and Seal
// encrypts the frames to send. It is not safe for concurrent use.
type ServerConn struct {
	keys *KeyStore
	raw  frame.Source

	done   bool   // message 2 went out: the transport is set up
	err    error  // fatal: every later call returns it
	agency uint32 // decided by the key in message 1
	proven bool   // a transport record decrypted: the peer holds that key

	rand       io.Reader // ephemeral keys; nil means crypto/rand
	send, recv *cipherState
	in         pending // decrypted frames not yet discarded
}

// NewServerConn returns the state of a new connection whose received bytes
// raw holds: a gnet.Conn, whose Peek reports too few buffered bytes with
// io.ErrShortBuffer.
func NewServerConn(keys *KeyStore, raw frame.Source) *ServerConn {
	return &ServerConn{keys: keys, raw: raw}
}

// Handshake reads the agency's message 1 from raw and returns the record of
// message 2 for the caller to send. It returns frame.ErrIncomplete while
// message 1 has not fully arrived (call again when more bytes do), and
// ErrPlaintext, consuming nothing, when the peer's first byte is
// frame.Version. Once the handshake is done it returns nil, nil. Any other
// error, an *UnknownKeyError among them, is final.
func (c *ServerConn) Handshake() (reply []byte, err error) {
	switch {
	case c.err != nil:
		return nil, c.err
	case c.done:
		return nil, nil
	}
	b, err := c.raw.Peek(1)
	if err != nil {
		return nil, incomplete(err, b)
	}
	switch b[0] {
	case frame.Version:
		return nil, ErrPlaintext
	case KindHandshake1:
	default:
		return nil, c.fail(fmt.Errorf("%w: first byte is a %s, neither a plaintext frame nor a %s",
			ErrRecord, kindName(b[0]), kindName(KindHandshake1)))
	}
	if b, err = c.raw.Peek(HeaderSize); err != nil {
		return nil, incomplete(err, b)
	}
	size, err := checkHeader(b, KindHandshake1)
	if err != nil {
		return nil, c.fail(err)
	}
	if b, err = c.raw.Peek(HeaderSize + size); err != nil {
		return nil, incomplete(err, b)
	}
	if reply, err = c.respond(b[HeaderSize:]); err != nil {
		return nil, c.fail(err)
	}
	if _, err := c.raw.Discard(HeaderSize + size); err != nil {
		return nil, c.fail(fmt.Errorf("secure: discard message 1: %w", err))
	}
	c.done = true
	return reply, nil
}

// respond processes message 1 and returns the record of message 2.
func (c *ServerConn) respond(msg1 []byte) ([]byte, error) {
	hs, err := noise.NewHandshakeState(handshakeConfig(c.keys.static, &c.keys.dhs, c.rand))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if _, _, _, err := hs.ReadMessage(nil, msg1); err != nil {
		return nil, fmt.Errorf("%w: message 1 does not decrypt (the agency may hold another server "+
			"public key, or speak another version of this layer): %w", ErrHandshake, err)
	}
	var peer PublicKey
	copy(peer[:], hs.PeerStatic())
	agency, ok := c.keys.Lookup(peer)
	if !ok {
		return nil, &UnknownKeyError{Key: peer}
	}
	reply := make([]byte, HeaderSize, HeaderSize+Handshake2Size)
	reply[0], reply[1], reply[2] = KindHandshake2, 0, Handshake2Size
	reply, toServer, toAgency, err := hs.WriteMessage(reply, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: write message 2: %w", ErrHandshake, err)
	}
	if c.recv, err = newCipherState(toServer); err != nil {
		return nil, err
	}
	if c.send, err = newCipherState(toAgency); err != nil {
		return nil, err
	}
	c.agency = agency
	return reply, nil
}

// Established says whether the handshake is done, so Seal and the
// frame.Source methods can be used.
func (c *ServerConn) Established() bool { return c.done }

// Agency is the agency whose key the peer proved it holds: 0 until a
// transport record from the peer has decrypted. The id is the one the key
// mapped to at message 1, whatever key rotation did since.
func (c *ServerConn) Agency() uint32 {
	if !c.proven {
		return 0
	}
	return c.agency
}

// Peek returns the next n decrypted bytes, decrypting the next transport
// record only when fewer than n are held, so records not yet needed stay in
// raw. Without a complete record it returns raw's io.ErrShortBuffer; an
// error wrapping ErrDecrypt or ErrRecord is final. n <= 0 returns what is
// held, decrypting one record when nothing is.
func (c *ServerConn) Peek(n int) ([]byte, error) {
	if !c.done {
		return nil, c.notReady()
	}
	if n > frame.MaxSize {
		return nil, fmt.Errorf("%w: peek of %d bytes, more than a frame", frame.ErrTooLarge, n)
	}
	if n <= 0 {
		var err error
		if c.in.held() == 0 {
			err = c.openNext()
		}
		return c.in.bytes(0), err
	}
	for c.in.held() < n {
		if err := c.openNext(); err != nil {
			return c.in.bytes(0), err
		}
	}
	return c.in.bytes(n), nil
}

// Held is how many decrypted bytes wait, not yet discarded.
func (c *ServerConn) Held() int { return c.in.held() }

// Discard drops the next n decrypted bytes; n <= 0 drops all that are held.
func (c *ServerConn) Discard(n int) (int, error) {
	if !c.done {
		return 0, c.notReady()
	}
	n, err := c.in.discard(n)
	if c.in.held() == 0 {
		// Nothing held: give the buffer back, so an idle connection (an
		// agency waiting for the draw) holds no plaintext buffer.
		if cap(c.in.buf) == frame.MaxSize {
			plainPool.Put((*[frame.MaxSize]byte)(c.in.buf[:frame.MaxSize]))
		}
		c.in.buf = nil
	}
	return n, err
}

// openNext decrypts the next transport record in raw onto buf.
func (c *ServerConn) openNext() error {
	if c.err != nil {
		return c.err
	}
	b, err := c.raw.Peek(HeaderSize)
	if err != nil {
		return rawErr(err, b)
	}
	size, err := checkHeader(b, KindTransport)
	if err != nil {
		return c.fail(err)
	}
	if b, err = c.raw.Peek(HeaderSize + size); err != nil {
		return rawErr(err, b)
	}
	c.in.compact() // only does something when a caller peeks across frames
	if c.in.buf == nil {
		c.in.buf = plainPool.Get().(*[frame.MaxSize]byte)[:0]
	}
	out, err := c.recv.open(c.in.buf, b[HeaderSize:])
	if err != nil {
		return c.fail(err)
	}
	if _, err := c.raw.Discard(HeaderSize + size); err != nil {
		return c.fail(fmt.Errorf("secure: discard record: %w", err))
	}
	c.in.buf, c.proven = out, true
	return nil
}

// Seal appends to dst the transport record carrying frame f, which must be
// exactly one encoded frame. It allocates only if dst must grow. It works
// from the handshake on, even after a receive error, so an ERROR frame can
// still tell the agency why the connection closes.
func (c *ServerConn) Seal(dst, f []byte) ([]byte, error) {
	if !c.done {
		return dst, errNoHandshake
	}
	return c.send.seal(dst, f)
}

func (c *ServerConn) fail(err error) error {
	c.err = err
	return err
}

func (c *ServerConn) notReady() error {
	if c.err != nil {
		return c.err
	}
	return errNoHandshake
}

// incomplete maps what raw says about a short handshake message the way the
// frame decoder does: not yet there is frame.ErrIncomplete.
func incomplete(err error, got []byte) error {
	if errors.Is(err, io.ErrShortBuffer) {
		return frame.ErrIncomplete
	}
	return rawErr(err, got)
}

// rawErr passes on raw's error, except that an end of stream inside a
// record is io.ErrUnexpectedEOF.
func rawErr(err error, got []byte) error {
	if errors.Is(err, io.EOF) && len(got) > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}
