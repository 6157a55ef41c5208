// Package config fills a pflag.FlagSet from, in order of precedence, the
// command line, the environment, a YAML file and the flags' defaults, and
// names the setting and the source whenever a value is bad.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// ErrHelp is returned by Load when -h or --help was asked for.
var ErrHelp = pflag.ErrHelp

// Error says which setting got a bad value and where the value came from.
type Error struct {
	Setting string // flag name
	Source  string // e.g. `env CLI_ID`, `config.yaml key batch.maxAmount`
	Value   string
	Err     error
}

func (e *Error) Error() string {
	if e.Source == "" {
		return fmt.Sprintf("setting %s: %v", e.Setting, e.Err)
	}
	return fmt.Sprintf("setting %s: invalid value %q from %s: %v", e.Setting, e.Value, e.Source, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Set is a flag set whose flags may also come from the environment and a YAML file.
type Set struct {
	flags      *pflag.FlagSet
	configFlag string
	env        map[string][]string
	keys       map[string][]string
	sources    map[string]string // flag, env or file
	origins    map[string]string // e.g. "env CLI_ID", for Invalid
	order      []string
	ignored    []string
}

// New returns a Set for a program; configFlag names the flag (defined here)
// that points at the YAML file, and configEnv the variables that may too.
func New(program, configFlag string, configEnv ...string) *Set {
	s := &Set{
		flags:      pflag.NewFlagSet(program, pflag.ContinueOnError),
		configFlag: configFlag,
		env:        map[string][]string{},
		keys:       map[string][]string{},
		sources:    map[string]string{},
		origins:    map[string]string{},
	}
	s.flags.SortFlags = false
	s.flags.String(configFlag, "", "YAML configuration file (flags and environment override it)")
	s.env[configFlag] = configEnv
	return s
}

// Flags is where the program defines its flags before calling Bind and Load.
func (s *Set) Flags() *pflag.FlagSet { return s.flags }

// Bind lets the flag named name also be set by the first of the environment
// variables env that is set, or else by the first of the YAML keys (dotted
// paths, matched case-insensitively) present in the file. A file holding a
// key that no Bind names, and that Ignore does not cover, is refused.
// Integer flags read their values in decimal only.
func (s *Set) Bind(name string, env []string, yamlKeys ...string) {
	f := s.flags.Lookup(name)
	if f == nil {
		panic("config: Bind of undefined flag " + name)
	}
	if _, done := f.Value.(decimal); !done && integerTypes[f.Value.Type()] {
		f.Value = decimal{f.Value}
	}
	s.env[name] = env
	s.keys[name] = yamlKeys
	s.order = append(s.order, name)
}

// Ignore lets the file hold, and Load leave alone, the keys equal to or
// under each of the dotted prefixes (matched case-insensitively), whatever
// their values. The agency ignores "loop": the course's client config.yaml
// still carries the echo client's loop.amount and loop.period.
func (s *Set) Ignore(prefixes ...string) {
	for _, p := range prefixes {
		s.ignored = append(s.ignored, strings.ToLower(p))
	}
}

var integerTypes = map[string]bool{"int": true, "int8": true, "int16": true, "int32": true, "int64": true,
	"uint": true, "uint8": true, "uint16": true, "uint32": true, "uint64": true}

// decimal makes an integer flag parse base 10 only: pflag would read "0042"
// as octal 34 and accept 0x and 0b prefixes.
type decimal struct{ pflag.Value }

func (d decimal) Set(v string) error {
	if strings.HasPrefix(d.Type(), "uint") {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errNotDecimal(err, "a whole number of 0 or more")
		}
		return d.Value.Set(strconv.FormatUint(n, 10))
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return errNotDecimal(err, "a whole number")
	}
	return d.Value.Set(strconv.FormatInt(n, 10))
}

// errNotDecimal says in words what strconv's error says in code.
func errNotDecimal(err error, want string) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("out of range: %w", strconv.ErrRange)
	}
	return errors.New("must be " + want + " in decimal")
}

// Load parses args, then gives every bound flag not on the command line its
// value from the environment (lookup; os.LookupEnv when nil) or the file.
// The file is checked whole first: a key neither bound nor ignored is an
// error, with the closest known key as a hint when one is close.
func (s *Set) Load(args []string, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if err := s.flags.Parse(args); err != nil {
		return err
	}
	if s.flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", s.flags.Arg(0))
	}
	if err := s.fromEnv(s.configFlag, lookup); err != nil {
		return err
	}
	path, _ := s.flags.GetString(s.configFlag)
	var doc *yaml.Node
	if path != "" {
		var err error
		if doc, err = readYAML(path); err != nil {
			return &Error{Setting: s.configFlag, Err: err}
		}
		if err := s.newSchema().check(doc, ""); err != nil {
			return &Error{Setting: s.configFlag, Err: fmt.Errorf("config file %s: %w", path, err)}
		}
	}
	for _, name := range s.order {
		if s.flags.Changed(name) {
			s.sources[name] = "flag"
			s.origins[name] = "flag --" + name
			continue
		}
		if err := s.fromEnv(name, lookup); err != nil {
			return err
		}
		if _, ok := s.sources[name]; ok || doc == nil {
			continue
		}
		for _, key := range s.keys[name] {
			v, found, err := lookupKey(doc, key)
			if err != nil {
				return &Error{Setting: name, Source: path + " key " + key, Err: err}
			}
			if !found {
				continue
			}
			if err := s.flags.Set(name, v); err != nil {
				return &Error{Setting: name, Source: path + " key " + key, Value: v, Err: unwrapFlagErr(err)}
			}
			s.sources[name] = "file"
			s.origins[name] = path + " key " + key
			break
		}
	}
	return nil
}

func (s *Set) fromEnv(name string, lookup func(string) (string, bool)) error {
	if s.flags.Changed(name) {
		return nil
	}
	for _, env := range s.env[name] {
		v, ok := lookup(env)
		if !ok {
			continue
		}
		if err := s.flags.Set(name, v); err != nil {
			return &Error{Setting: name, Source: "env " + env, Value: v, Err: unwrapFlagErr(err)}
		}
		s.sources[name] = "env"
		s.origins[name] = "env " + env
		return nil
	}
	return nil
}

// Invalid is the error for a value of the flag named name that parsed but
// that the program refuses (out of range, say): it names the value and
// where it came from, unless it is the default.
func (s *Set) Invalid(name string, err error) *Error {
	e := &Error{Setting: name, Err: err}
	if origin, ok := s.origins[name]; ok {
		e.Source, e.Value = origin, s.flags.Lookup(name).Value.String()
	} else if s.flags.Changed(name) {
		e.Source, e.Value = "flag --"+name, s.flags.Lookup(name).Value.String()
	}
	return e
}

// Source says where the flag's value came from: flag, env, file or default.
func (s *Set) Source(name string) string {
	if src, ok := s.sources[name]; ok {
		return src
	}
	if name == s.configFlag && s.flags.Changed(name) {
		return "flag"
	}
	return "default"
}

// Effective lists every flag with its value, in definition order, for the
// config log line.
func (s *Set) Effective() [][2]string {
	var out [][2]string
	s.flags.VisitAll(func(f *pflag.Flag) {
		out = append(out, [2]string{f.Name, f.Value.String()})
	})
	return out
}

// Usage returns the flag help followed by each flag's environment names.
func (s *Set) Usage() string {
	var b strings.Builder
	b.WriteString(s.flags.FlagUsages())
	names := make([]string, 0, len(s.env))
	for n := range s.env {
		if len(s.env[n]) > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) > 0 {
		b.WriteString("\nEnvironment (overridden by flags; overrides the config file):\n")
		for _, n := range names {
			fmt.Fprintf(&b, "  %-22s --%s\n", strings.Join(s.env[n], ", "), n)
		}
	}
	return b.String()
}

// unwrapFlagErr keeps the reason pflag gives for a bad value without
// repeating the flag and value, which Error already names.
func unwrapFlagErr(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// readYAML returns the top-level mapping of the file's only document;
// more documents are refused, as nothing would read them.
func readYAML(path string) (*yaml.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config file %s: %w", path, err)
	}
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse config file %s: %w", path, err)
		}
		if !isEmpty(&more) {
			return nil, fmt.Errorf("config file %s: holds more than one YAML document (---): put every setting in the first", path)
		}
	}
	if isEmpty(&doc) {
		return &yaml.Node{Kind: yaml.MappingNode}, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: top level is not a mapping", path)
	}
	return root, nil
}

// isEmpty says whether a document holds nothing: no node, or "---" alone.
func isEmpty(doc *yaml.Node) bool {
	return len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null"
}

// lookupKey walks a dotted path through nested mappings.
func lookupKey(node *yaml.Node, key string) (string, bool, error) {
	for _, part := range strings.Split(key, ".") {
		if node.Kind != yaml.MappingNode {
			return "", false, nil
		}
		pairs, err := entries(node, nil)
		if err != nil {
			return "", false, err
		}
		var next *yaml.Node
		for _, p := range pairs {
			if strings.EqualFold(p.key.Value, part) {
				next = p.value
			}
		}
		if next == nil {
			return "", false, nil
		}
		node = next
	}
	if node.Kind != yaml.ScalarNode {
		return "", false, errors.New("expected a single value, found a list or mapping")
	}
	if node.Tag == "!!null" {
		return "", false, nil
	}
	return node.Value, true, nil
}

// entry is one key of a mapping and its value, an alias replaced by the
// node it names.
type entry struct{ key, value *yaml.Node }

// entries lists a mapping's keys, those it merges with << first, so that
// the last of equal keys wins: a key written out beats a merged one, and
// the first of several merged mappings beats the later ones. merging holds
// the mappings being merged, to refuse one that merges itself.
func entries(m *yaml.Node, merging []*yaml.Node) ([]entry, error) {
	var merged, own []entry
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], deref(m.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Tag != "!!merge" {
			own = append(own, entry{k, v})
			continue
		}
		from := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			from = v.Content
		}
		for j := len(from) - 1; j >= 0; j-- {
			src := deref(from[j])
			if src.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("line %d: << merges mappings only", k.Line)
			}
			if src == m || slices.Contains(merging, src) {
				return nil, fmt.Errorf("line %d: << merges a mapping into itself", k.Line)
			}
			more, err := entries(src, append(merging, m))
			if err != nil {
				return nil, err
			}
			merged = append(merged, more...)
		}
	}
	return append(merged, own...), nil
}

func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// schema is what a config file may hold, from the keys bound and ignored;
// paths are lower case.
type schema struct {
	leaves   map[string]bool
	sections map[string][]string // parent of a bound or ignored key -> the bound keys under it, as bound
	ignored  []string
	known    []string // bound keys and their sections, as bound, in Bind order: the hints
}

func (s *Set) newSchema() *schema {
	sc := &schema{leaves: map[string]bool{}, sections: map[string][]string{}, ignored: s.ignored}
	seen := map[string]bool{}
	note := func(key string) {
		if k := strings.ToLower(key); !seen[k] {
			seen[k] = true
			sc.known = append(sc.known, key)
		}
	}
	for _, name := range s.order {
		for _, key := range s.keys[name] {
			for i, c := range key {
				if c == '.' {
					sec := strings.ToLower(key[:i])
					sc.sections[sec] = append(sc.sections[sec], key)
					note(key[:i])
				}
			}
			sc.leaves[strings.ToLower(key)] = true
			note(key)
		}
	}
	for _, p := range s.ignored {
		for i, c := range p {
			if c == '.' && sc.sections[p[:i]] == nil {
				sc.sections[p[:i]] = []string{}
			}
		}
	}
	return sc
}

// check refuses the first key under the mapping m (at path prefix) that is
// neither bound nor ignored, and a section given a value.
func (sc *schema) check(m *yaml.Node, prefix string) error {
	pairs, err := entries(m, nil)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		seg := p.key.Value
		path := seg
		if prefix != "" {
			path = prefix + "." + seg
		}
		if p.key.Kind != yaml.ScalarNode || strings.Contains(seg, ".") {
			// Not nested keys: a dotted key holds one key named with dots.
			quoted := strconv.Quote(seg)
			if prefix != "" {
				quoted = prefix + "." + quoted
			}
			return unknownKey(quoted, sc.suggest(path))
		}
		lower := strings.ToLower(path)
		children, isSection := sc.sections[lower]
		switch {
		case sc.isIgnored(lower):
		case isSection && p.value.Kind == yaml.MappingNode:
			if err := sc.check(p.value, path); err != nil {
				return err
			}
		case sc.leaves[lower]:
			// Its value is looked at when (and if) it is used.
		case isSection && p.value.Kind == yaml.ScalarNode && p.value.Tag == "!!null":
			// An empty section, such as one whose keys are commented out.
		case isSection:
			msg := "key " + path + " is a section, not a setting"
			if len(children) > 0 {
				msg += "; did you mean " + orList(children) + "?"
			}
			return errors.New(msg)
		default:
			return unknownKey(path, sc.suggest(path))
		}
	}
	return nil
}

func unknownKey(path, hint string) error {
	if hint == "" {
		return errors.New("unknown key " + path)
	}
	return fmt.Errorf("unknown key %s; did you mean %s?", path, hint)
}

func (sc *schema) isIgnored(path string) bool {
	for _, p := range sc.ignored {
		if path == p || strings.HasPrefix(path, p+".") {
			return true
		}
	}
	return false
}

// suggest returns the known key or section closest to an unknown path, or
// "": the nearest within two edits (fewer than the length of the path's
// last part), else the first with the same last part (the right key in the
// wrong section), else the first in the same section whose last part
// begins with this one's, or the other way round, over 3 letters or more.
func (sc *schema) suggest(path string) string {
	path = strings.ToLower(path)
	dir, last := splitLast(path)
	best, bestDist := "", 3
	for _, k := range sc.known {
		if d := distance(path, strings.ToLower(k)); d < bestDist && d < len(last) {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return best
	}
	for _, k := range sc.known {
		if _, l := splitLast(strings.ToLower(k)); l == last {
			return k
		}
	}
	for _, k := range sc.known {
		d, l := splitLast(strings.ToLower(k))
		short, long := l, last
		if len(short) > len(long) {
			short, long = long, short
		}
		if d == dir && len(short) >= 3 && len(short) < len(long) && strings.HasPrefix(long, short) {
			return k
		}
	}
	return ""
}

// splitLast splits a dotted path into its section ("" at the top) and its
// last part.
func splitLast(path string) (dir, last string) {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return "", path
}

// distance is the Levenshtein distance between a and b: the fewest
// insertions, deletions and substitutions of one letter that turn a into b.
func distance(a, b string) int {
	x, y := []rune(a), []rune(b)
	prev := make([]int, len(y)+1)
	cur := make([]int, len(y)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := range x {
		cur[0] = i + 1
		for j := range y {
			cost := 1
			if x[i] == y[j] {
				cost = 0
			}
			cur[j+1] = min(prev[j]+cost, prev[j+1]+1, cur[j]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(y)]
}

// orList joins "a", "a or b", "a, b or c".
func orList(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}
