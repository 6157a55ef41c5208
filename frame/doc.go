// Package frame is the wire protocol between agencies and the event server:
// length-prefixed binary frames with a fixed four-byte header, an encoder that
// refuses to build oversized frames, and a decoder that validates every field
// and never trusts a length it has not seen the bytes for.
//
// PROTOCOL.md at the repository root documents the exact byte layout.
package frame
