package frame_test

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

var updateProtocol = flag.Bool("update-protocol", false, "rewrite the hex examples in ../PROTOCOL.md")

const protocolPath = "../PROTOCOL.md"

// segment is a run of bytes of an example frame and what it means.
type segment struct {
	n    int
	note string
}

// protocolExample is one worked example of PROTOCOL.md: the frame, encoded
// by the package, and the meaning of each run of its bytes.
type protocolExample struct {
	name string
	f    frame.Frame
	segs []segment
}

func short(field, s string) []segment {
	return []segment{{1, fmt.Sprintf("%s length %d", field, len(s))}, {len(s), field + " " + strconv.Quote(s)}}
}

func reason(s string) []segment {
	return []segment{{2, fmt.Sprintf("reason length %d", len(s))}, {len(s), "reason " + strconv.Quote(s)}}
}

func betSegments(i int, b frame.Bet) []segment {
	var segs []segment
	segs = append(segs, short(fmt.Sprintf("bet %d first_name", i), b.FirstName)...)
	segs = append(segs, short(fmt.Sprintf("bet %d last_name", i), b.LastName)...)
	segs = append(segs, short(fmt.Sprintf("bet %d document", i), b.Document)...)
	return append(segs,
		segment{4, fmt.Sprintf("bet %d birthdate %d = %s", i, uint32(b.Birthdate), b.Birthdate)},
		segment{2, fmt.Sprintf("bet %d number %d", i, b.Number)})
}

func protocolExamples(t *testing.T) []protocolExample {
	bets := []frame.Bet{
		{FirstName: "Santiago Lionel", LastName: "Lorca", Document: "30904465", Birthdate: 19990317, Number: 7574},
		{FirstName: "María", LastName: "Núñez", Document: "00000042", Birthdate: 20000229, Number: 0},
	}
	betsSegs := []segment{{8, "first 250 (stream index of bet 0)"}, {2, "count 2"}}
	for i, b := range bets {
		betsSegs = append(betsSegs, betSegments(i, b)...)
	}
	docs := []string{"30904465", "00000042"}
	winnersSegs := []segment{{1, "last 1 (final chunk)"}, {2, "count 2"}}
	for _, d := range docs {
		winnersSegs = append(winnersSegs, short("document", d)...)
	}
	// the REJECT carries the decoder's own message for the same batch with a bad date
	invalid := bets[1]
	invalid.Birthdate = 20230230
	badBatch := mustEncode(t, &frame.Bets{First: 250, Bets: []frame.Bet{bets[0], invalid}})
	_, err := frame.Parse(frame.TypeBets, badBatch[frame.HeaderSize:], frame.Today())
	if err == nil {
		t.Fatal("a batch with 2023-02-30 decodes without error")
	}
	rejectReason := err.Error()
	floodReason := "more than 65536 bytes arrived while a batch was in flight"
	return []protocolExample{
		{"hello", &frame.Hello{Agency: 3}, []segment{{4, "agency 3"}}},
		{"welcome", &frame.Welcome{Held: 250}, []segment{{8, "held 250"}, {1, "finished 0"}}},
		{"bets", &frame.Bets{First: 250, Bets: bets}, betsSegs},
		{"ack", &frame.Ack{First: 250, Count: 2}, []segment{{8, "first 250"}, {2, "count 2"}}},
		{"reject", &frame.Reject{Code: frame.CodeInvalidBet, Index: 251, Reason: rejectReason},
			append([]segment{{2, "code 7 (invalid_bet)"}, {8, "index 251"}}, reason(rejectReason)...)},
		{"finished", &frame.Finished{Total: 252}, []segment{{8, "total 252"}}},
		{"query_winners", &frame.QueryWinners{}, nil},
		{"winners", &frame.Winners{Last: true, Documents: docs}, winnersSegs},
		{"not_ready", &frame.NotReady{RetryAfter: 2 * time.Second, Finished: 3, Agencies: 5},
			[]segment{{4, "retry_after_ms 2000"}, {4, "finished 3"}, {4, "agencies 5"}}},
		{"ping", &frame.Ping{Payload: []byte("hi!")}, []segment{{3, `payload "hi!"`}}},
		{"pong", &frame.Pong{Payload: []byte("hi!")}, []segment{{3, `payload "hi!" (echoed)`}}},
		{"error", &frame.Error{Code: frame.CodeFlood, Reason: floodReason},
			append([]segment{{2, "code 17 (flood)"}}, reason(floodReason)...)},
	}
}

// render encodes ex and lays its bytes out 16 to a line, each run of bytes
// starting a new line with its note beside it.
func (ex protocolExample) render(t *testing.T) string {
	b := mustEncode(t, ex.f)
	length := binary.BigEndian.Uint16(b[2:4])
	segs := append([]segment{
		{1, fmt.Sprintf("version %d", b[0])},
		{1, fmt.Sprintf("type 0x%02X (%s)", b[1], frame.Type(b[1]))},
		{2, fmt.Sprintf("payload length %d (frame is %d bytes)", length, len(b))},
	}, ex.segs...)
	var out strings.Builder
	off := 0
	for _, s := range segs {
		if s.n == 0 {
			continue
		}
		for i := 0; i < s.n; i += 16 {
			chunk := b[off+i : off+min(s.n, i+16)]
			line := fmt.Sprintf("%04x  % x", off+i, chunk)
			if i == 0 {
				line = fmt.Sprintf("%-53s  %s", line, s.note)
			}
			out.WriteString(strings.TrimRight(line, " ") + "\n")
		}
		off += s.n
	}
	if off != len(b) {
		t.Fatalf("example %s: notes cover %d bytes of %d", ex.name, off, len(b))
	}
	return out.String()
}

// TestProtocolExamples keeps the hex examples in PROTOCOL.md equal to what
// the package encodes. Run with -update-protocol to rewrite them.
func TestProtocolExamples(t *testing.T) {
	doc, err := os.ReadFile(protocolPath)
	if err != nil {
		t.Fatalf("read %s: %v", protocolPath, err)
	}
	text := string(doc)
	for _, ex := range protocolExamples(t) {
		begin := "<!-- example " + ex.name + " -->\n```\n"
		const end = "```\n<!-- end example -->"
		i := strings.Index(text, begin)
		if i < 0 {
			t.Errorf("%s has no block %q", protocolPath, strings.TrimSpace(begin))
			continue
		}
		j := strings.Index(text[i+len(begin):], end)
		if j < 0 {
			t.Errorf("example %s is not closed by %q", ex.name, end)
			continue
		}
		start, stop := i+len(begin), i+len(begin)+j
		want := ex.render(t)
		if text[start:stop] == want {
			continue
		}
		if *updateProtocol {
			text = text[:start] + want + text[stop:]
			continue
		}
		t.Errorf("example %s in %s is stale; want:\n%s", ex.name, protocolPath, want)
	}
	if *updateProtocol && text != string(doc) {
		if err := os.WriteFile(protocolPath, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
