package secure

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/flynn/noise"

	"github.com/tp0/loteria/frame"
)

// noiseSuite is flynn/noise's own 25519_ChaChaPoly_BLAKE2s, the reference
// the handshakes and records here must agree with.
var noiseSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// stockHandshake starts a handshake with noise's own DH25519.
func stockHandshake(t *testing.T, key PrivateKey, initiator bool, peer *PublicKey) *noise.HandshakeState {
	t.Helper()
	pub := key.Public()
	cfg := noise.Config{CipherSuite: noiseSuite, Pattern: noise.HandshakeIK, Initiator: initiator,
		Prologue: []byte(Prologue), StaticKeypair: noise.DHKey{Private: key[:], Public: pub[:]}}
	if peer != nil {
		cfg.PeerStatic = peer[:]
	}
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// stockRecord encrypts frame f into a transport record with cs.
func stockRecord(t *testing.T, cs *noise.CipherState, f []byte) []byte {
	t.Helper()
	size := len(f) + TagSize
	rec, err := cs.Encrypt([]byte{KindTransport, byte(size >> 8), byte(size)}, nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestServerSpeaksNoise runs a ServerConn against an agency made of
// flynn/noise's reference parts only.
func TestServerSpeaksNoise(t *testing.T) {
	fx := newFixture(t, 2)
	server := fx.server.Public()
	hs := stockHandshake(t, fx.agencies[1], true, &server)
	msg1, _, _, err := hs.WriteMessage([]byte{KindHandshake1, 0, Handshake1Size}, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := &memSource{buf: msg1}
	sc := NewServerConn(fx.keys, src)
	reply, err := sc.Handshake()
	if err != nil {
		t.Fatal(err)
	}
	if reply[0] != KindHandshake2 || int(reply[2]) != len(reply)-HeaderSize {
		t.Fatalf("reply header % x for a %d-byte record", reply[:HeaderSize], len(reply))
	}
	_, toServer, toAgency, err := hs.ReadMessage(nil, reply[HeaderSize:])
	if err != nil {
		t.Fatalf("noise cannot read our message 2: %v", err)
	}
	hello := mustEncode(t, &frame.Hello{Agency: 2})
	src.Write(stockRecord(t, toServer, hello))
	if got, err := decodeAll(sc); len(got) != 1 || !bytes.Equal(got[0], hello) || sc.Agency() != 2 {
		t.Fatalf("decoded %d frames (%v), agency %d", len(got), err, sc.Agency())
	}
	welcome := mustEncode(t, &frame.Welcome{Held: 9})
	rec, err := sc.Seal(nil, welcome)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := toAgency.Decrypt(nil, nil, rec[HeaderSize:]); err != nil || !bytes.Equal(pt, welcome) {
		t.Errorf("noise cannot read our record: %v", err)
	}
}

// TestClientSpeaksNoise runs Client against a server made of flynn/noise's
// reference parts only.
func TestClientSpeaksNoise(t *testing.T) {
	agency, server := testKey(t, 1), testKey(t, 2)
	hs := stockHandshake(t, server, false, nil)
	var toServer, toAgency *noise.CipherState
	conn := &memConn{answer: func(c *memConn) {
		msg1 := c.sent.Bytes()
		if _, _, _, err := hs.ReadMessage(nil, msg1[HeaderSize:]); err != nil {
			t.Errorf("noise cannot read our message 1: %v", err)
			return
		}
		if !bytes.Equal(hs.PeerStatic(), func() []byte { p := agency.Public(); return p[:] }()) {
			t.Error("noise learned another static key")
		}
		var reply []byte
		reply, toServer, toAgency, _ = hs.WriteMessage([]byte{KindHandshake2, 0, Handshake2Size}, nil)
		c.inbox.Write(reply)
		c.sent.Reset()
		c.answer = nil
	}}
	cc, err := Client(conn, agency, server.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	hello := mustEncode(t, &frame.Hello{Agency: 1})
	if _, err := cc.Write(hello); err != nil {
		t.Fatal(err)
	}
	if pt, err := toServer.Decrypt(nil, nil, conn.sent.Bytes()[HeaderSize:]); err != nil || !bytes.Equal(pt, hello) {
		t.Errorf("noise cannot read our record: %v", err)
	}
	welcome := mustEncode(t, &frame.Welcome{Held: 1})
	conn.inbox.Write(stockRecord(t, toAgency, welcome))
	if got, err := decodeAll(cc); len(got) != 1 || !bytes.Equal(got[0], welcome) {
		t.Errorf("decoded %d frames (%v)", len(got), err)
	}
}

// TestTransportIsNoise checks that records are Noise transport messages:
// what noise's own CipherState encrypts, ours decrypts, and back.
func TestTransportIsNoise(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	apub, bpub := a.Public(), b.Public()
	init, _ := noise.NewHandshakeState(noise.Config{CipherSuite: noiseSuite, Pattern: noise.HandshakeIK, Initiator: true,
		StaticKeypair: noise.DHKey{Private: a[:], Public: apub[:]}, PeerStatic: bpub[:]})
	resp, _ := noise.NewHandshakeState(noise.Config{CipherSuite: noiseSuite, Pattern: noise.HandshakeIK,
		StaticKeypair: noise.DHKey{Private: b[:], Public: bpub[:]}})
	m1, _, _, _ := init.WriteMessage(nil, nil)
	if _, _, _, err := resp.ReadMessage(nil, m1); err != nil {
		t.Fatal(err)
	}
	m2, r1, r2, _ := resp.WriteMessage(nil, nil)
	_, i1, i2, err := init.ReadMessage(nil, m2)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := newCipherState(r1) // decrypts what the initiator sends
	if err != nil {
		t.Fatal(err)
	}
	back, _ := newCipherState(r2) // encrypts what the initiator decrypts
	for i := range 3 {
		f := mustEncode(t, &frame.Ping{Payload: []byte(fmt.Sprint("ping ", i))})
		ct, err := i1.Encrypt(nil, nil, f)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := ours.open(nil, ct)
		if err != nil || !bytes.Equal(pt, f) {
			t.Fatalf("record %d from noise: %v", i, err)
		}
		rec, err := back.seal(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err = i2.Decrypt(nil, nil, rec[HeaderSize:]); err != nil || !bytes.Equal(pt, f) {
			t.Fatalf("record %d to noise: %v", i, err)
		}
	}
}

// TestDHMatchesNoise checks our DH (x25519 and the remembered static DH) against noise's DH25519, and
// that a low-order public key fails, as Noise wants, instead of yielding
// an all-zero secret.
func TestDHMatchesNoise(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	bpub := b.Public()
	d := &dh25519{static: staticPair(a)}
	for _, priv := range [][]byte{a[:], b[:]} { // the static key, then another
		ours, err := d.DH(priv, bpub[:])
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := noise.DH25519.DH(priv, bpub[:])
		if err != nil || !bytes.Equal(ours, theirs) {
			t.Errorf("DH differs from noise's: %v", err)
		}
	}
	e, err := d.GenerateKeypair(seeded(3))
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := d.DH(e.Private, bpub[:])
	if theirs, _ := noise.DH25519.DH(e.Private, bpub[:]); !bytes.Equal(ours, theirs) {
		t.Error("DH with the ephemeral key differs from noise's")
	}
	if _, err := d.DH(a[:], make([]byte, KeySize)); err == nil {
		t.Error("DH with the all-zero (low-order) public key succeeded")
	}
}
