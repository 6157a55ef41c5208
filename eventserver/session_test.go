package eventserver

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// scriptCase is one named script, run over a fresh view of 5 agencies.
type scriptCase struct {
	name   string
	script string
}

func runScripts(t *testing.T, cases []scriptCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runScript(t, newFakeView(5), c.script) })
	}
}

// TestSessionHello covers AwaitingHello: what HELLO opens, what it refuses,
// and everything else a peer may or may not send before it.
func TestSessionHello(t *testing.T) {
	runScripts(t, []scriptCase{
		{"hello opens the agency's session", `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame`},
		{"hello reports the bets held and their chain", `
			view status 3 7 false
			hello 3 => register=3 WELCOME(held=7,w=3,c7) ; uploading frame`},
		{"hello of an agency whose FINISHED is on record starts waiting", `
			view status 3 7 true
			hello 3 => register=3 WELCOME(held=7,finished,w=3,c7) ; waiting idle`},
		{"hello for the last agency", `
			hello 5 => register=5 WELCOME(held=0,w=3,c0) ; uploading frame`},
		{"hello for agency 0", `
			hello 0 => ERROR(unknown_agency) close ; closed none`},
		{"hello for agency N+1", `
			hello 6 => ERROR(unknown_agency) close ; closed none`},
		{"hello twice", `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			hello 1 => ERROR(unexpected_frame) close ; closed none`},
		{"ping before hello", `
			ping abc => PONG(abc) ; awaiting_hello hello
			ping def => PONG(def) ; awaiting_hello hello
			hello 2  => register=2 WELCOME(held=0,w=3,c0) ; uploading frame`},
		{"an unsolicited pong before hello is ignored", `
			pong abc => - ; awaiting_hello hello
			hello 2  => register=2 WELCOME(held=0,w=3,c0) ; uploading frame`},
		{"bets before hello", `
			bets 0 3 => ERROR(unexpected_frame) close ; closed none`},
		{"a bad bet before hello is a state error", `
			badbets 0 3 1 => ERROR(unexpected_frame) close ; closed none`},
		{"finished before hello", `
			finished 0 => ERROR(unexpected_frame) close ; closed none`},
		{"query before hello", `
			query => ERROR(unexpected_frame) close ; closed none`},
		{"a server frame from the peer", `
			ack => ERROR(unexpected_frame) close ; closed none`},
		{"a server frame from the peer after hello", `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			ack     => ERROR(unexpected_frame) close ; closed none`},
		{"no hello in time", `
			ping a  => PONG(a) ; awaiting_hello hello
			timeout => ERROR(timeout) close ; closed none`},
		{"malformed frame", `
			raw malformed => ERROR(malformed) close ; closed none`},
		{"the first protocol's version", `
			raw badversion => ERROR(bad_version) close ; closed none`},
		{"unsupported version after hello", `
			hello 1        => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			raw badversion => ERROR(bad_version) close ; closed none`},
		{"unknown frame type", `
			raw unknowntype => ERROR(unknown_type) close ; closed none`},
		{"frame over the size limit", `
			raw toolarge => ERROR(too_large) close ; closed none`},
		{"nothing happens after close", `
			hello 6    => ERROR(unknown_agency) close ; closed none
			hello 1    => - ; closed none
			ping x     => - ; closed none
			bets 0 1   => - ; closed none
			shutdown   => - ; closed none
			timeout    => - ; closed none
			drawn      => - ; closed none
			replaced   => - ; closed none
			hangup     => - ; closed none
			stored 1 1 => - ; closed none`},
	})
}

// TestSessionIdentity covers what the transport proves: HELLO must name the
// agency whose key opened the connection, a plaintext peer of a secured
// server may only PING, and a refused peer gets the transport's code.
func TestSessionIdentity(t *testing.T) {
	runScripts(t, []scriptCase{
		{"hello names the proven agency", `
			limits secure
			auth 2  => - ; awaiting_hello hello
			hello 2 => register=2 WELCOME(held=0,w=3,c0) ; uploading frame`},
		{"hello names another agency than the key's", `
			limits secure
			auth 2  => - ; awaiting_hello hello
			hello 3 => ERROR(wrong_agency) close ; closed none`},
		{"hello on a secured server with nothing proven", `
			limits secure
			hello 1 => ERROR(wrong_agency) close ; closed none`},
		{"an agency outside the lottery is unknown before it is wrong", `
			limits secure
			auth 2  => - ; awaiting_hello hello
			hello 9 => ERROR(unknown_agency) close ; closed none`},
		{"without keys the proven agency is not enforced", `
			auth 2  => - ; awaiting_hello hello
			hello 3 => register=3 WELCOME(held=0,w=3,c0) ; uploading frame`},
		{"a plaintext peer may ping", `
			limits secure
			plaintext => - ; awaiting_hello hello
			ping hi   => PONG(hi) ; awaiting_hello hello
			pong hi   => - ; awaiting_hello hello
			ping again => PONG(again) ; awaiting_hello hello`},
		{"a plaintext peer may not say hello", `
			limits secure
			plaintext => - ; awaiting_hello hello
			ping hi   => PONG(hi) ; awaiting_hello hello
			hello 1   => ERROR(secure_required) close ; closed none`},
		{"a plaintext peer may not send bets", `
			limits secure
			plaintext => - ; awaiting_hello hello
			bets 0 2  => ERROR(secure_required) close ; closed none`},
		{"a plaintext peer may not send a bad bet either", `
			limits secure
			plaintext     => - ; awaiting_hello hello
			badbets 0 2 1 => ERROR(secure_required) close ; closed none`},
		{"a plaintext peer may not finish", `
			limits secure
			plaintext  => - ; awaiting_hello hello
			finished 0 => ERROR(secure_required) close ; closed none`},
		{"a plaintext peer may not query", `
			limits secure
			plaintext => - ; awaiting_hello hello
			query     => ERROR(secure_required) close ; closed none`},
		{"a plaintext peer that only pings still times out", `
			limits secure
			plaintext => - ; awaiting_hello hello
			ping hi   => PONG(hi) ; awaiting_hello hello
			timeout   => ERROR(timeout) close ; closed none`},
		{"refused for an unknown key", `
			refused unknown_key => ERROR(unknown_key) close ; closed none
			hello 1             => - ; closed none`},
		{"refused by a plaintext server", `
			refused insecure_server => ERROR(insecure_server) close ; closed none`},
		{"refused after a failed handshake", `
			refused handshake_failed => ERROR(handshake_failed) close ; closed none`},
	})
}

// TestSessionUpload covers Uploading: batches stored, replayed, refused by
// validation or by the store, and the store failing.
func TestSessionUpload(t *testing.T) {
	runScripts(t, []scriptCase{
		{"bets are requested and acknowledged with the chain", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3   => request=bets(a=1,0+3) ; uploading none
			stored 3 3 => ACK(0+3,held=3,c3) ; uploading frame
			bets 3 2   => request=bets(a=1,3+2) ; uploading none
			stored 2 5 => ACK(3+2,held=5,c5) ; uploading frame`},
		{"a replayed batch is acknowledged with what is held", `
			view status 1 5 false
			hello 1    => register=1 WELCOME(held=5,w=3,c5) ; uploading frame
			bets 0 3   => request=bets(a=1,0+3) ; uploading none
			stored 0 5 => ACK(0+3,held=5,c5) ; uploading frame`},
		{"an invalid bet rejects the batch at its stream index", `
			view status 1 10 false
			hello 1         => register=1 WELCOME(held=10,w=3,c10) ; uploading frame
			badbets 10 4 2  => REJECT(invalid_bet@12) ; uploading frame
			badbets 10 4 0  => REJECT(invalid_bet@10) ; uploading frame
			bets 10 4       => request=bets(a=1,10+4) ; uploading none`},
		{"an empty batch is malformed", `
			hello 1     => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			emptybets 4 => REJECT(malformed@4) ; uploading frame`},
		{"index gap", `
			hello 1          => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 9 2         => request=bets(a=1,9+2) ; uploading none
			stored-err gap 3 => REJECT(index_gap@3) ; uploading frame`},
		{"new bets the store refuses because the agency finished", `
			hello 1               => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 3 3              => request=bets(a=1,3+3) ; uploading none
			stored-err finished 3 => REJECT(already_finished@3) ; uploading frame`},
		{"storage failure", `
			hello 1              => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3             => request=bets(a=1,0+3) ; uploading none
			stored-err storage 0 => ERROR(storage) close ; closed none`},
		{"another server got there first", `
			hello 1            => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3           => request=bets(a=1,0+3) ; uploading none
			stored-err stale 0 => ERROR(storage) close ; closed none`},
		{"store closed", `
			hello 1             => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3            => request=bets(a=1,0+3) ; uploading none
			stored-err closed 0 => ERROR(shutting_down) close ; closed none`},
		{"request not queued: store closed", `
			hello 1              => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3             => request=bets(a=1,0+3) ; uploading none
			submit-failed closed => ERROR(shutting_down) close ; closed none
			stored 3 3           => - ; closed none`},
		{"request not queued: store broken", `
			hello 1               => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0            => request=finish(a=1,total=0) ; uploading none
			submit-failed storage => ERROR(storage) close ; closed none`},
		{"an early query subscribes", `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			view count 3
			query   => NOT_READY(3/5,retry=1s) ; uploading frame`},
		{"an unsolicited pong is ignored", `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			pong zz => - ; uploading frame
			bets 0 1 => request=bets(a=1,0+1) ; uploading none
			pong zz => - ; uploading none`},
		{"no frame in time", `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			timeout => ERROR(timeout) close ; closed none`},
		{"no deadline while the store owes an answer", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3   => request=bets(a=1,0+3) ; uploading none
			timeout    => - ; uploading none
			stored 3 3 => ACK(0+3,held=3,c3) ; uploading frame`},
	})
}

// TestSessionFinished covers FINISHED from Uploading: a receipt from the
// view, then NOT_READY before the draw or the commitment and winners after.
func TestSessionFinished(t *testing.T) {
	runScripts(t, []scriptCase{
		{"finished before the draw", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 6   => request=bets(a=1,0+6) ; uploading none
			stored 6 6 => ACK(0+6,held=6,c6) ; uploading frame
			finished 6 => request=finish(a=1,total=6) ; uploading none
			view count 2
			stored 0 6 => RECEIPT(a=1,bets=6,c6) NOT_READY(2/5,retry=1s) ; waiting idle`},
		{"finished after the draw", `
			view status 1 6 false
			hello 1    => register=1 WELCOME(held=6,w=3,c6) ; uploading frame
			finished 6 => request=finish(a=1,total=6) ; uploading none
			view count 5
			view winners 1 30000004 30000001
			view draw
			stored 0 6 => RECEIPT(a=1,bets=6,c6) COMMITMENT(root,p1) WINNERS([30000004 30000001],last) ; winners_sent frame`},
		{"finished with no bets and no winners", `
			view draw
			hello 4    => register=4 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0 => request=finish(a=4,total=0) ; uploading none
			stored 0 0 => RECEIPT(a=4,bets=0,c0) COMMITMENT(root,p4) WINNERS([],last) ; winners_sent frame`},
		{"finished with the wrong total", `
			hello 1               => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 7            => request=finish(a=1,total=7) ; uploading none
			stored-err mismatch 6 => ERROR(total_mismatch) close ; closed none`},
		{"finished fails in storage", `
			hello 1              => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0           => request=finish(a=1,total=0) ; uploading none
			stored-err storage 0 => ERROR(storage) close ; closed none`},
		{"finished when the store is closing", `
			hello 1             => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0          => request=finish(a=1,total=0) ; uploading none
			stored-err closed 0 => ERROR(shutting_down) close ; closed none`},
	})
}

// TestSessionWaiting covers Waiting: BETS and FINISHED still go to the
// store, which decides; FINISHED is answered again; queries subscribe.
func TestSessionWaiting(t *testing.T) {
	const waiting = `
		view status 1 6 true
		view count 3
		hello 1 => register=1 WELCOME(held=6,finished,w=3,c6) ; waiting idle
	`
	runScripts(t, []scriptCase{
		{"new bets after finished go to the store, which refuses them", waiting + `
			bets 6 2              => request=bets(a=1,6+2) ; waiting none
			stored-err finished 6 => REJECT(already_finished@6) ; waiting idle`},
		{"a replay after finished is acknowledged", waiting + `
			bets 0 6   => request=bets(a=1,0+6) ; waiting none
			stored 0 6 => ACK(0+6,held=6,c6) ; waiting idle`},
		{"a bad bet after finished is rejected", waiting + `
			badbets 6 2 1 => REJECT(invalid_bet@7) ; waiting idle`},
		{"finished again is answered again", waiting + `
			finished 6 => request=finish(a=1,total=6) ; waiting none
			stored 0 6 => RECEIPT(a=1,bets=6,c6) NOT_READY(3/5,retry=1s) ; waiting idle
			finished 6 => request=finish(a=1,total=6) ; waiting none
			stored 0 6 => RECEIPT(a=1,bets=6,c6) NOT_READY(3/5,retry=1s) ; waiting idle`},
		{"finished again with another total", waiting + `
			finished 7            => request=finish(a=1,total=7) ; waiting none
			stored-err mismatch 6 => ERROR(total_mismatch) close ; closed none`},
		{"a query subscribes to the push", waiting + `
			query => NOT_READY(3/5,retry=1s) ; waiting idle
			view count 5
			view winners 1 30000002
			view draw
			drawn => COMMITMENT(root,p1) WINNERS([30000002],last) ; winners_sent frame
			drawn => - ; winners_sent frame`},
		{"no push without a query", waiting + `
			view draw
			drawn => - ; waiting idle
			query => COMMITMENT(root,p1) WINNERS([],last) ; winners_sent frame`},
		{"ping while waiting", waiting + `
			ping c => PONG(c) ; waiting idle`},
	})
}

// TestSessionWinnersSent covers WinnersSent: the agency may ask again, send
// FINISHED again (RECEIPT and winners each time) or a replay; silence ends
// the session without an ERROR.
func TestSessionWinnersSent(t *testing.T) {
	const sent = `
		view status 2 3 true
		view winners 2 30000001
		view draw
		hello 2 => register=2 WELCOME(held=3,finished,w=3,c3) ; waiting idle
		query   => COMMITMENT(root,p2) WINNERS([30000001],last) ; winners_sent frame
	`
	runScripts(t, []scriptCase{
		{"query again", sent + `
			query => COMMITMENT(root,p2) WINNERS([30000001],last) ; winners_sent frame`},
		{"finished again gets the receipt and the winners again", sent + `
			finished 3 => request=finish(a=2,total=3) ; winners_sent none
			stored 0 3 => RECEIPT(a=2,bets=3,c3) COMMITMENT(root,p2) WINNERS([30000001],last) ; winners_sent frame
			finished 3 => request=finish(a=2,total=3) ; winners_sent none
			stored 0 3 => RECEIPT(a=2,bets=3,c3) COMMITMENT(root,p2) WINNERS([30000001],last) ; winners_sent frame`},
		{"new bets go to the store", sent + `
			bets 3 1              => request=bets(a=2,3+1) ; winners_sent none
			stored-err finished 3 => REJECT(already_finished@3) ; winners_sent frame`},
		{"a replay is acknowledged", sent + `
			bets 1 2   => request=bets(a=2,1+2) ; winners_sent none
			stored 0 3 => ACK(1+2,held=3,c3) ; winners_sent frame`},
		{"a bad bet is rejected", sent + `
			badbets 3 2 0 => REJECT(invalid_bet@3) ; winners_sent frame`},
		{"the draw again pushes nothing", sent + `
			drawn => - ; winners_sent frame`},
		{"ping", sent + `
			ping d => PONG(d) ; winners_sent frame`},
		{"silence ends the session quietly", sent + `
			timeout => close ; closed none`},
		{"no quiet close while the store owes an answer", sent + `
			bets 0 1   => request=bets(a=2,0+1) ; winners_sent none
			timeout    => - ; winners_sent none
			stored 0 3 => ACK(0+1,held=3,c3) ; winners_sent frame
			timeout    => close ; closed none`},
	})
}

// TestSessionEnds covers the events that end a session from any state.
func TestSessionEnds(t *testing.T) {
	states := map[string]string{
		"awaiting_hello": `
			ping a => PONG(a) ; awaiting_hello hello`,
		"uploading": `
			hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame`,
		"uploading with requests in flight": `
			hello 1  => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2 => request=bets(a=1,0+2) ; uploading none
			ping x   => - ; uploading none`,
		"waiting": `
			view status 1 0 true
			hello 1 => register=1 WELCOME(held=0,finished,w=3,c0) ; waiting idle`,
		"winners_sent": `
			view status 1 0 true
			view draw
			hello 1 => register=1 WELCOME(held=0,finished,w=3,c0) ; waiting idle
			query   => COMMITMENT(root,p1) WINNERS([],last) ; winners_sent frame`,
	}
	ends := []struct{ event, out string }{
		{"flood", "ERROR(flood) close"},
		{"replaced", "ERROR(replaced) close"},
		{"hangup", "-"},
		{"refused handshake_failed", "ERROR(handshake_failed) close"},
	}
	for name, setup := range states {
		for _, end := range ends {
			t.Run(name+"/"+end.event, func(t *testing.T) {
				runScript(t, newFakeView(5), setup+`
					`+end.event+` => `+end.out+` ; closed none
					stored 2 2 => - ; closed none
					drawn      => - ; closed none`)
			})
		}
	}
}

// TestSessionRing covers the window: up to W frames unanswered, answers in
// the order of the frames they answer, whatever finishes first.
func TestSessionRing(t *testing.T) {
	runScripts(t, []scriptCase{
		{"W batches in flight, busy at W", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2   => request=bets(a=1,0+2) ; uploading none
			bets 2 2   => request=bets(a=1,2+2) ; uploading none
			bets 4 2   => request=bets(a=1,4+2) ; uploading busy none
			stored 2 2 => ACK(0+2,held=2,c2) ; uploading none
			bets 6 2   => request=bets(a=1,6+2) ; uploading busy none
			stored 2 4 => ACK(2+2,held=4,c4) ; uploading none
			stored 2 6 => ACK(4+2,held=6,c6) ; uploading none
			stored 2 8 => ACK(6+2,held=8,c8) ; uploading frame`},
		{"an invalid bet is rejected behind the acks owed before it", `
			hello 1          => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2         => request=bets(a=1,0+2) ; uploading none
			badbets 2 3 1    => - ; uploading none
			bets 5 1         => request=bets(a=1,5+1) ; uploading busy none
			stored 2 2       => ACK(0+2,held=2,c2) REJECT(invalid_bet@3) ; uploading none
			stored-err gap 2 => REJECT(index_gap@2) ; uploading frame`},
		{"an empty batch is rejected behind the acks owed before it", `
			hello 1     => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2    => request=bets(a=1,0+2) ; uploading none
			emptybets 2 => - ; uploading none
			stored 2 2  => ACK(0+2,held=2,c2) REJECT(malformed@2) ; uploading frame`},
		{"ping and query wait behind requests", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2   => request=bets(a=1,0+2) ; uploading none
			ping a     => - ; uploading none
			query      => - ; uploading busy none
			stored 2 2 => ACK(0+2,held=2,c2) PONG(a) NOT_READY(0/5,retry=1s) ; uploading frame`},
		{"interleaved frames are answered in order", `
			limits window=5
			hello 1    => register=1 WELCOME(held=0,w=5,c0) ; uploading frame
			bets 0 1   => request=bets(a=1,0+1) ; uploading none
			ping a     => - ; uploading none
			bets 1 1   => request=bets(a=1,1+1) ; uploading none
			query      => - ; uploading none
			ping b     => - ; uploading busy none
			stored 1 1 => ACK(0+1,held=1,c1) PONG(a) ; uploading none
			stored 1 2 => ACK(1+1,held=2,c2) NOT_READY(0/5,retry=1s) PONG(b) ; uploading frame`},
		{"finished behind bets", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2   => request=bets(a=1,0+2) ; uploading none
			bets 2 2   => request=bets(a=1,2+2) ; uploading none
			finished 4 => request=finish(a=1,total=4) ; uploading busy none
			stored 2 2 => ACK(0+2,held=2,c2) ; uploading none
			stored 2 4 => ACK(2+2,held=4,c4) ; uploading none
			view count 1
			stored 0 4 => RECEIPT(a=1,bets=4,c4) NOT_READY(1/5,retry=1s) ; waiting idle`},
		{"bets behind finished are the store's to refuse", `
			view status 1 2 false
			hello 1               => register=1 WELCOME(held=2,w=3,c2) ; uploading frame
			finished 2            => request=finish(a=1,total=2) ; uploading none
			bets 2 1              => request=bets(a=1,2+1) ; uploading none
			stored 0 2            => RECEIPT(a=1,bets=2,c2) NOT_READY(0/5,retry=1s) ; waiting none
			stored-err finished 2 => REJECT(already_finished@2) ; waiting idle`},
		{"a store failure drops every answer owed", `
			hello 1              => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2             => request=bets(a=1,0+2) ; uploading none
			bets 2 2             => request=bets(a=1,2+2) ; uploading none
			ping x               => - ; uploading busy none
			stored-err storage 0 => ERROR(storage) close ; closed none
			stored 2 4           => - ; closed none`},
		{"a wrong total behind a batch", `
			hello 1               => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2              => request=bets(a=1,0+2) ; uploading none
			finished 5            => request=finish(a=1,total=5) ; uploading none
			stored 2 2            => ACK(0+2,held=2,c2) ; uploading none
			stored-err mismatch 2 => ERROR(total_mismatch) close ; closed none`},
		{"a window of 1 is the one-in-flight protocol", `
			limits window=1
			hello 1       => register=1 WELCOME(held=0,w=1,c0) ; uploading frame
			ping a        => PONG(a) ; uploading frame
			bets 0 3      => request=bets(a=1,0+3) ; uploading busy none
			stored 3 3    => ACK(0+3,held=3,c3) ; uploading frame
			badbets 3 2 0 => REJECT(invalid_bet@3) ; uploading frame
			query         => NOT_READY(0/5,retry=1s) ; uploading frame
			finished 3    => request=finish(a=1,total=3) ; uploading busy none
			stored 0 3    => RECEIPT(a=1,bets=3,c3) NOT_READY(0/5,retry=1s) ; waiting idle
			ping b        => PONG(b) ; waiting idle`},
		{"a window of 0 means 1", `
			limits window=0
			hello 1  => register=1 WELCOME(held=0,w=1,c0) ; uploading frame
			bets 0 3 => request=bets(a=1,0+3) ; uploading busy none`},
	})
}

// TestSessionDrawnPush covers the push of the winners to a session that
// asked before the draw: it waits for the answers owed, and comes once.
func TestSessionDrawnPush(t *testing.T) {
	runScripts(t, []scriptCase{
		{"the push waits for a finished in flight and is its answer", `
			hello 2    => register=2 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3   => request=bets(a=2,0+3) ; uploading none
			stored 3 3 => ACK(0+3,held=3,c3) ; uploading frame
			view count 4
			query      => NOT_READY(4/5,retry=1s) ; uploading frame
			finished 3 => request=finish(a=2,total=3) ; uploading none
			view count 5
			view winners 2 30000001
			view draw
			drawn      => - ; uploading none
			stored 0 3 => RECEIPT(a=2,bets=3,c3) COMMITMENT(root,p2) WINNERS([30000001],last) ; winners_sent frame
			drawn      => - ; winners_sent frame`},
		{"the push waits for a replay in flight", `
			view status 2 3 true
			hello 2    => register=2 WELCOME(held=3,finished,w=3,c3) ; waiting idle
			query      => NOT_READY(0/5,retry=1s) ; waiting idle
			bets 0 3   => request=bets(a=2,0+3) ; waiting none
			view draw
			drawn      => - ; waiting none
			stored 0 3 => ACK(0+3,held=3,c3) COMMITMENT(root,p2) WINNERS([],last) ; winners_sent frame`},
		{"a query waiting in the ring answers the draw once", `
			view status 2 3 true
			hello 2    => register=2 WELCOME(held=3,finished,w=3,c3) ; waiting idle
			query      => NOT_READY(0/5,retry=1s) ; waiting idle
			bets 0 3   => request=bets(a=2,0+3) ; waiting none
			query      => - ; waiting none
			view draw
			drawn      => - ; waiting none
			stored 0 3 => ACK(0+3,held=3,c3) COMMITMENT(root,p2) WINNERS([],last) ; winners_sent frame`},
		{"the draw seen before its event is pushed once", `
			view status 2 3 true
			hello 2    => register=2 WELCOME(held=3,finished,w=3,c3) ; waiting idle
			query      => NOT_READY(0/5,retry=1s) ; waiting idle
			ping p     => PONG(p) ; waiting idle
			bets 0 3   => request=bets(a=2,0+3) ; waiting none
			view draw
			stored 0 3 => ACK(0+3,held=3,c3) COMMITMENT(root,p2) WINNERS([],last) ; winners_sent frame
			drawn      => - ; winners_sent frame`},
	})
}

// TestSessionLiveness covers Wait() and the server's own PINGs to an
// agency waiting for the draw.
func TestSessionLiveness(t *testing.T) {
	runScripts(t, []scriptCase{
		{"ping, pong, ping, silence", `
			view status 1 4 true
			hello 1 => register=1 WELCOME(held=4,finished,w=3,c4) ; waiting idle
			timeout => PING(#1) ; waiting pong
			pong x  => - ; waiting idle
			timeout => PING(#2) ; waiting pong
			timeout => ERROR(timeout) close ; closed none`},
		{"only a pong answers the server's ping", `
			view status 1 4 true
			hello 1 => register=1 WELCOME(held=4,finished,w=3,c4) ; waiting idle
			timeout => PING(#1) ; waiting pong
			ping a  => PONG(a) ; waiting pong
			query   => NOT_READY(0/5,retry=1s) ; waiting pong
			pong b  => - ; waiting idle`},
		{"a waiting agency that finished in this session is pinged too", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0 => request=finish(a=1,total=0) ; uploading none
			stored 0 0 => RECEIPT(a=1,bets=0,c0) NOT_READY(0/5,retry=1s) ; waiting idle
			timeout    => PING(#1) ; waiting pong
			pong x     => - ; waiting idle`},
		{"no deadline while a request is in flight after a ping", `
			view status 1 4 true
			hello 1    => register=1 WELCOME(held=4,finished,w=3,c4) ; waiting idle
			timeout    => PING(#1) ; waiting pong
			bets 0 4   => request=bets(a=1,0+4) ; waiting none
			timeout    => - ; waiting none
			stored 0 4 => ACK(0+4,held=4,c4) ; waiting pong`},
		{"winners pushed while a pong is owed: silence then closes quietly", `
			view status 1 4 true
			hello 1 => register=1 WELCOME(held=4,finished,w=3,c4) ; waiting idle
			query   => NOT_READY(0/5,retry=1s) ; waiting idle
			timeout => PING(#1) ; waiting pong
			view draw
			drawn   => COMMITMENT(root,p1) WINNERS([],last) ; winners_sent frame
			timeout => close ; closed none`},
	})
}

// TestSessionDrain covers ShuttingDown: answers owed are sent first, then
// ERROR shutting_down; nothing new is taken on meanwhile.
func TestSessionDrain(t *testing.T) {
	runScripts(t, []scriptCase{
		{"idle sessions end at once", `
			shutdown => ERROR(shutting_down) close ; closed none`},
		{"idle uploading session", `
			hello 1  => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			shutdown => ERROR(shutting_down) close ; closed none`},
		{"idle waiting session", `
			view status 1 0 true
			hello 1  => register=1 WELCOME(held=0,finished,w=3,c0) ; waiting idle
			shutdown => ERROR(shutting_down) close ; closed none`},
		{"requests in flight are answered first", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2   => request=bets(a=1,0+2) ; uploading none
			bets 2 2   => request=bets(a=1,2+2) ; uploading none
			shutdown   => - ; uploading none
			stored 2 2 => ACK(0+2,held=2,c2) ; uploading none
			stored 2 4 => ACK(2+2,held=4,c4) ERROR(shutting_down) close ; closed none`},
		{"deferred answers are sent before the error", `
			hello 1       => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2      => request=bets(a=1,0+2) ; uploading none
			badbets 2 2 0 => - ; uploading none
			ping z        => - ; uploading busy none
			shutdown      => - ; uploading busy none
			stored 2 2    => ACK(0+2,held=2,c2) REJECT(invalid_bet@2) PONG(z) ERROR(shutting_down) close ; closed none`},
		{"nothing new is taken on while draining", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2   => request=bets(a=1,0+2) ; uploading none
			shutdown   => - ; uploading none
			bets 2 2   => - ; uploading none
			ping y     => - ; uploading none
			finished 4 => - ; uploading none
			stored 2 2 => ACK(0+2,held=2,c2) ERROR(shutting_down) close ; closed none`},
		{"a refused batch then the error", `
			hello 1          => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 5 3         => request=bets(a=1,5+3) ; uploading none
			shutdown         => - ; uploading none
			stored-err gap 0 => REJECT(index_gap@0) ERROR(shutting_down) close ; closed none`},
		{"a failing store ends it with its own error", `
			hello 1              => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 3             => request=bets(a=1,0+3) ; uploading none
			shutdown             => - ; uploading none
			stored-err storage 0 => ERROR(storage) close ; closed none`},
		{"finishing while draining", `
			hello 1    => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0 => request=finish(a=1,total=0) ; uploading none
			shutdown   => - ; uploading none
			stored 0 0 => RECEIPT(a=1,bets=0,c0) NOT_READY(0/5,retry=1s) ERROR(shutting_down) close ; closed none`},
		{"a push due when the ring empties goes before the error", `
			view status 1 2 true
			hello 1    => register=1 WELCOME(held=2,finished,w=3,c2) ; waiting idle
			query      => NOT_READY(0/5,retry=1s) ; waiting idle
			bets 0 2   => request=bets(a=1,0+2) ; waiting none
			shutdown   => - ; waiting none
			view draw
			drawn      => - ; waiting none
			stored 0 2 => ACK(0+2,held=2,c2) COMMITMENT(root,p1) WINNERS([],last) ERROR(shutting_down) close ; closed none`},
		{"replaced while draining", `
			hello 1  => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2 => request=bets(a=1,0+2) ; uploading none
			shutdown => - ; uploading none
			replaced => ERROR(replaced) close ; closed none`},
	})
}

// TestSessionObserver checks what the session tells its observer, in order.
func TestSessionObserver(t *testing.T) {
	runScripts(t, []scriptCase{
		{"a whole life", `
			observed      => moved(-,awaiting_hello)
			ping a        => PONG(a) ; awaiting_hello hello
			hello 1       => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			observed      => moved(awaiting_hello,uploading)
			bets 0 3      => request=bets(a=1,0+3) ; uploading none
			observed      => -
			stored 3 3    => ACK(0+3,held=3,c3) ; uploading frame
			observed      => batch(stored,3)
			bets 0 3      => request=bets(a=1,0+3) ; uploading none
			stored 0 3    => ACK(0+3,held=3,c3) ; uploading frame
			observed      => batch(replay,3)
			bets 2 3      => request=bets(a=1,2+3) ; uploading none
			stored 2 5    => ACK(2+3,held=5,c5) ; uploading frame
			observed      => batch(stored,3)
			badbets 5 2 1 => REJECT(invalid_bet@6) ; uploading frame
			observed      => batch(rejected,2) rejected(invalid_bet)
			emptybets 5   => REJECT(malformed@5) ; uploading frame
			observed      => batch(rejected,0) rejected(malformed)
			bets 9 1      => request=bets(a=1,9+1) ; uploading none
			stored-err gap 5 => REJECT(index_gap@5) ; uploading frame
			observed      => batch(rejected,1) rejected(index_gap)
			finished 5    => request=finish(a=1,total=5) ; uploading none
			stored 0 5    => RECEIPT(a=1,bets=5,c5) NOT_READY(0/5,retry=1s) ; waiting idle
			observed      => moved(uploading,waiting)
			bets 5 1      => request=bets(a=1,5+1) ; waiting none
			stored-err finished 5 => REJECT(already_finished@5) ; waiting idle
			observed      => batch(rejected,1) rejected(already_finished)
			timeout       => PING(#1) ; waiting pong
			pong x        => - ; waiting idle
			observed      => -
			view winners 1 30000001 30000002
			view draw
			drawn         => COMMITMENT(root,p1) WINNERS([30000001 30000002],last) ; winners_sent frame
			observed      => moved(waiting,winners_sent) winners(2)
			query         => COMMITMENT(root,p1) WINNERS([30000001 30000002],last) ; winners_sent frame
			observed      => winners(2)
			timeout       => close ; closed none
			observed      => moved(winners_sent,-)`},
		{"an error", `
			hello 9  => ERROR(unknown_agency) close ; closed none
			observed => moved(-,awaiting_hello) error(unknown_agency) moved(awaiting_hello,-)`},
		{"an error with requests in flight", `
			hello 1  => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 1 => request=bets(a=1,0+1) ; uploading none
			replaced => ERROR(replaced) close ; closed none
			observed => moved(-,awaiting_hello) moved(awaiting_hello,uploading) error(replaced) moved(uploading,-)`},
		{"a hangup sends nothing", `
			hello 1  => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			hangup   => - ; closed none
			observed => moved(-,awaiting_hello) moved(awaiting_hello,uploading) moved(uploading,-)`},
		{"a store error", `
			hello 1  => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 1 => request=bets(a=1,0+1) ; uploading none
			stored-err storage 0 => ERROR(storage) close ; closed none
			observed => moved(-,awaiting_hello) moved(awaiting_hello,uploading) error(storage) moved(uploading,-)`},
		{"the last agency gets its winners with its receipt", `
			view draw
			view winners 3 1 2 3
			hello 3    => register=3 WELCOME(held=0,w=3,c0) ; uploading frame
			finished 0 => request=finish(a=3,total=0) ; uploading none
			stored 0 0 => RECEIPT(a=3,bets=0,c0) COMMITMENT(root,p3) WINNERS([1 2 3],last) ; winners_sent frame
			observed   => moved(-,awaiting_hello) moved(awaiting_hello,uploading) moved(uploading,waiting) moved(waiting,winners_sent) winners(3)`},
	})
}

// TestSessionScript is one agency's whole life over a window of 4, golden
// style: pipelined upload with a refused batch and a gap, a replay, an early
// query, FINISHED, the server's ping, the push, FINISHED again, the drain.
func TestSessionScript(t *testing.T) {
	runScript(t, newFakeView(5), `
		limits window=4 secure

		# the transport proves agency 4; the agency checks the server is alive and says hello
		auth 4                => - ; awaiting_hello hello
		ping hi               => PONG(hi) ; awaiting_hello hello
		hello 4               => register=4 WELCOME(held=0,w=4,c0) ; uploading frame

		# three batches pipelined, the second with an invalid bet
		bets 0 3              => request=bets(a=4,0+3) ; uploading none
		badbets 3 3 1         => - ; uploading none
		bets 3 3              => request=bets(a=4,3+3) ; uploading none
		stored 3 3            => ACK(0+3,held=3,c3) REJECT(invalid_bet@4) ; uploading none
		stored 3 6            => ACK(3+3,held=6,c6) ; uploading frame

		# a gap and a replay in flight together
		bets 9 1              => request=bets(a=4,9+1) ; uploading none
		bets 3 3              => request=bets(a=4,3+3) ; uploading none
		stored-err gap 6      => REJECT(index_gap@6) ; uploading none
		stored 0 6            => ACK(3+3,held=6,c6) ; uploading frame

		# asking early is allowed and subscribes
		view count 3
		query                 => NOT_READY(3/5,retry=1s) ; uploading frame

		# finish with the right total, right behind the last batch
		bets 6 3              => request=bets(a=4,6+3) ; uploading none
		finished 9            => request=finish(a=4,total=9) ; uploading none
		stored 3 9            => ACK(6+3,held=9,c9) ; uploading none
		view count 4
		stored 0 9            => RECEIPT(a=4,bets=9,c9) NOT_READY(4/5,retry=1s) ; waiting idle

		# the server checks the agency is still there
		timeout               => PING(#1) ; waiting pong
		pong x                => - ; waiting idle

		# the last agency finishes elsewhere; the draw is pushed once
		view count 5
		view winners 4 30000002 30000002 30000008
		view draw
		drawn                 => COMMITMENT(root,p4) WINNERS([30000002 30000002 30000008],last) ; winners_sent frame
		drawn                 => - ; winners_sent frame

		# FINISHED again: the receipt and the winners again
		finished 9            => request=finish(a=4,total=9) ; winners_sent none
		stored 0 9            => RECEIPT(a=4,bets=9,c9) COMMITMENT(root,p4) WINNERS([30000002 30000002 30000008],last) ; winners_sent frame

		# the server drains with a query waiting behind a replay
		bets 0 3              => request=bets(a=4,0+3) ; winners_sent none
		query                 => - ; winners_sent none
		shutdown              => - ; winners_sent none
		stored 0 9            => ACK(0+3,held=9,c9) COMMITMENT(root,p4) WINNERS([30000002 30000002 30000008],last) ERROR(shutting_down) close ; closed none
		query                 => - ; closed none
	`)
}

// TestSessionAnswersLeaveInFrameOrder feeds random frames to sessions of
// several windows, answering requests at random moments, and checks against
// a model that every frame is answered exactly once, in the order received;
// that Busy is exactly "W frames unanswered"; and that no deadline runs
// while an answer is owed.
func TestSessionAnswersLeaveInFrameOrder(t *testing.T) {
	for _, window := range []int{1, 2, 3, 5, 16} {
		for seed := uint64(1); seed <= 4; seed++ {
			t.Run(fmt.Sprintf("window %d seed %d", window, seed), func(t *testing.T) {
				checkFrameOrder(t, window, seed)
			})
		}
	}
}

func checkFrameOrder(t *testing.T, window int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(window)))
	limits := scriptLimits
	limits.Window = window
	s, _, _ := newTestSession(newFakeView(5), limits)
	s.Step(received(t, &frame.Hello{Agency: 1}))

	var (
		want     []string           // the answer owed to each frame, in the order received
		got      []string           // every answer sent, in order
		requests []*persist.Request // requests the store has not answered, oldest first
		owed     int                // frames not answered yet
		first    uint64             // distinct batch indexes, so answers name their frame
	)
	take := func(out Output) {
		t.Helper()
		if out.Close {
			t.Fatalf("session closed: %s", describeOutput(out))
		}
		if out.Request != nil {
			requests = append(requests, out.Request)
		}
		for _, f := range out.Send {
			got = append(got, describeFrame(f))
			owed--
		}
	}
	for step := 0; step < 400; step++ {
		if busy := owed >= window; s.Busy() != busy {
			t.Fatalf("step %d: Busy %t with %d of %d frames unanswered", step, s.Busy(), owed, window)
		}
		if (s.Wait() == WaitNone) != (owed > 0) {
			t.Fatalf("step %d: Wait %s with %d frames unanswered", step, waitNames[s.Wait()], owed)
		}
		if len(requests) > 0 && (s.Busy() || rng.IntN(3) == 0) {
			r := requests[0]
			requests = requests[1:]
			take(s.Step(Stored{Result: persist.Result{Stored: len(r.Bets), Held: r.First + uint64(len(r.Bets)),
				Chain: scriptChain(r.First + uint64(len(r.Bets)))}}))
			continue
		}
		if s.Busy() {
			t.Fatalf("step %d: busy with no request to answer", step)
		}
		first += 10
		owed++
		switch k := rng.IntN(10); {
		case k < 5:
			n := 1 + rng.IntN(4)
			want = append(want, fmt.Sprintf("ACK(%d+%d,held=%d,c%d)", first, n, first+uint64(n), first+uint64(n)))
			take(s.Step(received(t, &frame.Bets{First: first, Bets: sessionBets(first, n)})))
		case k == 5:
			bets := sessionBets(first, 3)
			bad := rng.IntN(3)
			bets[bad].Number = 10000
			want = append(want, fmt.Sprintf("REJECT(invalid_bet@%d)", first+uint64(bad)))
			take(s.Step(received(t, &frame.Bets{First: first, Bets: bets})))
		case k == 6:
			want = append(want, fmt.Sprintf("REJECT(malformed@%d)", first))
			take(s.Step(received(t, &frame.Bets{First: first})))
		case k < 9:
			payload := strconv.FormatUint(first, 10)
			want = append(want, "PONG("+payload+")")
			take(s.Step(received(t, &frame.Ping{Payload: []byte(payload)})))
		default:
			want = append(want, "NOT_READY(0/5,retry=1s)")
			take(s.Step(received(t, &frame.QueryWinners{})))
		}
	}
	for len(requests) > 0 {
		r := requests[0]
		requests = requests[1:]
		take(s.Step(Stored{Result: persist.Result{Stored: len(r.Bets), Held: r.First + uint64(len(r.Bets)),
			Chain: scriptChain(r.First + uint64(len(r.Bets)))}}))
	}
	if owed != 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("%d frames unanswered; answers\n%s\nwant\n%s", owed, strings.Join(got, " "), strings.Join(want, " "))
	}
	if s.Wait() != WaitFrame || s.Busy() {
		t.Errorf("after every answer: Wait %s, Busy %t; want frame, false", waitNames[s.Wait()], s.Busy())
	}
}

// TestSessionWelcomeCarriesTheLimits checks every field of WELCOME.
func TestSessionWelcomeCarriesTheLimits(t *testing.T) {
	v := newFakeView(5)
	v.held[2], v.finished[2] = 12, true
	for _, tt := range []struct {
		window, want int
	}{{7, 7}, {0, 1}, {-3, 1}, {70000, 0xFFFF}} {
		s, _, _ := newTestSession(v, Limits{Window: tt.window, MaxFrame: 4096, ReadTimeout: 3 * time.Second,
			PingInterval: 9 * time.Second, RetryAfter: 2 * time.Second})
		if s.Window() != 1 {
			t.Errorf("window %d: Window() %d before HELLO, want 1 (only HELLO may be pending)", tt.window, s.Window())
		}
		out := s.Step(received(t, &frame.Hello{Agency: 2}))
		if s.Window() != tt.want {
			t.Errorf("window %d: Window() %d after HELLO, want WELCOME's %d", tt.window, s.Window(), tt.want)
		}
		if len(out.Send) != 1 {
			t.Fatalf("HELLO gave %s", describeOutput(out))
		}
		want := &frame.Welcome{Held: 12, Finished: true, Window: uint16(tt.want), MaxFrame: 4096,
			ReadTimeout: 3 * time.Second, PingInterval: 9 * time.Second, Chain: scriptChain(12)}
		if !reflect.DeepEqual(out.Send[0], want) {
			t.Errorf("window %d: WELCOME %+v, want %+v", tt.window, out.Send[0], want)
		}
	}
}

// TestSessionRequestCarriesTheBatch checks the requests hold the decoded
// bets and the FINISHED total, for the agency of the session.
func TestSessionRequestCarriesTheBatch(t *testing.T) {
	s, _, _ := newTestSession(newFakeView(5), scriptLimits)
	s.Step(received(t, &frame.Hello{Agency: 2}))
	sent := sessionBets(4, 5)
	out := s.Step(received(t, &frame.Bets{First: 4, Bets: sent}))
	if out.Request == nil {
		t.Fatalf("BETS gave %s, want a request", describeOutput(out))
	}
	if r := out.Request; r.Agency != 2 || r.First != 4 || r.Finish || r.Done != nil {
		t.Errorf("request %+v, want agency 2 first 4, not finish, no Done", r)
	}
	if !reflect.DeepEqual(out.Request.Bets, sent) {
		t.Errorf("request bets %+v\nwant %+v", out.Request.Bets, sent)
	}
	out = s.Step(received(t, &frame.Finished{Total: 9}))
	if r := out.Request; r == nil || r.Agency != 2 || !r.Finish || r.Total != 9 || len(r.Bets) != 0 {
		t.Errorf("FINISHED gave request %+v, want finish agency 2 total 9", r)
	}
}

// TestSessionReceiptComesFromTheView checks the RECEIPT sent is the one the
// view signed, for the agency, the total and the chain the store answered.
func TestSessionReceiptComesFromTheView(t *testing.T) {
	v := newFakeView(5)
	s, _, _ := newTestSession(v, scriptLimits)
	s.Step(received(t, &frame.Hello{Agency: 3}))
	s.Step(received(t, &frame.Finished{Total: 8}))
	out := s.Step(Stored{Result: persist.Result{Held: 8, Chain: scriptHash("store chain")}})
	if want := []string{"3/8/store chain"}; !reflect.DeepEqual(v.receipts, want) {
		t.Fatalf("view signed %q, want %q", v.receipts, want)
	}
	r, ok := out.Send[0].(*frame.Receipt)
	if !ok {
		t.Fatalf("first answer %s, want RECEIPT", describeOutput(out))
	}
	if want := v.Receipt(3, 8, scriptHash("store chain")); !reflect.DeepEqual(r, want) {
		t.Errorf("RECEIPT %+v, want the view's %+v", r, want)
	}
}

// TestSessionWinnersChunks checks a long winners list is split into frames
// that each fit, in order, after the commitment, with only the last marked.
func TestSessionWinnersChunks(t *testing.T) {
	v := newFakeView(1)
	docs := make([]string, 2000)
	for i := range docs {
		docs[i] = strconv.Itoa(1000000000 + i)
	}
	v.winners[1] = docs
	v.drawn = true
	s, _, obs := newTestSession(v, scriptLimits)
	s.Step(received(t, &frame.Hello{Agency: 1}))
	obs.take()
	out := s.Step(received(t, &frame.QueryWinners{}))
	if len(out.Send) < 3 {
		t.Fatalf("%d documents sent in %d frames, want a commitment and several chunks", len(docs), len(out.Send))
	}
	if _, ok := out.Send[0].(*frame.Commitment); !ok {
		t.Fatalf("first frame %s, want COMMITMENT", out.Send[0].Type())
	}
	var got []string
	chunks := out.Send[1:]
	for i, f := range chunks {
		w, ok := f.(*frame.Winners)
		if !ok {
			t.Fatalf("frame %d is %s, want WINNERS", i, f.Type())
		}
		if w.Last != (i == len(chunks)-1) {
			t.Errorf("chunk %d of %d has Last %t", i, len(chunks), w.Last)
		}
		b, err := frame.Encode(w)
		if err != nil {
			t.Fatalf("chunk %d does not encode: %v", i, err)
		}
		if len(b) > frame.MaxSize {
			t.Errorf("chunk %d is %d bytes, limit %d", i, len(b), frame.MaxSize)
		}
		got = append(got, w.Documents...)
	}
	if !reflect.DeepEqual(got, docs) {
		t.Errorf("documents across chunks differ from the winners (%d vs %d)", len(got), len(docs))
	}
	if want := []string{"moved(uploading,winners_sent)", "winners(2000)"}; !reflect.DeepEqual(obs.take(), want) {
		t.Errorf("observer calls differ, want %q", want)
	}
}

// logLine is what a test checks of one observed entry.
type logLine struct {
	level   zapcore.Level
	message string
	fields  map[string]any
}

func logLines(logs *observer.ObservedLogs, message string) []logLine {
	var out []logLine
	for _, e := range logs.FilterMessage(message).All() {
		out = append(out, logLine{level: e.Level, message: e.Message, fields: e.ContextMap()})
	}
	return out
}

// checkFields fails unless every field in want has that value in line.
func checkFields(t *testing.T, line logLine, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := line.fields[k]; !ok || !reflect.DeepEqual(got, v) {
			t.Errorf("%s line: field %s = %#v, want %#v (fields %v)", line.message, k, got, v, line.fields)
		}
	}
}

// TestSessionErrorLogs checks every ERROR is logged once as session_error
// with its code, the state it ended and the agency; the quiet close of a
// finished agency logs none.
func TestSessionErrorLogs(t *testing.T) {
	for _, tt := range []struct {
		script string
		want   map[string]any // fields of the one session_error line; nil for none
	}{
		{`timeout => ERROR(timeout) close ; closed none`,
			map[string]any{"code": "timeout", "state": "awaiting_hello", "agency": uint32(0), "result": "fail"}},
		{`hello 1 => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
		  timeout => ERROR(timeout) close ; closed none`,
			map[string]any{"code": "timeout", "state": "uploading", "agency": uint32(1)}},
		{`hello 2 => register=2 WELCOME(held=0,w=3,c0) ; uploading frame
		  finished 3 => request=finish(a=2,total=3) ; uploading none
		  stored-err mismatch 0 => ERROR(total_mismatch) close ; closed none`,
			map[string]any{"code": "total_mismatch", "state": "uploading", "agency": uint32(2)}},
		{`view status 3 0 true
		  hello 3 => register=3 WELCOME(held=0,finished,w=3,c0) ; waiting idle
		  timeout => PING(#1) ; waiting pong
		  timeout => ERROR(timeout) close ; closed none`,
			map[string]any{"code": "timeout", "state": "waiting", "agency": uint32(3)}},
		{`hello 4 => register=4 WELCOME(held=0,w=3,c0) ; uploading frame
		  replaced => ERROR(replaced) close ; closed none`,
			map[string]any{"code": "replaced", "state": "uploading", "agency": uint32(4)}},
		{`shutdown => ERROR(shutting_down) close ; closed none`,
			map[string]any{"code": "shutting_down", "state": "awaiting_hello"}},
		{`view draw
		  view status 1 0 true
		  hello 1 => register=1 WELCOME(held=0,finished,w=3,c0) ; waiting idle
		  query   => COMMITMENT(root,p1) WINNERS([],last) ; winners_sent frame
		  timeout => close ; closed none`, nil},
		{`refused unknown_key => ERROR(unknown_key) close ; closed none`,
			map[string]any{"code": "unknown_key", "state": "awaiting_hello", "agency": uint32(0)}},
		// Counted in the server's connection_refused summary instead.
		{`refused-quietly unknown_key => ERROR(unknown_key) close ; closed none`, nil},
	} {
		r := runScript(t, newFakeView(5), tt.script)
		if t.Failed() {
			return
		}
		lines := logLines(r.logs, "session_error")
		switch {
		case tt.want == nil && len(lines) != 0:
			t.Errorf("%s\nlogged session_error %v, want none", tt.script, lines[0].fields)
		case tt.want != nil && len(lines) != 1:
			t.Errorf("%s\nlogged session_error %d times, want once", tt.script, len(lines))
		case tt.want != nil:
			if lines[0].level != zapcore.WarnLevel {
				t.Errorf("session_error at %s, want WARN", lines[0].level)
			}
			checkFields(t, lines[0], tt.want)
		}
	}
}

// TestSessionBetLogs checks the contract lines about bets: one
// apuesta_recibida per batch, success or fail with its size, and one DEBUG
// apuesta_almacenada per newly stored bet.
func TestSessionBetLogs(t *testing.T) {
	hello := func(t *testing.T) (*Session, *observer.ObservedLogs) {
		s, logs, _ := newTestSession(newFakeView(5), scriptLimits)
		s.Step(received(t, &frame.Hello{Agency: 1}))
		return s, logs
	}
	t.Run("stored batch", func(t *testing.T) {
		s, logs := hello(t)
		bets := sessionBets(0, 3)
		s.Step(received(t, &frame.Bets{First: 0, Bets: bets}))
		if n := logs.FilterMessage("apuesta_recibida").Len(); n != 0 {
			t.Fatalf("apuesta_recibida logged %d times before the store answered", n)
		}
		s.Step(Stored{Result: persist.Result{Stored: 3, Held: 3}})
		got := logLines(logs, "apuesta_recibida")
		if len(got) != 1 {
			t.Fatalf("apuesta_recibida logged %d times, want 1", len(got))
		}
		if got[0].level != zapcore.InfoLevel {
			t.Errorf("apuesta_recibida at %s, want INFO", got[0].level)
		}
		checkFields(t, got[0], map[string]any{"result": "success", "cantidad": int64(3)})
		stored := logLines(logs, "apuesta_almacenada")
		if len(stored) != len(bets) {
			t.Fatalf("apuesta_almacenada logged %d times, want %d", len(stored), len(bets))
		}
		for i, line := range stored {
			if line.level != zapcore.DebugLevel {
				t.Errorf("apuesta_almacenada at %s, want DEBUG", line.level)
			}
			checkFields(t, line, map[string]any{"result": "success", "dni": bets[i].Document, "numero": bets[i].Number})
		}
	})
	t.Run("partly held batch logs only the new bets", func(t *testing.T) {
		s, logs := hello(t)
		bets := sessionBets(0, 4)
		s.Step(received(t, &frame.Bets{First: 0, Bets: bets}))
		s.Step(Stored{Result: persist.Result{Stored: 1, Held: 4}})
		checkFields(t, logLines(logs, "apuesta_recibida")[0], map[string]any{"result": "success", "cantidad": int64(4)})
		stored := logLines(logs, "apuesta_almacenada")
		if len(stored) != 1 {
			t.Fatalf("apuesta_almacenada logged %d times, want 1 (the only new bet)", len(stored))
		}
		checkFields(t, stored[0], map[string]any{"dni": bets[3].Document, "numero": bets[3].Number})
	})
	t.Run("pipelined batches log in answer order", func(t *testing.T) {
		s, logs := hello(t)
		s.Step(received(t, &frame.Bets{First: 0, Bets: sessionBets(0, 1)}))
		s.Step(received(t, &frame.Bets{First: 1, Bets: sessionBets(1, 2)}))
		s.Step(Stored{Result: persist.Result{Stored: 1, Held: 1}})
		s.Step(Stored{Result: persist.Result{Stored: 2, Held: 3}})
		var sizes []int64
		for _, l := range logLines(logs, "apuesta_recibida") {
			sizes = append(sizes, l.fields["cantidad"].(int64))
		}
		if want := []int64{1, 2}; !reflect.DeepEqual(sizes, want) {
			t.Errorf("apuesta_recibida sizes %v, want %v", sizes, want)
		}
	})
	t.Run("replayed batch stores nothing", func(t *testing.T) {
		s, logs := hello(t)
		s.Step(received(t, &frame.Bets{First: 0, Bets: sessionBets(0, 2)}))
		s.Step(Stored{Result: persist.Result{Stored: 0, Held: 2}})
		if n := logs.FilterMessage("apuesta_almacenada").Len(); n != 0 {
			t.Errorf("apuesta_almacenada logged %d times for a replay, want 0", n)
		}
	})
	t.Run("invalid bet", func(t *testing.T) {
		s, logs := hello(t)
		bets := sessionBets(0, 5)
		bets[4].Number = 10000
		s.Step(received(t, &frame.Bets{First: 0, Bets: bets}))
		got := logLines(logs, "apuesta_recibida")
		if len(got) != 1 {
			t.Fatalf("apuesta_recibida logged %d times, want 1", len(got))
		}
		checkFields(t, got[0], map[string]any{"result": "fail", "cantidad": int64(5)})
		if n := logs.FilterMessage("apuesta_almacenada").Len(); n != 0 {
			t.Errorf("apuesta_almacenada logged %d times for a refused batch", n)
		}
	})
	for _, refusal := range []string{"gap", "finished"} {
		t.Run("refused by the store: "+refusal, func(t *testing.T) {
			s, logs := hello(t)
			s.Step(received(t, &frame.Bets{First: 7, Bets: sessionBets(7, 2)}))
			s.Step(Stored{Result: persist.Result{Held: 3, Err: storeErrors[refusal]}})
			got := logLines(logs, "apuesta_recibida")
			if len(got) != 1 {
				t.Fatalf("apuesta_recibida logged %d times, want 1", len(got))
			}
			checkFields(t, got[0], map[string]any{"result": "fail", "cantidad": int64(2)})
			if n := logs.FilterMessage("apuesta_almacenada").Len(); n != 0 {
				t.Errorf("apuesta_almacenada logged %d times for a refused batch", n)
			}
		})
	}
	t.Run("debug off", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		s := NewSession(newFakeView(5), zap.New(core), nil, scriptLimits) // a nil observer is allowed
		s.Step(received(t, &frame.Hello{Agency: 1}))
		s.Step(received(t, &frame.Bets{First: 0, Bets: sessionBets(0, 2)}))
		s.Step(Stored{Result: persist.Result{Stored: 2, Held: 2}})
		if logs.FilterMessage("apuesta_recibida").Len() != 1 || logs.FilterMessage("apuesta_almacenada").Len() != 0 {
			t.Errorf("at INFO: %d apuesta_recibida and %d apuesta_almacenada, want 1 and 0",
				logs.FilterMessage("apuesta_recibida").Len(), logs.FilterMessage("apuesta_almacenada").Len())
		}
	})
}

// TestSessionLogResults checks every line a session writes uses one of the
// contract's three result words.
func TestSessionLogResults(t *testing.T) {
	r := runScript(t, newFakeView(2), `
		hello 1       => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
		bets 0 2      => request=bets(a=1,0+2) ; uploading none
		badbets 2 1 0 => - ; uploading none
		stored 2 2    => ACK(0+2,held=2,c2) REJECT(invalid_bet@2) ; uploading frame
		bets 5 1      => request=bets(a=1,5+1) ; uploading none
		stored-err gap 2 => REJECT(index_gap@2) ; uploading frame
		finished 2    => request=finish(a=1,total=2) ; uploading none
		stored 0 2    => RECEIPT(a=1,bets=2,c2) NOT_READY(0/2,retry=1s) ; waiting idle
		view draw
		query         => COMMITMENT(root,p1) WINNERS([],last) ; winners_sent frame
		timeout       => close ; closed none`)
	r2 := runScript(t, newFakeView(2), `
		hello 9 => ERROR(unknown_agency) close ; closed none`)
	if t.Failed() {
		return
	}
	for _, e := range append(r.logs.All(), r2.logs.All()...) {
		res, _ := e.ContextMap()["result"].(string)
		if res != "success" && res != "fail" && res != "in_progress" {
			t.Errorf("%s line has result %q", e.Message, res)
		}
	}
}

// TestSessionProgrammingErrors checks that what only a bug in the caller
// can cause panics rather than going unnoticed.
func TestSessionProgrammingErrors(t *testing.T) {
	for name, steps := range map[string][]Event{
		"unknown event":                   {strangeEvent{}},
		"a store answer nobody waits for": {Received{Frame: &frame.Hello{Agency: 1}}, Stored{}},
	} {
		t.Run(name, func(t *testing.T) {
			s, _, _ := newTestSession(newFakeView(1), scriptLimits)
			for i, ev := range steps {
				last := i == len(steps)-1
				func() {
					defer func() {
						if r := recover(); (r != nil) != last {
							t.Errorf("step %d (%T): panic %v", i, ev, r)
						}
					}()
					s.Step(ev)
				}()
			}
		})
	}
}

type strangeEvent struct{}

func (strangeEvent) event() {}

// TestSessionServerPingPayload checks the server's PINGs carry an 8-byte
// counter, so that a PONG can be told from an old one in a capture.
func TestSessionServerPingPayload(t *testing.T) {
	v := newFakeView(1)
	v.finished[1] = true
	s, _, _ := newTestSession(v, scriptLimits)
	s.Step(received(t, &frame.Hello{Agency: 1}))
	for n := uint64(1); n <= 3; n++ {
		out := s.Step(TimedOut{})
		p, ok := out.Send[0].(*frame.Ping)
		if !ok || len(p.Payload) != 8 || binary.BigEndian.Uint64(p.Payload) != n {
			t.Fatalf("timeout %d gave %s, want PING with counter %d", n, describeOutput(out), n)
		}
		s.Step(received(t, &frame.Pong{Payload: p.Payload}))
	}
}

// TestSessionDrainDropsAMalformedPayload: while draining, a frame read whole
// but malformed is dropped like any other new frame; the batch handed to the
// writer is still ACKed before ERROR shutting_down.
func TestSessionDrainDropsAMalformedPayload(t *testing.T) {
	runScripts(t, []scriptCase{
		{"a malformed payload while draining is dropped, the ACK still sent", `
			hello 1       => register=1 WELCOME(held=0,w=3,c0) ; uploading frame
			bets 0 2      => request=bets(a=1,0+2) ; uploading none
			shutdown      => - ; uploading none
			raw malformed => - ; uploading none
			stored 2 2    => ACK(0+2,held=2,c2) ERROR(shutting_down) close ; closed none`},
	})
}
