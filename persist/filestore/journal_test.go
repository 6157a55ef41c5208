package filestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
)

// hashOf is a recognisable chain value for journal tests.
func hashOf(b byte) (h frame.Hash) {
	for i := range h {
		h[i] = b + byte(i)
	}
	return h
}

// seal frames payload as a journal record with a valid checksum, so tests
// can build records that pass the checksum but not the layout checks.
func seal(payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

func TestJournalRecordRoundTrip(t *testing.T) {
	many := record{offset: 1 << 40}
	for a := uint32(1); a <= 100; a++ {
		many.held = append(many.held, heldEntry{a, uint64(a) * 1000, hashOf(byte(a))})
		if a%3 == 0 {
			many.finished = append(many.finished, doneEntry{a, uint64(a) * 1000})
		}
	}
	tests := []struct {
		name string
		rec  record
	}{
		{"start of an empty store", record{}},
		{"one agency", record{offset: 4096, held: []heldEntry{{2, 17, hashOf(9)}}}},
		{"finish only", record{offset: 4096, held: []heldEntry{{2, 17, hashOf(9)}}, finished: []doneEntry{{2, 17}}}},
		{"large values", record{offset: 1<<63 - 1, held: []heldEntry{{1<<32 - 1, 1<<64 - 1, hashOf(0xf0)}}, finished: []doneEntry{{1<<32 - 1, 1<<64 - 1}}}},
		{"a hundred agencies", many},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := appendRecord([]byte("prefix"), &tt.rec)[len("prefix"):]
			wantSize := recordHeader + minPayload + len(tt.rec.held)*heldEntrySize + len(tt.rec.finished)*doneEntrySize
			if len(data) != wantSize {
				t.Errorf("record of %d bytes, want %d", len(data), wantSize)
			}
			if data[recordHeader] != recordFormat {
				t.Errorf("format byte %d, want %d", data[recordHeader], recordFormat)
			}
			// Bytes after a record are the next record's business.
			got, n, err := parseRecord(append(data, 0xff, 0x00))
			if err != nil || n != len(data) {
				t.Fatalf("parseRecord: %v, size %d of %d", err, n, len(data))
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.rec) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.rec)
			}
		})
	}
}

func TestJournalRecordDamage(t *testing.T) {
	rec := record{offset: 9876, held: []heldEntry{{1, 5, hashOf(1)}, {3, 2, hashOf(3)}}, finished: []doneEntry{{3, 2}}}
	data := appendRecord(nil, &rec)

	t.Run("every cut is short", func(t *testing.T) {
		for cut := range len(data) {
			if _, _, err := parseRecord(data[:cut]); !errors.Is(err, errShort) {
				t.Fatalf("record cut to %d of %d bytes: %v, want errShort", cut, len(data), err)
			}
		}
	})
	t.Run("every bit flip is caught", func(t *testing.T) {
		for bit := range len(data) * 8 {
			flipped := append([]byte(nil), data...)
			flipped[bit/8] ^= 1 << (bit % 8)
			_, _, err := parseRecord(flipped)
			switch {
			case bit/8 >= 4 && !errors.Is(err, errCorrupt):
				t.Fatalf("bit %d (checksum or payload) flipped: %v, want errCorrupt", bit, err)
			case !errors.Is(err, errCorrupt) && !errors.Is(err, errShort):
				// A length that grows runs past the data: it reads as short.
				t.Fatalf("bit %d (length) flipped: %v, want errCorrupt or errShort", bit, err)
			}
		}
	})

	payload := data[recordHeader:]
	withPayload := func(edit func(p []byte) []byte) []byte {
		return seal(edit(append([]byte(nil), payload...)))
	}
	layout := []struct {
		name string
		data []byte
		want error
	}{
		{"more held entries than fit", withPayload(func(p []byte) []byte {
			binary.BigEndian.PutUint32(p[9:], 3)
			return p
		}), errCorrupt},
		{"more finished entries than fit", withPayload(func(p []byte) []byte {
			binary.BigEndian.PutUint32(p[9+4+2*heldEntrySize:], 2)
			return p
		}), errCorrupt},
		{"a byte after the entries", withPayload(func(p []byte) []byte { return append(p, 0) }), errCorrupt},
		{"an entry cut short", withPayload(func(p []byte) []byte { return p[:len(p)-1] }), errCorrupt},
		{"a negative offset", withPayload(func(p []byte) []byte {
			p[1] |= 0x80
			return p
		}), errCorrupt},
		{"a payload below the minimum", seal([]byte{recordFormat, 0, 0, 0}), errCorrupt},
		{"a length above the limit", append(binary.BigEndian.AppendUint32(nil, maxRecord+1), data[4:]...), errCorrupt},
		{"the format of another version", withPayload(func(p []byte) []byte {
			p[0] = recordFormat + 1
			return p
		}), errFormat},
		{"the format of the first version", withPayload(func(p []byte) []byte {
			p[0] = 1
			return p
		}), errFormat},
	}
	for _, tt := range layout {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseRecord(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("parseRecord: %v, want %v", err, tt.want)
			}
			if tt.want == errFormat && !strings.Contains(err.Error(), fmt.Sprintf("format %d", tt.data[recordHeader])) {
				t.Errorf("error %q does not name the record's format", err)
			}
		})
	}
}
