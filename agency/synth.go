package agency

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tp0/loteria/frame"
)

// CourseSizes are the row counts of the course's five agency files; CourseWinners their winners of 7574.
var (
	CourseSizes   = []int{26936, 25518, 16014, 9238, 991}
	CourseWinners = []int{2, 3, 3, 2, 0}
)

// ErrSynthOptions is the cause of every error SyntheticBets returns.
var ErrSynthOptions = errors.New("invalid synthetic bet options")

// SynthOptions describe one agency's synthetic bets.
type SynthOptions struct {
	Agency        uint32
	Bets          int    // rows
	Winners       int    // exactly this many bets carry WinningNumber; no other bet does
	WinningNumber uint16 // 0 to frame.MaxNumber
	Seed          int64  // same options -> same bets, byte for byte
}

func (o SynthOptions) check() error {
	switch {
	case o.Bets < 0:
		return fmt.Errorf("%w: bets %d is negative", ErrSynthOptions, o.Bets)
	case o.Winners < 0:
		return fmt.Errorf("%w: winners %d is negative", ErrSynthOptions, o.Winners)
	case o.Winners > o.Bets:
		return fmt.Errorf("%w: winners %d exceed bets %d", ErrSynthOptions, o.Winners, o.Bets)
	case o.WinningNumber > frame.MaxNumber:
		return fmt.Errorf("%w: winning number %d is above %d", ErrSynthOptions, o.WinningNumber, frame.MaxNumber)
	}
	return nil
}

// Shape of the generated data, per mille of rows or of new people. The order
// of the random draws below is part of the output: changing it changes every file.
const (
	synthReusePerMille      = 50  // rows that are an earlier bettor of the agency betting again
	synthSingleNamePerMille = 280 // first names of one word (the rest have two, a few three or more)
	synthLongNamePerMille   = 5   // first names of three or more words
	synthTwoSurnamePerMille = 16  // last names of two words
	synthZeroDocPerMille    = 5   // documents with a leading zero
	synthDocLen             = 8
)

// SyntheticBets returns the agency's bets, deterministic in opts.
func SyntheticBets(opts SynthOptions) ([]frame.Bet, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	t := synthTablesOnce()
	g := synthRand{src: rand.NewPCG(uint64(opts.Seed), uint64(opts.Agency))}
	winners := synthWinnerPositions(&g, opts.Bets, opts.Winners)

	// All documents live in one string; each bet's Document is a slice of it.
	var docs strings.Builder
	docs.Grow(synthDocLen * opts.Bets)
	var digits [synthDocLen]byte

	bets := make([]frame.Bet, opts.Bets)
	for i := range bets {
		b := &bets[i]
		if i > 0 && g.intn(1000) < synthReusePerMille {
			*b = bets[g.intn(i)]
		} else {
			b.FirstName = t.firstName(&g)
			b.LastName = t.lastName(&g)
			if g.intn(1000) < synthZeroDocPerMille {
				synthPutDigits(digits[:], uint64(g.intn(10_000_000)))
			} else {
				synthPutDigits(digits[:], 20_000_000+uint64(g.intn(20_000_000)))
			}
			docs.Write(digits[:])
			all := docs.String()
			b.Document = all[len(all)-synthDocLen:]
			b.Birthdate = t.birthdates[g.intn(len(t.birthdates))]
		}
		if len(winners) > 0 && winners[0] == i {
			winners = winners[1:]
			b.Number = opts.WinningNumber
			continue
		}
		n := uint16(g.intn(frame.MaxNumber)) // every number but the winning one
		if n >= opts.WinningNumber {
			n++
		}
		b.Number = n
	}
	return bets, nil
}

// synthWinnerPositions picks one row in each of k equal stretches of n rows,
// so winners spread through the file; the result is increasing.
func synthWinnerPositions(g *synthRand, n, k int) []int {
	pos := make([]int, k)
	for j := range pos {
		lo, hi := j*n/k, (j+1)*n/k
		pos[j] = lo + g.intn(hi-lo)
	}
	return pos
}

// synthPutDigits writes v in decimal into dst, zero padded to len(dst).
func synthPutDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// synthRand draws from a PCG source directly, so outputs depend only on the
// PCG algorithm and not on how math/rand/v2 reduces to a range.
type synthRand struct{ src *rand.PCG }

// intn returns a number in [0, n) for n > 0 (multiply-high reduction; the
// bias, below n/2^64, is irrelevant here).
func (g *synthRand) intn(n int) int {
	hi, _ := bits.Mul64(g.src.Uint64(), uint64(n))
	return int(hi)
}

// synthTables holds the read-only name and date tables, built once.
type synthTables struct {
	single     [2][]string // one-word first names by gender
	pairs      [2][]string // "Given Second" first names by gender
	long       [2][]string // first names of three or more words
	surnames   []string
	twoWord    []string // surnames of two words
	birthdates []frame.Date
}

var synthTablesOnce = sync.OnceValue(func() *synthTables {
	t := &synthTables{
		single:   [2][]string{synthFemale, synthMale},
		long:     [2][]string{synthFemaleLong, synthMaleLong},
		surnames: synthSurnames,
		twoWord:  synthTwoWordSurnames,
	}
	for g, names := range t.single {
		t.pairs[g] = make([]string, 0, len(names)*(len(names)-1))
		for _, a := range names {
			for _, b := range names {
				if a != b {
					t.pairs[g] = append(t.pairs[g], a+" "+b)
				}
			}
		}
	}
	first := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	last := time.Date(2004, 12, 31, 0, 0, 0, 0, time.UTC)
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		t.birthdates = append(t.birthdates, frame.DateOf(d))
	}
	return t
})

func (t *synthTables) firstName(g *synthRand) string {
	gender := g.intn(2)
	switch r := g.intn(1000); {
	case r < synthLongNamePerMille:
		return t.long[gender][g.intn(len(t.long[gender]))]
	case r < synthLongNamePerMille+synthSingleNamePerMille:
		return t.single[gender][g.intn(len(t.single[gender]))]
	default:
		return t.pairs[gender][g.intn(len(t.pairs[gender]))]
	}
}

func (t *synthTables) lastName(g *synthRand) string {
	if g.intn(1000) < synthTwoSurnamePerMille {
		return t.twoWord[g.intn(len(t.twoWord))]
	}
	return t.surnames[g.intn(len(t.surnames))]
}

// WriteBetsCSV writes bets in the course's format: no header, 5 columns, CRLF, dates YYYY-MM-DD,
// fields quoted only when they hold a comma, quote or line break (doubling quotes).
func WriteBetsCSV(w io.Writer, bets []frame.Bet) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	line := make([]byte, 0, 256)
	for i := range bets {
		b := &bets[i]
		line = synthAppendField(line[:0], b.FirstName)
		line = append(line, ',')
		line = synthAppendField(line, b.LastName)
		line = append(line, ',')
		line = synthAppendField(line, b.Document)
		line = append(line, ',')
		line = b.Birthdate.Append(line)
		line = append(line, ',')
		line = strconv.AppendUint(line, uint64(b.Number), 10)
		line = append(line, '\r', '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("write bets csv: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write bets csv: %w", err)
	}
	return nil
}

func synthAppendField(dst []byte, s string) []byte {
	if !strings.ContainsAny(s, ",\"\r\n") {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}

// Name lists: common given names and surnames of Argentina, written for this project.
var (
	synthFemale = []string{
		"Sofía", "Valentina", "Martina", "Catalina", "Emma", "Olivia", "Isabella", "Mía",
		"Lucía", "Camila", "Victoria", "Florencia", "Agustina", "Micaela", "Milagros", "Julieta",
		"Rocío", "Belén", "Antonella", "Candela", "Abril", "Delfina", "Josefina", "Guadalupe",
		"Paula", "Daniela", "Carolina", "Natalia", "Romina", "Gabriela", "Luciana", "Mariana",
		"Verónica", "Silvia", "Claudia", "Patricia", "Mónica", "Andrea", "Laura", "Ana",
		"María", "Inés", "Zoé", "Lara", "Jazmín", "Ailén", "Ayelén", "Noelia",
		"Azul", "Renata", "Pilar", "Magalí", "Solange", "Bárbara", "Débora", "Estefanía",
		"Melina", "Celeste", "Soledad", "Begoña", "Nélida", "Raquel", "Tamara", "Jimena",
		"Brenda", "Aldana", "Maite", "Alma", "Lourdes", "Mercedes", "Rosario", "Araceli",
	}
	synthMale = []string{
		"Santiago", "Mateo", "Benjamín", "Tiago", "Joaquín", "Lautaro", "Bautista", "Felipe",
		"Lucas", "Juan", "Martín", "Nicolás", "Tomás", "Agustín", "Facundo", "Francisco",
		"Gonzalo", "Ignacio", "Julián", "Lisandro", "Lorenzo", "Manuel", "Matías", "Maximiliano",
		"Sebastián", "Valentín", "Emiliano", "Federico", "Diego", "Pablo", "Gastón", "Hernán",
		"Ramiro", "Rodrigo", "Ezequiel", "Esteban", "Andrés", "Alejandro", "Leandro", "Lionel",
		"Emanuel", "Damián", "Germán", "Cristian", "Fernando", "Gabriel", "Marcos", "Simón",
		"Ramón", "Óscar", "Héctor", "Rubén", "Jesús", "Adrián", "Iván", "Elías",
		"Tobías", "Bruno", "Gael", "Ciro", "Jerónimo", "Santino", "Valentino", "Luciano",
		"Mariano", "Sergio", "Walter", "Raúl", "Darío", "Mauricio", "Claudio", "Jorge",
		"Carlos", "Luis", "José", "Miguel", "Ángel", "Daniel", "Eduardo", "Ricardo",
		"Roberto", "Víctor", "Iñaki", "Franco", "Nahuel", "Axel", "Benicio", "Thiago",
	}
	synthFemaleLong = []string{
		"María Del Carmen", "María De Los Ángeles", "María Del Pilar", "María Del Rosario",
		"María De La Paz", "Ana María Belén", "María De Las Mercedes", "Milagros De Los Ángeles",
	}
	synthMaleLong = []string{
		"Juan De Dios", "José María Luis", "Juan Martín Ignacio", "Juan Pablo José",
		"Miguel Ángel Ramón", "Juan Cruz Ezequiel",
	}
	synthSurnames = []string{
		"González", "Rodríguez", "Gómez", "Fernández", "López", "Díaz", "Martínez", "Pérez",
		"García", "Sánchez", "Romero", "Sosa", "Álvarez", "Torres", "Ruiz", "Ramírez",
		"Flores", "Acosta", "Benítez", "Medina", "Suárez", "Herrera", "Aguirre", "Pereyra",
		"Gutiérrez", "Giménez", "Molina", "Silva", "Castro", "Rojas", "Ortiz", "Núñez",
		"Luna", "Juárez", "Cabrera", "Ríos", "Ferreyra", "Godoy", "Morales", "Domínguez",
		"Moreno", "Peralta", "Vega", "Carrizo", "Quiroga", "Castillo", "Ledesma", "Muñoz",
		"Ojeda", "Ponce", "Vera", "Cáceres", "Villalba", "Cardozo", "Navarro", "Coronel",
		"Vázquez", "Ramos", "Arias", "Méndez", "Figueroa", "Paz", "Correa", "Chávez",
		"Ibáñez", "Peña", "Ordóñez", "Saldaña", "Cañete", "Güemes", "Argüello", "Agüero",
		"Mamani", "Quispe", "Rossi", "Russo", "Bianchi", "Ferrari", "Costa", "Romano",
		"Colombo", "Ricci", "Greco", "Marino", "Lombardi", "Fontana", "Bustos", "Toledo",
		"Maldonado", "Sáez", "Olmedo", "Rinaldi", "D'Angelo", "D'Alessandro", "Echeverría", "Etcheverry",
		"Goñi", "Iturralde", "Zubiría", "Urquiza", "Larrañaga", "Schmidt", "Müller", "Fischer",
		"Kowalski", "Novak", "Lorenzo", "Salinas", "Villegas", "Barrios", "Escobar", "Aráoz",
	}
	synthTwoWordSurnames = []string{
		"De La Fuente", "Del Valle", "De León", "Di Stéfano", "San Martín", "De Luca",
		"Del Río", "De Andrés",
	}
)
