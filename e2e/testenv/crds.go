package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"
)

var crdResource = schema.GroupVersionResource{
	Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// readCRDs returns every CustomResourceDefinition document in the *.yaml and
// *.yml files of dirs. Other kinds (e.g. the ValidatingAdmissionPolicy that
// ships next to the Gateway API CRDs) are skipped: this loader installs types,
// not policy.
func readCRDs(dirs []string) ([]*unstructured.Unstructured, error) {
	var crds []*unstructured.Unstructured
	for _, dir := range dirs {
		var files []string
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(dir, pat))
			if err != nil {
				return nil, err
			}
			files = append(files, m...)
		}
		if len(files) == 0 {
			if _, err := os.Stat(dir); err != nil {
				return nil, fmt.Errorf("--crd-dir: %w", err)
			}
		}
		sort.Strings(files)
		for _, f := range files {
			docs, err := readYAMLDocs(f)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			for _, d := range docs {
				if d.GetKind() == "CustomResourceDefinition" {
					crds = append(crds, d)
				} else {
					klog.InfoS("skipping non-CRD document", "file", f, "kind", d.GetKind(), "name", d.GetName())
				}
			}
		}
	}
	return crds, nil
}

func readYAMLDocs(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 64*1024)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]interface{}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(obj) == 0 { // empty document between separators
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

// installCRDs creates (or updates) the CRDs and waits until all are Established.
func installCRDs(ctx context.Context, client dynamic.Interface, crds []*unstructured.Unstructured) error {
	api := client.Resource(crdResource)
	for _, crd := range crds {
		_, err := api.Create(ctx, crd, metav1.CreateOptions{FieldManager: "testenv"})
		if apierrors.IsAlreadyExists(err) {
			err = retryOnConflict(ctx, func() error {
				cur, err := api.Get(ctx, crd.GetName(), metav1.GetOptions{})
				if err != nil {
					return err
				}
				crd.SetResourceVersion(cur.GetResourceVersion())
				_, err = api.Update(ctx, crd, metav1.UpdateOptions{FieldManager: "testenv"})
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("install CRD %s: %w", crd.GetName(), err)
		}
	}
	for _, crd := range crds {
		name := crd.GetName()
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true,
			func(ctx context.Context) (bool, error) {
				cur, err := api.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
				for _, c := range conds {
					m, _ := c.(map[string]interface{})
					if m["type"] == "Established" && m["status"] == "True" {
						return true, nil
					}
					if m["type"] == "NamesAccepted" && m["status"] == "False" {
						return false, fmt.Errorf("names not accepted: %v", m["message"])
					}
				}
				return false, nil
			})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", name, err)
		}
	}
	return nil
}

// crdNames lists names for the log.
func crdNames(crds []*unstructured.Unstructured) string {
	names := make([]string, 0, len(crds))
	for _, c := range crds {
		names = append(names, c.GetName())
	}
	return strings.Join(names, ",")
}
