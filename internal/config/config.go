// Package config fills a pflag.FlagSet from, in order of precedence, the
// command line, the environment, a YAML file and the flags' defaults, and
// names the setting and the source whenever a value is bad.
package config

import (
	"errors"
	"fmt"
	"os"
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
	sources    map[string]string
	order      []string
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
// paths, matched case-insensitively) present in the file.
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
	}
	for _, name := range s.order {
		if s.flags.Changed(name) {
			s.sources[name] = "flag"
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
		return nil
	}
	return nil
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

func readYAML(path string) (*yaml.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode}, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" { // "---" alone
		return &yaml.Node{Kind: yaml.MappingNode}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: top level is not a mapping", path)
	}
	return root, nil
}

// lookupKey walks a dotted path through nested mappings.
func lookupKey(node *yaml.Node, key string) (string, bool, error) {
	for _, part := range strings.Split(key, ".") {
		if node.Kind != yaml.MappingNode {
			return "", false, nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(node.Content); i += 2 {
			if strings.EqualFold(node.Content[i].Value, part) {
				next = node.Content[i+1]
			}
		}
		if next == nil {
			return "", false, nil
		}
		node = next
		if node.Kind == yaml.AliasNode {
			node = node.Alias
		}
	}
	if node.Kind != yaml.ScalarNode {
		return "", false, errors.New("expected a single value, found a list or mapping")
	}
	if node.Tag == "!!null" {
		return "", false, nil
	}
	return node.Value, true, nil
}
