package main

import (
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"istio.io/api/security/v1beta1"
	securityclient "istio.io/client-go/pkg/apis/security/v1"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/collections"
)

func TestReadObjectsFormats(t *testing.T) {
	yaml := "---\n---\napiVersion: v1\nkind: List\nitems:\n- {kind: A}\n- {kind: B}\n---\nkind: C\n"
	for input, want := range map[string][]string{
		yaml:                              {"A", "B", "C"},
		`[{"kind":"A"},{"kind":"B"}]`:     {"A", "B"},
		`{"kind":"A"} {"kind":"B"}`:       {"A", "B"},
		`[{"kind":"PodList","items":[]}]`: {},
	} {
		objects, err := readObjects([]byte(input))
		if err != nil {
			t.Fatalf("%q: %v", input, err)
		}
		var got []string
		for _, o := range objects {
			m, _ := objectMeta(o)
			got = append(got, m.Kind)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%q: kinds %v, want %v", input, got, want)
		}
	}
}

// istiod keys its converted policies by the Authorization's namespace/name, so
// policies converted to a status only all share the key "/". This is why
// runZtunnel converts the missing ones one by one; if this test fails, Istio
// has fixed the collision and the fallback is dead code.
func TestStatusOnlyPoliciesCollideInABatch(t *testing.T) {
	var policies []*securityclient.AuthorizationPolicy
	for _, name := range []string{"a", "b", "c"} {
		policies = append(policies, &securityclient.AuthorizationPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec:       v1beta1.AuthorizationPolicy{Action: v1beta1.AuthorizationPolicy_AUDIT},
		})
	}
	batch, err := convert(policies, mesh.DefaultMeshConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(batch) != 1 {
		t.Errorf("a batch of 3 AUDIT policies gave %d entries, want 1 (the collision)", len(batch))
	}

	var objects []json.RawMessage
	for _, p := range policies {
		js, _ := json.Marshal(p)
		objects = append(objects, js)
	}
	out, err := convertAll(objects, mesh.DefaultMeshConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range out {
		if c.Status == nil || c.Status.Reason != "UnsupportedValue" || string(c.Authorization) != "null" {
			t.Errorf("%s: got status %+v, authorization %s", c.Name, c.Status, c.Authorization)
		}
	}
}

// validate skips the schemas outside istio.io because Istio registers them with
// no validation at all; an empty spec is never rejected.
func TestNonIstioSchemasValidateNothing(t *testing.T) {
	for _, s := range collections.PilotGatewayAPI().All() {
		if strings.HasSuffix(s.Group(), "istio.io") {
			continue
		}
		cfg := config.Config{
			Meta: config.Meta{GroupVersionKind: s.GroupVersionKind(), Name: "x", Namespace: "default"},
			Spec: s.MustNewInstance(),
		}
		if warn, err := s.ValidateConfig(cfg); err != nil || warn != nil {
			t.Errorf("%s: an empty spec gave error %v, warning %v: Istio validates it now", s.Kind(), err, warn)
		}
	}
}
