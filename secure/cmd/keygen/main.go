// Command keygen writes the key files of a secured deployment into one
// directory: the server's X25519 key pair (server.key, server.pub) and
// Ed25519 signing key pair (server-sign.key, server-sign.pub), and an X25519
// key pair per agency (agency-I.key, agency-I.pub).
//
// It never overwrites a file, so running it again with a larger --agencies
// adds only the new agencies. A private key whose public file is missing
// gets it derived; a public file without its private key (as on a server,
// once the agencies' private keys went to their owners) is left alone.
// Private key files are mode 0600, public ones 0644. With --only I it
// writes agency I's pair alone: on the agency's own machine, or to rotate
// that agency's key in a scratch folder.
//
// Bad flags exit with status 2, I/O failures with status 1.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/secure"
)

// maxAgencies matches the event server's own limit.
const maxAgencies = 1 << 20

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	dir, agencies, only, err := parse(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "keygen: %v\n", err)
		return 2
	}
	log, err := logging.New("info", logging.FormatConsole, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "keygen: %v\n", err)
		return 1
	}
	defer func() { _ = log.Sync() }()

	g := &generator{dir: dir, log: log}
	scope := zap.Int("agencies", agencies)
	if only > 0 {
		err, scope = g.only(uint32(only)), zap.Int("only", only)
	} else {
		err = g.all(agencies)
	}
	if err != nil {
		log.Error("keygen", logging.Fail, zap.String("dir", dir), scope,
			zap.Int("written", g.written), zap.Int("kept", g.kept), zap.Error(err))
		return 1
	}
	log.Info("keygen", logging.Success, zap.String("dir", dir), scope,
		zap.Int("written", g.written), zap.Int("kept", g.kept))
	return 0
}

// parse reads the flags.
func parse(args []string, stderr io.Writer) (dir string, agencies, only int, err error) {
	flags := pflag.NewFlagSet("keygen", pflag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&dir, "dir", ".keys", "directory for the key files (created, mode 0700, if missing)")
	flags.IntVar(&agencies, "agencies", 5, "write key pairs for agencies 1 to N (0: only the server's)")
	flags.IntVar(&only, "only", 0, "write agency I's key pair alone, nothing of the server's or other agencies' (instead of --agencies)")
	if err := flags.Parse(args); err != nil {
		return "", 0, 0, err
	}
	switch {
	case flags.NArg() > 0:
		return "", 0, 0, fmt.Errorf("unexpected argument %q (all settings are flags)", flags.Arg(0))
	case dir == "":
		return "", 0, 0, errors.New("invalid --dir: empty")
	case agencies < 0 || agencies > maxAgencies:
		return "", 0, 0, fmt.Errorf("invalid --agencies %d: want 0 to %d", agencies, maxAgencies)
	case flags.Changed("only") && (only < 1 || only > maxAgencies):
		return "", 0, 0, fmt.Errorf("invalid --only %d: want an agency from 1 to %d", only, maxAgencies)
	case flags.Changed("only") && flags.Changed("agencies"):
		return "", 0, 0, errors.New("--only and --agencies exclude each other: --only I writes agency I's pair alone")
	}
	return dir, agencies, only, nil
}

// generator writes the missing key files of one directory and counts them.
type generator struct {
	dir     string
	log     *zap.Logger
	written int // files written
	kept    int // files that existed and were left as they are
}

// all ensures every key pair of the server and of agencies 1 to n.
func (g *generator) all(n int) error {
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	if err := g.ensure("server", secure.ServerKeyFile, secure.ServerPubFile, &noiseKey{}); err != nil {
		return err
	}
	if err := g.ensure("server", secure.SignKeyFile, secure.VerifyKeyFile, &signingKey{}); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		if err := g.agency(uint32(i)); err != nil {
			return err
		}
	}
	return nil
}

// only ensures agency id's key pair alone.
func (g *generator) only(id uint32) error {
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	return g.agency(id)
}

func (g *generator) agency(id uint32) error {
	return g.ensure("agency "+strconv.FormatUint(uint64(id), 10), secure.AgencyKeyFile(id), secure.AgencyPubFile(id), &noiseKey{})
}

// keyPair is one kind of key pair as keygen handles it.
type keyPair interface {
	generate() error
	load(path string) error // the private key
	public() []byte
	loadPublic(path string) ([]byte, error)
	writePrivate(path, owner string) error
	writePublic(path, owner string) error
	names() (private, public string) // e.g. "private key (X25519)"
}

// ensure brings the pair of files key and pub, named in g.dir, to a state
// where both exist and match, without touching any file that exists.
func (g *generator) ensure(owner, key, pub string, kp keyPair) error {
	key, pub = filepath.Join(g.dir, key), filepath.Join(g.dir, pub)
	hasKey, err := exists(key)
	if err != nil {
		return err
	}
	hasPub, err := exists(pub)
	if err != nil {
		return err
	}
	switch {
	case hasKey && hasPub:
		if err := kp.load(key); err != nil {
			return err
		}
		onFile, err := kp.loadPublic(pub)
		if err != nil {
			return err
		}
		if !bytes.Equal(onFile, kp.public()) {
			return fmt.Errorf("%s does not hold the public key of %s; move one of them away and run again", pub, key)
		}
		g.kept += 2
		return nil
	case hasPub:
		g.kept++
		g.log.Info("keygen", logging.Success, zap.String("file", pub),
			zap.String("kept", "public key without its private key "+filepath.Base(key)+" here; left alone"))
		return nil
	case hasKey:
		g.kept++
		if err := kp.load(key); err != nil {
			return err
		}
	default:
		if err := kp.generate(); err != nil {
			return err
		}
		if err := kp.writePrivate(key, owner); err != nil {
			return err
		}
		g.wrote(key, owner, kp)
	}
	if err := kp.writePublic(pub, owner); err != nil {
		return err
	}
	fields := []zap.Field{zap.String("fingerprint", fingerprint(kp.public()))}
	if hasKey {
		fields = append(fields, zap.String("derived_from", key))
	}
	g.wrote(pub, owner, kp, fields...)
	return nil
}

// wrote logs a file written; fields present mean the public one of kp.
func (g *generator) wrote(path, owner string, kp keyPair, fields ...zap.Field) {
	g.written++
	private, public := kp.names()
	what := private
	if len(fields) > 0 {
		what = public
	}
	g.log.Info("keygen", append([]zap.Field{logging.Success, zap.String("file", path),
		zap.String("key", owner+" "+what)}, fields...)...)
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("check %s: %w", path, err)
}

// fingerprint is the start of a public key's base64 form, as in the file.
func fingerprint(pub []byte) string { return base64.StdEncoding.EncodeToString(pub)[:12] }

// noiseKey is an X25519 key pair for Noise handshakes.
type noiseKey struct{ k secure.PrivateKey }

func (n *noiseKey) generate() (err error) {
	n.k, err = secure.GenerateKey(rand.Reader)
	return err
}

func (n *noiseKey) load(path string) (err error) {
	n.k, err = secure.LoadPrivateKey(path)
	return err
}

func (n *noiseKey) public() []byte {
	p := n.k.Public()
	return p[:]
}

func (n *noiseKey) loadPublic(path string) ([]byte, error) {
	p, err := secure.LoadPublicKey(path)
	return p[:], err
}

func (n *noiseKey) writePrivate(path, owner string) error {
	return secure.WritePrivateKey(path, owner, n.k)
}

func (n *noiseKey) writePublic(path, owner string) error {
	return secure.WritePublicKey(path, owner, n.k.Public())
}

func (*noiseKey) names() (string, string) { return "private key (X25519)", "public key (X25519)" }

// signingKey is an Ed25519 key pair for signed receipts.
type signingKey struct{ k ed25519.PrivateKey }

func (s *signingKey) generate() (err error) {
	_, s.k, err = ed25519.GenerateKey(rand.Reader)
	return err
}

func (s *signingKey) load(path string) (err error) {
	s.k, err = secure.LoadSigningKey(path)
	return err
}

func (s *signingKey) public() []byte { return s.k.Public().(ed25519.PublicKey) }

func (s *signingKey) loadPublic(path string) ([]byte, error) { return secure.LoadVerifyKey(path) }

func (s *signingKey) writePrivate(path, owner string) error {
	return secure.WriteSigningKey(path, owner, s.k)
}

func (s *signingKey) writePublic(path, owner string) error {
	return secure.WriteVerifyKey(path, owner, s.k.Public().(ed25519.PublicKey))
}

func (*signingKey) names() (string, string) {
	return "signing key (Ed25519)", "signing public key (Ed25519)"
}
