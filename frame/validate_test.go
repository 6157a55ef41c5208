package frame_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

// invalidBets lists one bad field per case; each must be reported as a
// *FieldError naming that field with the given cause.
var invalidBets = []struct {
	name  string
	edit  func(*frame.Bet)
	field string
	cause error
}{
	{"first_name_empty", func(b *frame.Bet) { b.FirstName = "" }, "first_name", frame.ErrEmpty},
	{"last_name_empty", func(b *frame.Bet) { b.LastName = "" }, "last_name", frame.ErrEmpty},
	{"first_name_101_bytes", func(b *frame.Bet) { b.FirstName = strings.Repeat("x", 101) }, "first_name", frame.ErrTooLong},
	{"last_name_101_bytes_utf8", func(b *frame.Bet) { b.LastName = strings.Repeat("ñ", 50) + "x" }, "last_name", frame.ErrTooLong},
	{"last_name_255_bytes", func(b *frame.Bet) { b.LastName = strings.Repeat("y", 255) }, "last_name", frame.ErrTooLong},
	{"first_name_bad_utf8", func(b *frame.Bet) { b.FirstName = "Jos\xe9" }, "first_name", frame.ErrUTF8},
	{"last_name_bad_utf8", func(b *frame.Bet) { b.LastName = "\xff\xfe" }, "last_name", frame.ErrUTF8},
	{"last_name_surrogate", func(b *frame.Bet) { b.LastName = "\xed\xa0\x80" }, "last_name", frame.ErrUTF8},
	{"document_empty", func(b *frame.Bet) { b.Document = "" }, "document", frame.ErrDigits},
	{"document_11_digits", func(b *frame.Bet) { b.Document = "00000000042" }, "document", frame.ErrDigits},
	{"document_letter", func(b *frame.Bet) { b.Document = "3090446A" }, "document", frame.ErrDigits},
	{"document_sign", func(b *frame.Bet) { b.Document = "-3090446" }, "document", frame.ErrDigits},
	{"document_space", func(b *frame.Bet) { b.Document = " 3090446" }, "document", frame.ErrDigits},
	{"document_arabic_digits", func(b *frame.Bet) { b.Document = "١٢٣" }, "document", frame.ErrDigits},
	{"birthdate_zero", func(b *frame.Bet) { b.Birthdate = 0 }, "birthdate", frame.ErrDate},
	{"birthdate_1899_12_31", func(b *frame.Bet) { b.Birthdate = 18991231 }, "birthdate", frame.ErrDate},
	{"birthdate_1900_02_29", func(b *frame.Bet) { b.Birthdate = 19000229 }, "birthdate", frame.ErrDate},
	{"birthdate_2023_02_29", func(b *frame.Bet) { b.Birthdate = 20230229 }, "birthdate", frame.ErrDate},
	{"birthdate_2023_02_30", func(b *frame.Bet) { b.Birthdate = 20230230 }, "birthdate", frame.ErrDate},
	{"birthdate_2023_04_31", func(b *frame.Bet) { b.Birthdate = 20230431 }, "birthdate", frame.ErrDate},
	{"birthdate_month_13", func(b *frame.Bet) { b.Birthdate = 20231301 }, "birthdate", frame.ErrDate},
	{"birthdate_month_0", func(b *frame.Bet) { b.Birthdate = 20230001 }, "birthdate", frame.ErrDate},
	{"birthdate_day_0", func(b *frame.Bet) { b.Birthdate = 20230100 }, "birthdate", frame.ErrDate},
	{"birthdate_day_32", func(b *frame.Bet) { b.Birthdate = 20230132 }, "birthdate", frame.ErrDate},
	{"birthdate_tomorrow", func(b *frame.Bet) { b.Birthdate = testToday + 1 }, "birthdate", frame.ErrDate},
	{"birthdate_next_year", func(b *frame.Bet) { b.Birthdate = 20250101 }, "birthdate", frame.ErrDate},
	{"birthdate_u32_max", func(b *frame.Bet) { b.Birthdate = 0xFFFFFFFF }, "birthdate", frame.ErrDate},
	{"number_10000", func(b *frame.Bet) { b.Number = 10000 }, "number", frame.ErrNumber},
	{"number_u16_max", func(b *frame.Bet) { b.Number = 0xFFFF }, "number", frame.ErrNumber},
}

func TestBetValidate(t *testing.T) {
	valid := []frame.Bet{
		validBet(),
		{FirstName: "A", LastName: "B", Document: "0", Birthdate: frame.MinDate, Number: 0},
		{FirstName: strings.Repeat("x", 100), LastName: repeatTo("ñ", 100), Document: "0000000000", Birthdate: 20000229, Number: 9999},
		{FirstName: "Hoy", LastName: "Nacido", Document: "00000042", Birthdate: testToday, Number: 1},
	}
	for _, b := range valid {
		if err := b.Validate(testToday); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", b, err)
		}
	}
	for _, tt := range invalidBets {
		t.Run(tt.name, func(t *testing.T) {
			b := validBet()
			tt.edit(&b)
			err := b.Validate(testToday)
			var fe *frame.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want *FieldError", err)
			}
			if fe.Field != tt.field || !errors.Is(err, tt.cause) || fe.Bet != -1 {
				t.Errorf("Validate = %#v, want field %s, cause %v, Bet -1", fe, tt.field, tt.cause)
			}
		})
	}
}

// TestDecodeInvalidBet puts each invalid bet at position 1 of a batch of
// three and checks the decoder's report: a *FieldError with Bet 1, and the
// decoded *Bets, so the caller knows where the batch starts and its size.
func TestDecodeInvalidBet(t *testing.T) {
	const first = 500
	for _, tt := range invalidBets {
		t.Run(tt.name, func(t *testing.T) {
			bets := realisticBets(3)
			tt.edit(&bets[1])
			b := mustEncode(t, &frame.Bets{First: first, Bets: bets})
			f, err := decodeOne(t, &frame.Decoder{Today: fixedToday}, b)
			var fe *frame.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("decode err = %v, want *FieldError", err)
			}
			if fe.Bet != 1 || fe.Field != tt.field || !errors.Is(err, tt.cause) {
				t.Errorf("FieldError = %#v, want Bet 1, field %s, cause %v", fe, tt.field, tt.cause)
			}
			if !strings.HasPrefix(err.Error(), "bet 1: field "+tt.field+" ") {
				t.Errorf("message %q does not start with the bet and field", err)
			}
			bf, ok := f.(*frame.Bets)
			if !ok || bf.First != first {
				t.Fatalf("frame = %#v, want *Bets with First %d", f, first)
			}
			if !equalFrames(bf, &frame.Bets{First: first, Bets: bets}) {
				t.Errorf("the refused batch came back as %+v, want all %d bets as sent", bf.Bets, len(bets))
			}
		})
	}
}

func TestDecodeReportsFirstInvalidBet(t *testing.T) {
	bets := realisticBets(10)
	bets[4].Document = "x"
	bets[7].Number = 10000
	_, err := frame.Parse(frame.TypeBets, mustEncode(t, &frame.Bets{Bets: bets})[frame.HeaderSize:], testToday)
	var fe *frame.FieldError
	if !errors.As(err, &fe) || fe.Bet != 4 || fe.Field != "document" {
		t.Fatalf("err = %v, want the document of bet 4", err)
	}
}

func TestBirthdateTodayUsesUTCPlus14(t *testing.T) {
	// 11:30 UTC on 2024-03-10 is already 01:30 on 2024-03-11 in UTC+14.
	now := time.Date(2024, 3, 10, 11, 30, 0, 0, time.UTC)
	dec := &frame.Decoder{Today: func() frame.Date {
		return frame.DateOf(now.In(time.FixedZone("UTC+14", 14*3600)))
	}}
	bet := validBet()
	for _, tt := range []struct {
		date frame.Date
		ok   bool
	}{
		{20240310, true},  // today in UTC
		{20240311, true},  // today in UTC+14
		{20240312, false}, // tomorrow in UTC+14
	} {
		bet.Birthdate = tt.date
		_, err := decodeOne(t, dec, mustEncode(t, &frame.Bets{Bets: []frame.Bet{bet}}))
		if tt.ok && err != nil {
			t.Errorf("birthdate %s: %v, want accepted", tt.date, err)
		}
		if !tt.ok && !errors.Is(err, frame.ErrDate) {
			t.Errorf("birthdate %s: err = %v, want ErrDate", tt.date, err)
		}
	}
}

func TestDecoderDefaultsToToday(t *testing.T) {
	if utcToday := frame.DateOf(time.Now().UTC()); frame.Today() < utcToday {
		t.Fatalf("Today() = %s is before today in UTC %s", frame.Today(), utcToday)
	}
	latest := frame.DateOf(time.Now().Add(15 * time.Hour).UTC())
	if frame.Today() > latest {
		t.Fatalf("Today() = %s is later than UTC+15 (%s)", frame.Today(), latest)
	}
	bet := validBet()
	bet.Birthdate = frame.Today()
	if _, err := decodeOne(t, &frame.Decoder{}, mustEncode(t, &frame.Bets{Bets: []frame.Bet{bet}})); err != nil {
		t.Fatalf("the zero Decoder rejects a birthdate of Today(): %v", err)
	}
	bet.Birthdate = frame.DateOf(time.Now().AddDate(0, 0, 3))
	if _, err := decodeOne(t, &frame.Decoder{}, mustEncode(t, &frame.Bets{Bets: []frame.Bet{bet}})); !errors.Is(err, frame.ErrDate) {
		t.Fatalf("the zero Decoder accepts a birthdate three days ahead: %v", err)
	}
}

func TestFieldErrorMessage(t *testing.T) {
	err := &frame.FieldError{Bet: 3, Field: "document", Value: "12a", Err: frame.ErrDigits}
	if got, want := err.Error(), `bet 3: field document "12a" is not 1-10 decimal digits`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	err.Bet = -1
	if got, want := err.Error(), `field document "12a" is not 1-10 decimal digits`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	b := validBet()
	b.LastName = strings.Repeat("z", 300)
	var fe *frame.FieldError
	if !errors.As(b.Validate(testToday), &fe) || len(fe.Value) > 50 {
		t.Errorf("FieldError value for a 300-byte name is %d bytes; want it shortened", len(fe.Value))
	}
}

func TestValidDocument(t *testing.T) {
	for s, want := range map[string]bool{
		"0": true, "00000042": true, "1234567890": true, "0000000000": true,
		"": false, "12345678901": false, "12 3": false, "1e5": false, "+1": false, "١": false,
	} {
		if got := frame.ValidDocument(s); got != want {
			t.Errorf("ValidDocument(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for s, want := range map[string]uint16{"0": 0, "7574": 7574, "9999": 9999, "0042": 42} {
		if got, err := frame.ParseNumber(s); err != nil || got != want {
			t.Errorf("ParseNumber(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "10000", "65536", "-1", "+1", "1.5", "12a", " 1"} {
		if _, err := frame.ParseNumber(s); !errors.Is(err, frame.ErrNumber) {
			t.Errorf("ParseNumber(%q) err = %v, want ErrNumber", s, err)
		}
	}
}

func TestParseDate(t *testing.T) {
	for s, want := range map[string]frame.Date{
		"1900-01-01": 19000101, "2000-02-29": 20000229, "1999-03-17": 19990317, "2024-12-31": 20241231,
	} {
		got, err := frame.ParseDate(s)
		if err != nil || got != want {
			t.Errorf("ParseDate(%q) = %v, %v; want %v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), s)
		}
	}
	for _, s := range []string{"", "1900-02-29", "2023-02-30", "2023-13-01", "2023-00-10", "0000-01-01",
		"2023/01/01", "2023-1-01", "20230101", "2023-01-01T", "2O23-01-01", "+123-01-01", "2023-01-+1"} {
		var fe *frame.FieldError
		if _, err := frame.ParseDate(s); !errors.As(err, &fe) || fe.Field != "birthdate" || !errors.Is(err, frame.ErrDate) {
			t.Errorf("ParseDate(%q) err = %v, want a birthdate FieldError", s, err)
		}
	}
}

func TestDate(t *testing.T) {
	d := frame.NewDate(2000, 2, 29)
	if d != 20000229 || d.Year() != 2000 || d.Month() != 2 || d.Day() != 29 || !d.Valid() {
		t.Fatalf("NewDate(2000, 2, 29) = %d (y %d m %d d %d valid %v)", d, d.Year(), d.Month(), d.Day(), d.Valid())
	}
	if got := frame.DateOf(time.Date(1999, 3, 17, 23, 59, 0, 0, time.UTC)); got != 19990317 {
		t.Errorf("DateOf = %v, want 1999-03-17", got)
	}
	zone := time.FixedZone("UTC-3", -3*3600)
	if got := frame.DateOf(time.Date(2024, 1, 1, 1, 0, 0, 0, time.UTC).In(zone)); got != 20231231 {
		t.Errorf("DateOf uses the wrong location: %v, want 2023-12-31", got)
	}
	if got := string(frame.Date(19000101).Append([]byte("born "))); got != "born 1900-01-01" {
		t.Errorf("Append = %q", got)
	}
	// every day of 1900..2100 is valid, and the day after each month's last is not
	for day := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC); day.Year() <= 2100; day = day.AddDate(0, 0, 1) {
		d := frame.DateOf(day)
		if !d.Valid() {
			t.Fatalf("%v reported invalid", d)
		}
		if next := day.AddDate(0, 0, 1); next.Day() == 1 && (d + 1).Valid() {
			t.Fatalf("%d reported valid", d+1)
		}
	}
}

func TestTypeAndCodeNames(t *testing.T) {
	types := map[frame.Type]string{
		frame.TypeHello: "HELLO", frame.TypeWelcome: "WELCOME", frame.TypeBets: "BETS", frame.TypeAck: "ACK",
		frame.TypeReject: "REJECT", frame.TypeFinished: "FINISHED", frame.TypeQueryWinners: "QUERY_WINNERS",
		frame.TypeWinners: "WINNERS", frame.TypeNotReady: "NOT_READY", frame.TypePing: "PING",
		frame.TypePong: "PONG", frame.TypeError: "ERROR", frame.TypeReceipt: "RECEIPT", frame.TypeCommitment: "COMMITMENT",
		0: "TYPE_0x00", 0x0F: "TYPE_0x0F", 0xFF: "TYPE_0xFF",
	}
	for ty, want := range types {
		if got := ty.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", ty, got, want)
		}
	}
	codes := map[frame.Code]string{
		frame.CodeMalformed: "malformed", frame.CodeVersion: "bad_version", frame.CodeTooLarge: "too_large",
		frame.CodeUnknownType: "unknown_type", frame.CodeUnexpected: "unexpected_frame",
		frame.CodeUnknownAgency: "unknown_agency", frame.CodeInvalidBet: "invalid_bet",
		frame.CodeIndexGap: "index_gap", frame.CodeAlreadyFinished: "already_finished",
		frame.CodeTotalMismatch: "total_mismatch", frame.CodeTimeout: "timeout", frame.CodeReplaced: "replaced",
		frame.CodeTooManyConns: "too_many_connections", frame.CodeShuttingDown: "shutting_down",
		frame.CodeStorage: "storage", frame.CodeBusy: "busy", frame.CodeFlood: "flood",
		frame.CodeUnknownKey: "unknown_key", frame.CodeWrongAgency: "wrong_agency",
		frame.CodeSecureRequired: "secure_required", frame.CodeInsecureServer: "insecure_server",
		frame.CodeHandshake: "handshake_failed",
		0:                   "code_0", 23: "code_23", 0xFFFF: "code_65535",
	}
	for c, want := range codes {
		if got := c.String(); got != want {
			t.Errorf("Code(%d).String() = %q, want %q", c, got, want)
		}
	}
}

// TestDecodeSmallestInvalidBets covers bets with empty fields in batches
// packed so tightly that only the field rules, not the byte count, can
// refuse them: each must still be a *FieldError naming the field.
func TestDecodeSmallestInvalidBets(t *testing.T) {
	tests := []struct {
		bet   frame.Bet
		field string
		cause error
	}{
		{frame.Bet{FirstName: "", LastName: "b", Document: "1", Birthdate: 20000101}, "first_name", frame.ErrEmpty},
		{frame.Bet{FirstName: "a", LastName: "", Document: "1", Birthdate: 20000101}, "last_name", frame.ErrEmpty},
		{frame.Bet{FirstName: "a", LastName: "b", Document: "", Birthdate: 20000101}, "document", frame.ErrDigits},
		{frame.Bet{Birthdate: 20000101}, "first_name", frame.ErrEmpty},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 2, 500} {
			bets := make([]frame.Bet, n)
			for i := range bets {
				bets[i] = tt.bet
			}
			b := mustEncode(t, &frame.Bets{First: 77, Bets: bets})
			f, err := decodeOne(t, &frame.Decoder{Today: fixedToday}, b)
			var fe *frame.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || fe.Bet != 0 || !errors.Is(err, tt.cause) {
				t.Errorf("%d bets like %+v: err = %v, want %s of bet 0 %v", n, tt.bet, err, tt.field, tt.cause)
				continue
			}
			if bf, ok := f.(*frame.Bets); !ok || bf.First != 77 {
				t.Errorf("%d bets like %+v: frame = %#v, want *Bets with First 77", n, tt.bet, f)
			}
		}
	}
}
