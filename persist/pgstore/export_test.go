package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// The same agencies' streams, uploaded one agency after another through the
// writer, end up as the same bytes: bets.csv of the file store, and the
// export of the PostgreSQL store.
func TestExportMatchesFileStore(t *testing.T) {
	sizes := []int{230, 1, 0, 97}
	upload := func(put func(agency uint32, first uint64, n int)) {
		for i, n := range sizes {
			for first := 0; first < n; first += 40 {
				put(uint32(i+1), uint64(first), min(40, n-first))
			}
		}
	}

	dir := t.TempDir()
	fb, err := filestore.Open(dir, filestore.Options{Agencies: len(sizes), WinningNumber: winning})
	if err != nil {
		t.Fatal(err)
	}
	fs := openWriter(t, fb, len(sizes))
	upload(func(a uint32, first uint64, n int) { put(t, fs, a, first, n, n) })
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, filestore.BetsFile))
	if err != nil {
		t.Fatal(err)
	}

	url := pgtest.NewDatabase(t)
	ps, _ := open(t, url, len(sizes))
	upload(func(a uint32, first uint64, n int) {
		put(t, ps, a, first, n, n)
		put(t, ps, a, first, n, 0) // a replay changes nothing
	})
	var got bytes.Buffer
	st, err := pgstore.Export(context.Background(), url, &got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("export differs from the file store's bets.csv:\n got %d bytes: %.300q\nwant %d bytes: %.300q",
			got.Len(), got.String(), len(want), want)
	}
	if st.Rows != 328 || st.Agencies != 4 || st.Bytes != int64(len(want)) {
		t.Fatalf("export stats %+v, want 328 rows of 4 agencies in %d bytes", st, len(want))
	}
	if !bytes.Contains(want, []byte(`"Juan, Pablo"`)) || !bytes.Contains(want, []byte("\"Luis\nAlberto\"")) {
		t.Fatal("the streams lack the names that need quoting: the test checks less than it should")
	}

	// What does not add up is reported, never exported; each damage is
	// undone before the next.
	conn := connect(t, url)
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for _, c := range []struct{ where, damage, says string }{
		{"agency = 1 AND idx = 17", "UPDATE bets SET first_name = 'Eve'", "agency 1's rows do not hash to its chain value"},
		{"agency = 4 AND idx = 50", "DELETE FROM bets", "agency 4: bet 51 follows bet 49"},
		{"agency = 1 AND idx = 229", "DELETE FROM bets", "agency 1 holds 230 bets on record but 229 rows"},
	} {
		exec("CREATE TEMP TABLE saved AS SELECT * FROM bets WHERE " + c.where)
		exec(c.damage + " WHERE " + c.where)
		_, err := pgstore.Export(ctx, url, &bytes.Buffer{})
		if !errors.Is(err, pgstore.ErrCorrupt) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("after %s WHERE %s: export says %v, want ErrCorrupt saying %q", c.damage, c.where, err, c.says)
		}
		exec("DELETE FROM bets WHERE " + c.where)
		exec("INSERT INTO bets SELECT * FROM saved")
		exec("DROP TABLE saved")
	}
	got.Reset()
	if _, err := pgstore.Export(ctx, url, &got); err != nil || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("export after undoing the damage: %v", err)
	}
}
