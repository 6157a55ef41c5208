// Package persisttest generates the deterministic bet streams that the store
// and backend tests write, read back and compare.
package persisttest

import (
	"fmt"

	"github.com/tp0/loteria/frame"
)

// Winning is the draw's number in the streams: one bet in four carries it.
const Winning = 7574

// Names that exercise the CSV quoting: commas, quotes, line breaks, UTF-8.
var (
	firstNames = []string{"Santiago Lionel", "María José", "Juan, Carlos", `Ana "La Rubia"`, "Zoë", "José\nLuis", "Ñandú", "O'Brien"}
	lastNames  = []string{"Lorca", "Pérez García", "D'Alessandro", `"Quoted"`, "Müller, Jr.", "Nguyễn", "Smith\r\nJones", "Gómez"}
)

// Bet is bet i of agency's stream; the same arguments always give the same bet.
func Bet(agency uint32, i uint64) frame.Bet {
	k := int(i) + int(agency)*7
	number := uint16((i*7919 + uint64(agency)*31) % 10000)
	if k%4 == 0 {
		number = Winning
	}
	return frame.Bet{
		FirstName: firstNames[k%len(firstNames)],
		LastName:  lastNames[(k/3)%len(lastNames)],
		Document:  fmt.Sprintf("%08d", uint64(agency)*100000+i%100000),
		Birthdate: frame.NewDate(1940+k%60, 1+k%12, 1+k%28),
		Number:    number,
	}
}

// Bets is bets [first, first+n) of agency's stream.
func Bets(agency uint32, first uint64, n int) []frame.Bet {
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = Bet(agency, first+uint64(i))
	}
	return bets
}
