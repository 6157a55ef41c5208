package eventserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// sharedDocument is bet by someone at every agency; it wins at several.
const sharedDocument = "4242"

// agencyBets returns agency a's n synthetic bets, the same on every call.
// About one in five wins; some bets are an earlier bet of the agency again
// (the same document winning twice there), some carry sharedDocument, and
// some last names need CSV quoting.
func agencyBets(a uint32, n int) []frame.Bet {
	lastNames := []string{"Gómez", "Pérez, Jr.", `O"Neil`, "Ruiz Díaz"}
	bets := make([]frame.Bet, n)
	for i := range bets {
		if i >= 6 && i%13 == 6 {
			bets[i] = bets[i-6]
			continue
		}
		b := frame.Bet{
			FirstName: "Nombre" + strconv.Itoa(i),
			LastName:  lastNames[i%len(lastNames)],
			Document:  strconv.Itoa(int(a)*1_000_000 + i),
			Birthdate: frame.NewDate(1940+i%60, 1+i%12, 1+i%28),
		}
		if i%11 == 5 {
			b.Document = sharedDocument
		}
		if (i+int(a))%5 == 0 {
			b.Number = DefaultWinningNumber
		} else if b.Number = uint16((i*31 + int(a)*7) % 10000); b.Number == DefaultWinningNumber {
			b.Number++
		}
		bets[i] = b
	}
	return bets
}

// winnersIn is what the draw must give an agency that stored bets: the
// documents of its winning bets, in order, repeats kept.
func winnersIn(bets []frame.Bet) []string {
	var docs []string
	for _, b := range bets {
		if b.Number == DefaultWinningNumber {
			docs = append(docs, b.Document)
		}
	}
	return docs
}

// writeMode is how a test client puts frames on the wire.
type writeMode int

const (
	wholeFrames writeMode = iota // one Write per frame
	byteByByte                   // one Write per byte, with a pause between
	coalesced                    // everything the agency has to say in one Write
)

func (m writeMode) String() string {
	return [...]string{"whole_frames", "byte_by_byte", "coalesced"}[m]
}

// client is a raw protocol client that reports errors instead of failing
// the test, so that many can run in goroutines.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	dec  frame.Decoder
}

func dialAgency(addr string) (*client, error) {
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		return nil, err
	}
	return &client{conn: c, r: frame.NewReader(c)}, nil
}

// write sends frames as mode says.
func (c *client) write(mode writeMode, fs ...frame.Frame) error {
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = frame.Append(b, f); err != nil {
			return err
		}
		if mode == coalesced {
			continue
		}
		if err := c.put(mode, b); err != nil {
			return err
		}
		b = b[:0]
	}
	return c.put(mode, b)
}

func (c *client) put(mode writeMode, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.conn.SetWriteDeadline(time.Now().Add(hangGuard))
	if mode != byteByByte {
		_, err := c.conn.Write(b)
		return err
	}
	for i := range b {
		if _, err := c.conn.Write(b[i : i+1]); err != nil {
			return err
		}
		time.Sleep(20 * time.Microsecond)
	}
	return nil
}

// read returns the next frame; the deadline only guards against a hang.
func (c *client) read() (frame.Frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(hangGuard))
	return c.dec.Next(c.r)
}

// readAs reads the next frame and requires it to be a T.
func readAs[T frame.Frame](c *client) (T, error) {
	var zero T
	f, err := c.read()
	if err != nil {
		return zero, fmt.Errorf("want %T: %w", zero, err)
	}
	v, ok := f.(T)
	if !ok {
		return zero, fmt.Errorf("want %T, got %s %+v", zero, f.Type(), f)
	}
	return v, nil
}

// readError reads frames until an ERROR, which it returns, and then
// requires the server to close the connection.
func (c *client) readError() (*frame.Error, error) {
	e, err := readAs[*frame.Error](c)
	if err != nil {
		return nil, err
	}
	if f, err := c.read(); err == nil {
		return e, fmt.Errorf("after ERROR %s the server sent %s instead of closing", e.Code, f.Type())
	}
	return e, nil
}

// awaitWinners reads NOT_READY answers and WINNERS chunks until the last
// chunk, and returns the documents.
func (c *client) awaitWinners() ([]string, error) {
	var docs []string
	for {
		f, err := c.read()
		if err != nil {
			return nil, fmt.Errorf("waiting for winners: %w", err)
		}
		switch f := f.(type) {
		case *frame.NotReady:
		case *frame.Winners:
			docs = append(docs, f.Documents...)
			if f.Last {
				return docs, nil
			}
		default:
			return nil, fmt.Errorf("waiting for winners, got %s %+v", f.Type(), f)
		}
	}
}

// ackFor checks an ACK answers the batch first+n.
func ackFor(c *client, first uint64, n int) error {
	ack, err := readAs[*frame.Ack](c)
	if err != nil {
		return fmt.Errorf("batch at %d: %w", first, err)
	}
	if ack.First != first || int(ack.Count) != n {
		return fmt.Errorf("ACK %d+%d for batch %d+%d", ack.First, ack.Count, first, n)
	}
	return nil
}

// agencySpec is one in-test agency: its bets and how it sends them.
type agencySpec struct {
	id    uint32
	bets  []frame.Bet
	batch int
	mode  writeMode
}

func (s agencySpec) batches() []*frame.Bets {
	var out []*frame.Bets
	for first := 0; first < len(s.bets); first += s.batch {
		end := min(first+s.batch, len(s.bets))
		out = append(out, &frame.Bets{First: uint64(first), Bets: s.bets[first:end]})
	}
	return out
}

// openAgency connects and opens the agency's session, requiring WELCOME held.
func openAgency(addr string, id uint32, held uint64) (*client, error) {
	c, err := dialAgency(addr)
	if err != nil {
		return nil, err
	}
	if err := c.write(wholeFrames, &frame.Hello{Agency: id}); err != nil {
		c.conn.Close()
		return nil, err
	}
	w, err := readAs[*frame.Welcome](c)
	if err == nil && w.Held != held {
		err = fmt.Errorf("WELCOME held %d, want %d", w.Held, held)
	}
	if err != nil {
		c.conn.Close()
		return nil, fmt.Errorf("agency %d hello: %w", id, err)
	}
	return c, nil
}

// uploadBatches sends the batches one at a time, each after the last ACK.
func uploadBatches(c *client, mode writeMode, batches []*frame.Bets) error {
	for _, b := range batches {
		if err := c.write(mode, b); err != nil {
			return err
		}
		if err := ackFor(c, b.First, len(b.Bets)); err != nil {
			return err
		}
	}
	return nil
}

// runAgency is a whole agency: HELLO, WELCOME, every batch with its ACK,
// FINISHED, then the winners. A coalesced agency sends all of that in one
// Write and reads the answers afterwards.
func runAgency(addr string, s agencySpec) ([]string, error) {
	batches := s.batches()
	fin := &frame.Finished{Total: uint64(len(s.bets))}
	var c *client
	var err error
	if s.mode == coalesced {
		if c, err = dialAgency(addr); err != nil {
			return nil, err
		}
		defer c.conn.Close()
		all := []frame.Frame{&frame.Hello{Agency: s.id}}
		for _, b := range batches {
			all = append(all, b)
		}
		if err := c.write(coalesced, append(all, fin)...); err != nil {
			return nil, err
		}
		if w, err := readAs[*frame.Welcome](c); err != nil || w.Held != 0 {
			return nil, fmt.Errorf("agency %d: WELCOME %+v, %v", s.id, w, err)
		}
		for _, b := range batches {
			if err := ackFor(c, b.First, len(b.Bets)); err != nil {
				return nil, fmt.Errorf("agency %d: %w", s.id, err)
			}
		}
	} else {
		if c, err = openAgency(addr, s.id, 0); err != nil {
			return nil, err
		}
		defer c.conn.Close()
		if err := uploadBatches(c, s.mode, batches); err != nil {
			return nil, fmt.Errorf("agency %d: %w", s.id, err)
		}
		if err := c.write(s.mode, fin); err != nil {
			return nil, err
		}
	}
	docs, err := c.awaitWinners()
	if err != nil {
		return nil, fmt.Errorf("agency %d: %w", s.id, err)
	}
	return docs, nil
}

// runAgencies runs every agency at once and returns each one's winners.
func runAgencies(t *testing.T, addr string, specs []agencySpec) map[uint32][]string {
	t.Helper()
	var (
		mu      sync.Mutex
		winners = map[uint32][]string{}
		errs    []error
		wg      sync.WaitGroup
	)
	for _, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			docs, err := runAgency(addr, s)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			winners[s.id] = docs
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("agencies failed:\n%v", err)
	}
	return winners
}

// checkAgencyWinners requires every agency to get exactly the documents of its
// own winning bets.
func checkAgencyWinners(t *testing.T, specs []agencySpec, got map[uint32][]string) {
	t.Helper()
	for _, s := range specs {
		want := winnersIn(s.bets)
		if !reflect.DeepEqual(got[s.id], want) {
			t.Errorf("agency %d winners %q, want %q", s.id, got[s.id], want)
		}
		own := map[string]bool{}
		for _, b := range s.bets {
			own[b.Document] = true
		}
		for _, d := range got[s.id] {
			if !own[d] {
				t.Errorf("agency %d got winner %s, a document it never sent", s.id, d)
			}
		}
	}
}

// checkStored reads bets.csv of a stopped server and requires each agency's
// stored sequence to equal what it sent: every bet once, in order.
func checkStored(t *testing.T, dataDir string, want map[uint32][]frame.Bet) {
	t.Helper()
	got := map[uint32][]frame.Bet{}
	for b, err := range persist.LoadBetsFile(filepath.Join(dataDir, persist.BetsFile)) {
		if err != nil {
			t.Fatalf("read bets.csv: %v", err)
		}
		got[b.Agency] = append(got[b.Agency], b.Bet)
	}
	for a, bets := range want {
		if !reflect.DeepEqual(got[a], bets) {
			t.Errorf("agency %d: stored %d bets that differ from the %d it sent", a, len(got[a]), len(bets))
		}
	}
	for a := range got {
		if _, ok := want[a]; !ok {
			t.Errorf("bets.csv holds %d bets of agency %d, which sent none", len(got[a]), a)
		}
	}
}

func specsWant(specs []agencySpec) map[uint32][]frame.Bet {
	want := map[uint32][]frame.Bet{}
	for _, s := range specs {
		want[s.id] = s.bets
	}
	return want
}
