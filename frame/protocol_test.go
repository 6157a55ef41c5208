package frame_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
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

// protocolBets are the two bets of the examples.
func protocolBets() []frame.Bet {
	return []frame.Bet{
		{FirstName: "Santiago Lionel", LastName: "Lorca", Document: "30904465", Birthdate: 19990317, Number: 7574},
		{FirstName: "María", LastName: "Núñez", Document: "00000042", Birthdate: 20000229, Number: 0},
	}
}

func protocolExamples(t *testing.T) []protocolExample {
	bets := protocolBets()
	betsSegs := []segment{{8, "first 0 (stream index of bet 0)"}, {2, "count 2"}}
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
	badBatch := mustEncode(t, &frame.Bets{First: 0, Bets: []frame.Bet{bets[0], invalid}})
	_, err := frame.Parse(frame.TypeBets, badBatch[frame.HeaderSize:], frame.Today())
	if err == nil {
		t.Fatal("a batch with 2023-02-30 decodes without error")
	}
	rejectReason := err.Error()
	chain := receipt.ChainOf(bets)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5E}, ed25519.SeedSize))
	lottery := receipt.LotteryID(5, 7574, [receipt.NonceSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	rcpt := receipt.Receipt{Lottery: lottery, Agency: 3, Bets: 2, Chain: chain}
	rcpt.Sign(key)
	leaves := make([]receipt.Leaf, 5)
	for i := range leaves {
		leaves[i] = receipt.Leaf{Agency: uint32(i + 1), Bets: uint64(10 * i), Chain: receipt.ChainOf(bets[:i%3])}
	}
	leaves[2] = receipt.Leaf{Agency: 3, Bets: 2, Chain: chain}
	tree := receipt.NewTree(leaves)
	commit := receipt.Commitment{Lottery: lottery, Agencies: 5, Root: tree.Root()}
	commit.Sign(key)
	proof := tree.Proof(2)
	proofSegs := []segment{{1, fmt.Sprintf("proof: %d hashes", len(proof))}}
	for i := range proof {
		proofSegs = append(proofSegs, segment{frame.HashSize, fmt.Sprintf("sibling %d", i)})
	}
	floodReason := "70000 unread bytes piled up while the server was not reading"
	return []protocolExample{
		{"hello", &frame.Hello{Agency: 3}, []segment{{4, "agency 3"}}},
		{"welcome", &frame.Welcome{Held: 0, Window: 16, MaxFrame: frame.MaxSize, ReadTimeout: 30 * time.Second,
			PingInterval: time.Minute, Chain: receipt.Empty()},
			[]segment{{8, "held 0"}, {1, "finished 0"}, {2, "window 16"}, {2, "max_frame 8192"},
				{4, "read_timeout 30000 ms"}, {4, "ping_interval 60000 ms"}, {32, "chain of no bets (SHA-256 of nothing)"}}},
		{"bets", &frame.Bets{First: 0, Bets: bets}, betsSegs},
		{"ack", &frame.Ack{First: 0, Count: 2, Held: 2, Chain: chain},
			[]segment{{8, "first 0"}, {2, "count 2"}, {8, "held 2"}, {32, "chain over bets 0 and 1"}}},
		{"reject", &frame.Reject{Code: frame.CodeInvalidBet, Index: 1, Reason: rejectReason},
			append([]segment{{2, "code 7 (invalid_bet)"}, {8, "index 1"}}, reason(rejectReason)...)},
		{"finished", &frame.Finished{Total: 2}, []segment{{8, "total 2"}}},
		{"query_winners", &frame.QueryWinners{}, nil},
		{"winners", &frame.Winners{Last: true, Documents: docs}, winnersSegs},
		{"not_ready", &frame.NotReady{RetryAfter: 2 * time.Second, Finished: 3, Agencies: 5},
			[]segment{{4, "retry_after_ms 2000"}, {4, "finished 3"}, {4, "agencies 5"}}},
		{"ping", &frame.Ping{Payload: []byte("hi!")}, []segment{{3, `payload "hi!"`}}},
		{"pong", &frame.Pong{Payload: []byte("hi!")}, []segment{{3, `payload "hi!" (echoed)`}}},
		{"error", &frame.Error{Code: frame.CodeFlood, Reason: floodReason},
			append([]segment{{2, "code 17 (flood)"}}, reason(floodReason)...)},
		{"receipt", (*frame.Receipt)(&rcpt), []segment{{32, "lottery id"}, {4, "agency 3"}, {8, "bets 2"},
			{32, "chain over bets 0 and 1"}, {64, "signature"}}},
		{"commitment", &frame.Commitment{Lottery: lottery, Agencies: 5, Root: commit.Root, Signature: commit.Signature, Proof: proof},
			append([]segment{{32, "lottery id"}, {4, "agencies 5"}, {32, "root"}, {64, "signature"}}, proofSegs...)},
	}
}

// chainExample shows the chain of the example bets step by step.
func chainExample(t *testing.T) string {
	var b strings.Builder
	c := receipt.NewChain()
	fmt.Fprintf(&b, "after 0 bets  %x\n", c.Sum())
	for i, bet := range protocolBets() {
		c.Add(&bet)
		fmt.Fprintf(&b, "after %d bet%s  %x\n", i+1, map[bool]string{true: " ", false: "s"}[i == 0], c.Sum())
	}
	return b.String()
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
	blocks := map[string]string{"chain": chainExample(t)}
	var names []string
	for _, ex := range protocolExamples(t) {
		blocks[ex.name] = ex.render(t)
		names = append(names, ex.name)
	}
	for _, name := range append(names, "chain") {
		begin := "<!-- example " + name + " -->\n```\n"
		const end = "```\n<!-- end example -->"
		i := strings.Index(text, begin)
		if i < 0 {
			t.Errorf("%s has no block %q", protocolPath, strings.TrimSpace(begin))
			continue
		}
		j := strings.Index(text[i+len(begin):], end)
		if j < 0 {
			t.Errorf("example %s is not closed by %q", name, end)
			continue
		}
		start, stop := i+len(begin), i+len(begin)+j
		want := blocks[name]
		if text[start:stop] == want {
			continue
		}
		if *updateProtocol {
			text = text[:start] + want + text[stop:]
			continue
		}
		t.Errorf("example %s in %s is stale; want:\n%s", name, protocolPath, want)
	}
	if *updateProtocol && text != string(doc) {
		if err := os.WriteFile(protocolPath, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
