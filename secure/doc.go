// Package secure authenticates and encrypts agency connections with the
// Noise Protocol Framework: pattern IK, Noise_IK_25519_ChaChaPoly_BLAKE2s
// (WireGuard's suite), prologue "loteria noise v1". The agency (initiator)
// knows the server's static public key in advance; the server (responder)
// learns the agency's static key from message 1 and maps it to an agency id
// through a KeyStore.
//
// # Records
//
// Every message on a secured connection, both ways, is a record:
//
//	kind u8 | length u16 big-endian | body (length bytes)
//
//	kind  name        direction         body
//	0xE1  handshake 1 agency -> server  Noise IK message 1, empty payload: exactly 96 bytes
//	                                    (ephemeral key 32, encrypted static key 32+16, tag 16)
//	0xE2  handshake 2 server -> agency  Noise IK message 2, empty payload: exactly 48 bytes
//	                                    (ephemeral key 32, tag 16)
//	0xE3  transport   both ways         ChaCha20-Poly1305 ciphertext of exactly one frame,
//	                                    then its 16-byte tag: 20 to 8208 bytes
//	                                    (frame.HeaderSize+16 to frame.MaxSize+16)
//
// A session is: 0xE1, then 0xE2, then only 0xE3 records. The transport nonce
// is Noise's per-direction counter, starting at 0 and implicit (one per
// record, never sent), with empty associated data; so a record altered,
// replayed, reordered or dropped fails to decrypt. Any decryption failure
// ends the connection: there is no resynchronisation.
//
// A receiver judges a record from its 3 header bytes before buffering its
// body: a kind not expected at that point, or a length outside the kind's
// limits, ends the connection.
//
// No kind is ever frame.Version, the first byte of every plaintext frame. So
// the server tells from a connection's first byte a plaintext peer (a
// health probe's PING, or an agency of a server run with --insecure) from a
// handshake, and an agency that sent message 1 tells a plaintext ERROR
// frame (a server refusing the handshake, or running --insecure) from
// message 2.
//
// The agency is proven only when its first transport record (its HELLO)
// decrypts: a replayed message 1 draws a message 2, but without the
// agency's private key no transport record follows that decrypts.
//
// # Keys
//
// Key files hold comment lines (starting with #), blank lines and exactly
// one line of standard padded base64 of 32 raw bytes: X25519 keys for
// Noise (server.key, server.pub, agency-I.key, agency-I.pub) and an Ed25519
// seed and public key for signed receipts (server-sign.key, server-sign.pub).
// Command keygen writes them; private ones are mode 0600.
package secure
