package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The API server defaults Gateway API objects from their CRD schemas; `routes` applies
// its own table of those defaults (gatewayAPIDefaults). This compares the table with the
// `default`s of the CRDs shipped in the sigs.k8s.io/gateway-api module this binary links
// (standard and experimental channels, served storage versions, spec only).
func TestGatewayAPIDefaultsMatchCRDs(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locating sigs.k8s.io/gateway-api: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	for kind, file := range map[string]string{
		"HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
		"Gateway":   "gateway.networking.k8s.io_gateways.yaml",
	} {
		want := map[string]string{}
		for _, channel := range []string{"standard", "experimental"} {
			for path, value := range crdDefaults(t, filepath.Join(dir, "config/crd", channel, file)) {
				want[path] = value
			}
		}
		got := map[string]string{}
		for _, r := range gatewayAPIDefaults[kind] {
			b, _ := json.Marshal(r.value)
			got[r.path] = string(b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s defaults differ from the CRDs\n ours: %v\n CRDs: %v", kind, sortedPairs(got), sortedPairs(want))
		}
	}
}

func sortedPairs(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// crdDefaults returns path → JSON default of every `default` under `spec` in the CRD's
// served storage version.
func crdDefaults(t *testing.T, file string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Served, Storage bool
				Schema          struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := kubeyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096).Decode(&crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	out := map[string]string{}
	var walk func(schema map[string]any, path string)
	walk = func(schema map[string]any, path string) {
		if d, ok := schema["default"]; ok && strings.HasPrefix(path, "spec") {
			b, _ := json.Marshal(d)
			out[path] = string(b)
		}
		props, _ := schema["properties"].(map[string]any)
		for name, child := range props {
			c, _ := child.(map[string]any)
			p := name
			if path != "" {
				p = path + "." + name
			}
			walk(c, p)
		}
		if items, ok := schema["items"].(map[string]any); ok {
			walk(items, path+"[]")
		}
	}
	for _, v := range crd.Spec.Versions {
		if v.Served && v.Storage {
			walk(v.Schema.OpenAPIV3Schema, "")
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no defaults found", file)
	}
	return out
}

func TestApplyDefaultsFillsNestedDefaultsOfDefaultedValues(t *testing.T) {
	route := map[string]any{"spec": map[string]any{
		"parentRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "web"}},
		"rules": []any{
			map[string]any{"backendRefs": []any{map[string]any{"name": "web-v1", "port": 80}}},
			map[string]any{"matches": []any{map[string]any{"headers": []any{map[string]any{"name": "x", "value": "1"}}}}},
		},
	}}
	applyDefaults(route, gatewayAPIDefaults["HTTPRoute"])
	got, _ := json.Marshal(route)
	want := `{"spec":{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[` +
		`{"backendRefs":[{"group":"","kind":"Service","name":"web-v1","port":80,"weight":1}],"matches":[{"path":{"type":"PathPrefix","value":"/"}}]},` +
		`{"matches":[{"headers":[{"name":"x","type":"Exact","value":"1"}],"path":{"type":"PathPrefix","value":"/"}}]}]}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
