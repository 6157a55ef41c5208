package eventserver

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/secure"
)

// transport sits between a connection's bytes and its session: it is the
// source the frame decoder reads and the encoder of the frames sent. The
// session never sees what it does; it only learns the agency it proved.
type transport interface {
	frame.Source
	appendFrame(dst []byte, f frame.Frame) ([]byte, error)
	// start advances the connection's opening (a handshake), writing what
	// it must through cs; it reports whether frames can flow yet and
	// whether the connection must close.
	start(cs *conn, now time.Time) (ready, closeConn bool)
	// proven returns, once, the agency the transport has proven, or 0.
	proven() uint32
	// fatal reports whether a decoding error means the stream is lost
	// and the connection must close without an answer.
	fatal(err error) bool
	// unread is how many received bytes wait unread, decrypted or not.
	unread() int
}

func (s *Server) newTransport(cs *conn) transport {
	if s.cfg.Keys == nil {
		return &plainTransport{Conn: cs.c}
	}
	return &secureTransport{raw: cs.c, sc: secure.NewServerConn(s.cfg.Keys, cs.c)}
}

// plainTransport is the --insecure protocol: frames as they are.
type plainTransport struct {
	gnet.Conn
	checked bool
}

func (t *plainTransport) appendFrame(dst []byte, f frame.Frame) ([]byte, error) {
	return frame.Append(dst, f)
}

// start refuses, with an answer the agency understands, a peer that opens
// with a Noise handshake: it has keys, this server runs --insecure.
func (t *plainTransport) start(cs *conn, _ time.Time) (bool, bool) {
	if t.checked {
		return true, false
	}
	b, err := t.Peek(1)
	if err != nil {
		return false, false
	}
	t.checked = true
	if b[0] == secure.KindHandshake1 {
		cs.srv.obs.ConnectionRefused("handshake")
		return false, cs.do(cs.sess.Step(cs.srv.refusal(frame.CodeInsecureServer,
			"this server runs --insecure and speaks plaintext; start the agency with --insecure, or give the server --keys")))
	}
	return true, false
}

func (t *plainTransport) proven() uint32 { return 0 }

func (t *plainTransport) fatal(error) bool { return false }

func (t *plainTransport) unread() int { return t.InboundBuffered() }

// secureTransport is a Noise IK connection, or a plaintext peer of a
// secured server, which may only PING.
type secureTransport struct {
	raw       gnet.Conn
	sc        *secure.ServerConn
	plaintext bool
	announced bool
}

func (t *secureTransport) Peek(n int) ([]byte, error) {
	if t.plaintext {
		return t.raw.Peek(n)
	}
	return t.sc.Peek(n)
}

func (t *secureTransport) Discard(n int) (int, error) {
	if t.plaintext {
		return t.raw.Discard(n)
	}
	return t.sc.Discard(n)
}

// appendFrame seals f into a transport record once the handshake is done;
// before it (a refusal) and to a plaintext peer, frames go out as they are.
func (t *secureTransport) appendFrame(dst []byte, f frame.Frame) ([]byte, error) {
	if t.plaintext || !t.sc.Established() {
		return frame.Append(dst, f)
	}
	buf := framePool.Get().(*[]byte)
	defer framePool.Put(buf)
	encoded, err := frame.Append((*buf)[:0], f)
	*buf = encoded[:0]
	if err != nil {
		return dst, err
	}
	return t.sc.Seal(dst, encoded)
}

// framePool holds the buffers frames are encoded in before they are sealed,
// shared by the connections: no larger than frame.MaxSize, kept by none.
var framePool = sync.Pool{New: func() any { return new([]byte) }}

func (t *secureTransport) start(cs *conn, now time.Time) (bool, bool) {
	if t.plaintext || t.sc.Established() {
		return true, false
	}
	reply, err := t.sc.Handshake()
	took := now.Sub(cs.opened)
	switch {
	case errors.Is(err, frame.ErrIncomplete):
		return false, false
	case errors.Is(err, secure.ErrPlaintext):
		t.plaintext = true
		cs.sess.Step(Plaintext{})
		return true, false
	case err != nil:
		cs.srv.obs.Handshake(false, took)
		code, reason, kind := frame.CodeHandshake, "handshake failed: "+err.Error(), "handshake"
		var uk *secure.UnknownKeyError
		if errors.As(err, &uk) {
			code, kind = frame.CodeUnknownKey, "unknown_key"
			reason = fmt.Sprintf("no agency has the key %s; ask the operator to add your agency's public key", uk.Key.Fingerprint())
		}
		cs.srv.obs.ConnectionRefused(kind)
		return false, cs.do(cs.sess.Step(cs.srv.refusal(code, reason)))
	}
	cs.srv.obs.Handshake(true, took)
	cs.out = append(cs.out, reply...)
	return true, false
}

func (t *secureTransport) proven() uint32 {
	if t.announced || t.plaintext {
		return 0
	}
	if a := t.sc.Agency(); a != 0 {
		t.announced = true
		return a
	}
	return 0
}

func (t *secureTransport) unread() int {
	if t.plaintext || !t.sc.Established() {
		return t.raw.InboundBuffered()
	}
	return t.raw.InboundBuffered() + t.sc.Held()
}

// fatal: a record that does not decrypt, or is malformed, loses the stream;
// nothing of it is stored and the agency reconnects.
func (t *secureTransport) fatal(err error) bool {
	return errors.Is(err, secure.ErrDecrypt) || errors.Is(err, secure.ErrRecord) || errors.Is(err, secure.ErrExhausted)
}

// closeLost ends a connection whose encrypted stream cannot be trusted.
func (cs *conn) closeLost(err error) gnet.Action {
	cs.srv.log.Warn("connection_lost", logging.Fail, zap.Uint32("agency", cs.sess.Agency()),
		zap.String("remote", cs.remote), zap.Stringer("state", cs.sess.State()), zap.Error(err))
	cs.sess.Step(Hangup{})
	return gnet.Close
}
