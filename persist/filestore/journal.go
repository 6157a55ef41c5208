package filestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/tp0/loteria/frame"
)

// The journal is a sequence of commit records appended after each fsync of
// bets.csv. A record says how far bets.csv is committed and what changed per
// agency. Layout (big-endian):
//
//	u32 payload length | u32 CRC-32C of payload | payload
//	payload: u8 format (2)
//	         u64 bets.csv offset
//	         u32 n, then n × (u32 agency, u64 bets held, 32-byte chain value)
//	         u32 m, then m × (u32 agency, u64 total finished with)
//
// A record whose checksum holds but whose format is not 2 was written by
// another version: it is reported, never taken for a torn record.

const (
	recordHeader  = 8
	recordFormat  = 2
	heldEntrySize = 4 + 8 + frame.HashSize
	doneEntrySize = 4 + 8
	minPayload    = 1 + 8 + 4 + 4
)

// maxRecord bounds a record's payload so a corrupt length is never trusted
// for an allocation.
const maxRecord = 256 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type heldEntry struct {
	agency uint32
	held   uint64
	chain  frame.Hash
}

type doneEntry struct {
	agency uint32
	total  uint64
}

type record struct {
	offset   int64
	held     []heldEntry
	finished []doneEntry
}

func appendRecord(dst []byte, r *record) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeader)...)
	dst = append(dst, recordFormat)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.offset))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.held)))
	for _, e := range r.held {
		dst = binary.BigEndian.AppendUint32(dst, e.agency)
		dst = binary.BigEndian.AppendUint64(dst, e.held)
		dst = append(dst, e.chain[:]...)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.finished)))
	for _, e := range r.finished {
		dst = binary.BigEndian.AppendUint32(dst, e.agency)
		dst = binary.BigEndian.AppendUint64(dst, e.total)
	}
	payload := dst[start+recordHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// Ways a record fails to parse.
var (
	errShort   = errors.New("record runs past the end of the journal")
	errCorrupt = errors.New("record fails its checksum or layout")
	errFormat  = errors.New("record written by another version")
)

// parseRecord decodes the record at the start of b and returns its size.
func parseRecord(b []byte) (record, int, error) {
	if len(b) < recordHeader {
		return record{}, 0, errShort
	}
	n := int(binary.BigEndian.Uint32(b))
	if n > maxRecord || n < minPayload {
		return record{}, 0, errCorrupt
	}
	if n > len(b)-recordHeader {
		return record{}, 0, errShort
	}
	payload := b[recordHeader : recordHeader+n]
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return record{}, 0, errCorrupt
	}
	if payload[0] != recordFormat {
		return record{}, 0, fmt.Errorf("%w: format %d, this server writes %d", errFormat, payload[0], recordFormat)
	}
	r := record{offset: int64(binary.BigEndian.Uint64(payload[1:]))}
	p := payload[9:]
	count := func(size int) (int, bool) {
		if len(p) < 4 {
			return 0, false
		}
		c := int(binary.BigEndian.Uint32(p))
		p = p[4:]
		return c, c <= len(p)/size
	}
	c, ok := count(heldEntrySize)
	if !ok || r.offset < 0 {
		return record{}, 0, errCorrupt
	}
	r.held = make([]heldEntry, c)
	for i := range r.held {
		e := &r.held[i]
		e.agency, e.held = binary.BigEndian.Uint32(p), binary.BigEndian.Uint64(p[4:])
		copy(e.chain[:], p[12:heldEntrySize])
		p = p[heldEntrySize:]
	}
	if c, ok = count(doneEntrySize); !ok {
		return record{}, 0, errCorrupt
	}
	r.finished = make([]doneEntry, c)
	for i := range r.finished {
		r.finished[i] = doneEntry{binary.BigEndian.Uint32(p), binary.BigEndian.Uint64(p[4:])}
		p = p[doneEntrySize:]
	}
	if len(p) != 0 {
		return record{}, 0, errCorrupt
	}
	return r, recordHeader + n, nil
}
