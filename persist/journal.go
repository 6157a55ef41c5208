package persist

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// The journal is a sequence of commit records appended after each fsync of
// bets.csv. A record says how far bets.csv is committed and what changed per
// agency. Layout (big-endian):
//
//	u32 payload length | u32 CRC-32C of payload | payload
//	payload: u64 bets.csv offset
//	         u32 n, then n × (u32 agency, u64 bets held)
//	         u32 m, then m × (u32 agency, u64 total finished with)
//
// Recovery trusts records up to the first short or corrupt one.

const recordHeader = 8

// maxRecord bounds a record's payload so a corrupt length is never trusted
// for an allocation.
const maxRecord = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type heldEntry struct {
	agency uint32
	held   uint64
}

type record struct {
	offset   int64
	held     []heldEntry
	finished []heldEntry // held carries the total the agency finished with
}

func appendRecord(dst []byte, r *record) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeader)...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.offset))
	for _, list := range [][]heldEntry{r.held, r.finished} {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(list)))
		for _, e := range list {
			dst = binary.BigEndian.AppendUint32(dst, e.agency)
			dst = binary.BigEndian.AppendUint64(dst, e.held)
		}
	}
	payload := dst[start+recordHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

var errTorn = errors.New("torn or corrupt journal record")

// parseRecord decodes the record at the start of b and returns its size.
func parseRecord(b []byte) (record, int, error) {
	if len(b) < recordHeader {
		return record{}, 0, errTorn
	}
	n := int(binary.BigEndian.Uint32(b))
	if n > maxRecord || n > len(b)-recordHeader || n < 16 {
		return record{}, 0, errTorn
	}
	payload := b[recordHeader : recordHeader+n]
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return record{}, 0, errTorn
	}
	r := record{offset: int64(binary.BigEndian.Uint64(payload))}
	p := payload[8:]
	for _, list := range []*[]heldEntry{&r.held, &r.finished} {
		if len(p) < 4 {
			return record{}, 0, errTorn
		}
		count := int(binary.BigEndian.Uint32(p))
		p = p[4:]
		if count > len(p)/12 {
			return record{}, 0, errTorn
		}
		*list = make([]heldEntry, count)
		for i := range *list {
			(*list)[i] = heldEntry{agency: binary.BigEndian.Uint32(p), held: binary.BigEndian.Uint64(p[4:])}
			p = p[12:]
		}
	}
	if len(p) != 0 || r.offset < 0 {
		return record{}, 0, errTorn
	}
	return r, recordHeader + n, nil
}
