// Command meshmig-istio runs Istio's own code, built from the pinned
// istio.io/istio module, as the judge of meshmig's Istio semantics in tests.
// Every subcommand reads Kubernetes objects on stdin (multi-document YAML, a
// JSON array, or a `kind: List`) and writes one JSON document on stdout.
// Errors go to stderr with a non-zero exit code.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"

	"istio.io/istio/pkg/log"
)

const usage = `usage: meshmig-istio <command> [flags] < objects.yaml

commands:
  validate                 Istio's validation verdict on every object
  ztunnel [flags]          istiod's AuthorizationPolicy -> ztunnel Authorization conversion
  rbac --for sidecar|waypoint [flags]
                           the Envoy RBAC filters istiod builds for one proxy
  routes --for sidecar|waypoint [flags]
                           the HTTP routes istiod builds for one proxy, normalised

Run "meshmig-istio <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var parse func(args []string) (command, error)
	switch cmd {
	case "validate":
		parse = parseValidate
	case "ztunnel":
		parse = parseZtunnel
	case "rbac":
		parse = parseRBAC
	case "routes":
		parse = parseRoutes
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "meshmig-istio: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	// Flags first, so that a usage error or -h does not wait for stdin.
	run, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return // the flag package printed the usage
	}
	if err == nil {
		err = quietIstioLogs()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshmig-istio %s: %v\n", cmd, err)
		os.Exit(2)
	}
	if err := execute(run); err != nil {
		fmt.Fprintf(os.Stderr, "meshmig-istio %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// quietIstioLogs silences Istio's own logging, which would otherwise report
// every krt collection's sync on stderr (and an "error" for each pipeline whose
// stop channel closes once its result has been read). Our errors come from our
// own code. MESHMIG_ISTIO_LOG=debug (any Istio level name) shows them.
func quietIstioLogs() error {
	name := os.Getenv("MESHMIG_ISTIO_LOG")
	if name == "" {
		name = "none"
	}
	level := log.StringToLevel(name) // "none" for an unknown name, hence the check
	if log.LevelToString(level) != name {
		return fmt.Errorf("MESHMIG_ISTIO_LOG=%q is not an Istio log level (debug, info, warn, error, none)", name)
	}
	for _, scope := range log.Scopes() {
		scope.SetOutputLevel(level)
	}
	return nil
}

// command is a subcommand with its flags parsed: objects in, a JSON-encodable answer out.
type command func(objects []json.RawMessage) (any, error)

func execute(run command) error {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	objects, err := readObjects(input)
	if err != nil {
		return err
	}
	out, err := run(objects)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// readObjects splits stdin into one JSON document per object. A JSON array is
// taken as is; anything else is a YAML/JSON stream, in which empty documents
// are dropped and `kind: List` (or `*List`) documents are replaced by their items.
func readObjects(input []byte) ([]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(input)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var objects []json.RawMessage
		if err := json.Unmarshal(trimmed, &objects); err != nil {
			return nil, fmt.Errorf("parsing the JSON array on stdin: %w", err)
		}
		return expandLists(objects)
	}
	var objects []json.RawMessage
	dec := kubeyaml.NewYAMLOrJSONDecoder(bytes.NewReader(input), 4096)
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parsing document %d on stdin: %w", len(objects)+1, err)
		}
		if doc == nil {
			continue // an empty document between two `---`
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		objects = append(objects, raw)
	}
	return expandLists(objects)
}

// expandLists replaces `kubectl get -o yaml` style lists by their items.
func expandLists(objects []json.RawMessage) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for i, raw := range objects {
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("object %d is not a JSON object: %w", i+1, err)
		}
		if len(list.Kind) >= 4 && list.Kind[len(list.Kind)-4:] == "List" && list.Items != nil {
			out = append(out, list.Items...)
			continue
		}
		out = append(out, raw)
	}
	return out, nil
}

// parseFlags parses a subcommand's flags and refuses positional arguments,
// which would otherwise be ignored silently.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (objects go on stdin)", fs.Arg(0))
	}
	return nil
}

// meta is what every entry of the output names its input object by.
type meta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func objectMeta(raw json.RawMessage) (meta, error) {
	var m meta
	err := json.Unmarshal(raw, &m)
	return m, err
}
