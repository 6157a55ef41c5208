package secure

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
)

var updateProtocol = flag.Bool("update-protocol", false, "rewrite the record example in ../PROTOCOL.md")

const protocolPath = "../PROTOCOL.md"

// recordHelloExample is agency 3's first transport record, carrying the HELLO
// of PROTOCOL.md, after a handshake with seeded static and ephemeral keys,
// laid out like the frame examples: 16 bytes to a line, each field with a note.
func recordHelloExample(t *testing.T) string {
	fx := newFixture(t, 3)
	s := newSession(t, fx, 3, seeded(serverSeed))
	start := s.conn.sent.Len()
	if err := s.client.WriteFrame(&frame.Hello{Agency: 3}); err != nil {
		t.Fatal(err)
	}
	rec := bytes.Clone(s.conn.sent.Bytes()[start:])

	// The server must read back exactly the HELLO from it.
	s.toServer()
	got, err := decodeAll(s.server)
	if len(got) != 1 || !bytes.Equal(got[0], []byte{frame.Version, byte(frame.TypeHello), 0, 4, 0, 0, 0, 3}) {
		t.Fatalf("server decoded %x (stopped by %v), want the HELLO of agency 3", got, err)
	}
	if s.server.Agency() != 3 {
		t.Fatalf("server says agency %d, want 3", s.server.Agency())
	}

	body := int(binary.BigEndian.Uint16(rec[1:3]))
	segs := []segment{
		{1, fmt.Sprintf("kind 0x%02X (transport)", rec[0])},
		{2, fmt.Sprintf("length %d (record is %d bytes)", body, len(rec))},
		{body - TagSize, "the 8-byte HELLO, encrypted with nonce 0"},
		{TagSize, "Poly1305 tag"},
	}
	var out strings.Builder
	fmt.Fprintf(&out, "server public key    %s (base64)\n", fx.server.Public())
	fmt.Fprintf(&out, "agency 3 public key  %s (base64)\n", fx.agencies[2].Public())
	off := 0
	for _, sg := range segs {
		for i := 0; i < sg.n; i += 16 {
			line := fmt.Sprintf("%04x  % x", off+i, rec[off+i:off+min(sg.n, i+16)])
			if i == 0 {
				line = fmt.Sprintf("%-53s  %s", line, sg.note)
			}
			out.WriteString(strings.TrimRight(line, " ") + "\n")
		}
		off += sg.n
	}
	if off != len(rec) {
		t.Fatalf("notes cover %d bytes of %d", off, len(rec))
	}
	return out.String()
}

// segment is a run of bytes of the example record and what it means.
type segment struct {
	n    int
	note string
}

// TestProtocolExamples keeps PROTOCOL.md's transport record example equal
// to what the package produces. Run with -update-protocol to rewrite it.
func TestProtocolExamples(t *testing.T) {
	doc, err := os.ReadFile(protocolPath)
	if err != nil {
		t.Fatalf("read %s: %v", protocolPath, err)
	}
	text := string(doc)
	const begin = "<!-- example record_hello -->\n```\n"
	const end = "```\n<!-- end example -->"
	i := strings.Index(text, begin)
	if i < 0 {
		t.Fatalf("%s has no block %q", protocolPath, strings.TrimSpace(begin))
	}
	j := strings.Index(text[i+len(begin):], end)
	if j < 0 {
		t.Fatalf("example record_hello is not closed by %q", end)
	}
	start, stop := i+len(begin), i+len(begin)+j
	want := recordHelloExample(t)
	if text[start:stop] == want {
		return
	}
	if !*updateProtocol {
		t.Fatalf("example record_hello in %s is stale; want:\n%s", protocolPath, want)
	}
	if err := os.WriteFile(protocolPath, []byte(text[:start]+want+text[stop:]), 0o644); err != nil {
		t.Fatal(err)
	}
}
