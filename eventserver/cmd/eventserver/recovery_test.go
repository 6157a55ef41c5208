package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/filestore"
)

// TestMissingJournalRefusesThenRebuilds deletes bets.journal of a stopped
// server that holds bets, four of its five agencies finished (issue 8 §3):
// the server refuses to start, exit 1, naming the journal and
// --rebuild-journal, and leaves bets.csv as it was (it used to truncate
// it); it does so with its metrics server up too (which used to keep the
// process from exiting). Started with --rebuild-journal it keeps every row,
// forgets who finished, and the agencies finish: those that had finished
// send FINISHED again by themselves.
func TestMissingJournalRefusesThenRebuilds(t *testing.T) {
	t.Parallel()
	data := makeFaultData(t, []int{1500, 1200, 1000, 800, 300}, 29)
	c := newCluster(t, data)
	c.poll[4] = true
	c.extra = []string{"--metrics-listen", "127.0.0.1:0"}
	c.startServer()
	for id := 1; id <= 4; id++ {
		c.startAgency(id)
	}
	proctest.WaitFor(t, 2*hangGuard, "agencies 1 to 4 to finish their upload", func() bool {
		return len(proctest.Find(c.server.Lines(), "agency_finished", "success")) == 4
	})
	c.stopServer()

	betsPath := filepath.Join(c.dataDir, filestore.BetsFile)
	journalPath := filepath.Join(c.dataDir, filestore.JournalFile)
	before := readFile(t, betsPath)
	if err := os.Remove(journalPath); err != nil {
		t.Fatal(err)
	}
	refused := c.spawnServer()
	if code := refused.Wait(t, hangGuard); code != 1 {
		t.Errorf("%s started without its journal: exit %d, want 1", refused.Name, code)
	}
	fails := proctest.Find(refused.Lines(), "server_start", "fail")
	if len(fails) != 1 || !strings.Contains(fails[0].Fields["error"], journalPath) ||
		!strings.Contains(fails[0].Fields["error"], "--rebuild-journal") {
		t.Errorf("%s: want one server_start fail line naming %s and --rebuild-journal, got %v", refused.Name, journalPath, fails)
	}
	if len(proctest.Find(refused.Lines(), "listen", "success")) != 0 {
		t.Errorf("%s listened without its journal", refused.Name)
	}
	if !bytes.Equal(readFile(t, betsPath), before) {
		t.Errorf("the refused start changed bets.csv")
	}
	if aside, _ := filepath.Glob(betsPath + ".torn-*"); len(aside) != 0 {
		t.Errorf("the refused start set rows aside: %v", aside)
	}

	c.startServer("--rebuild-journal")
	lines := c.server.Lines()
	rebuilt := proctest.Find(lines, "store_recover", "success", "file", filestore.JournalFile)
	if len(rebuilt) != 1 || !strings.Contains(rebuilt[0].Fields["action_taken"], "rebuilt") {
		t.Errorf("%s: want a store_recover line saying the journal was rebuilt, got %v", c.server.Name, rebuilt)
	}
	rows := int64(bytes.Count(before, []byte("\n")))
	if opens := proctest.Find(lines, "store_open", "success"); len(opens) != 1 || opens[0].Int("bets") != rows ||
		opens[0].Int("agencies_finished") != 0 {
		t.Errorf("%s: store_open %v; bets.csv held %d rows and the rebuilt journal knows no FINISHED", c.server.Name, opens, rows)
	}
	c.startAgency(5)
	roots := c.finishAgencies()
	c.stopServer() // its log is complete once it has exited
	for id := 1; id <= 5; id++ {
		if len(proctest.Find(c.server.Lines(), "agency_finished", "success", "agency", strconv.Itoa(id))) != 1 {
			t.Errorf("%s: agency %d did not send FINISHED again after the rebuild", c.server.Name, id)
		}
	}
	c.checkStore()
	c.checkEvidence(roots)
}
