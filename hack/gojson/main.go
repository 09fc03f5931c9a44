// Command gojson answers, with the Go types themselves, two questions the
// Rust controller must answer exactly as upstream Argo Rollouts does:
//
//	gojson types   prints how encoding/json encodes a corev1.PodTemplateSpec
//	               and upstream's []CanaryStep (every struct's fields in
//	               order, their JSON names, omitempty, and their types),
//	               which src/go_json/types.json records for the Rust encoder;
//	gojson quantity reads quantities, one JSON string per line, and prints
//	               how Go writes each back (or "error: ...");
//	gojson hash    reads pod templates, one JSON object per line, and prints
//	               upstream's pod-template hash of each (fnv32a over
//	               encoding/json, then SafeEncodeString), or "error: ..."
//	               when Go cannot decode it; tests compare it with ours;
//	gojson steps-hash reads canary step lists, one JSON array per line, and
//	               prints upstream's steps hash of each (status.canary.
//	               currentStepHash: the same recipe over []CanaryStep).
//
// Built against upstream v1.10.2's own API types and the k8s.io/api version
// it uses (go.mod), so the table and the hashes are upstream's.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"reflect"
	"sort"
	"strings"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
)

type field struct {
	Name      string `json:"name"`
	OmitEmpty bool   `json:"omitempty,omitempty"`
	OmitZero  bool   `json:"omitzero,omitempty"`
	Type      string `json:"type"`
}

type typeDef struct {
	Kind   string  `json:"kind"`
	Fields []field `json:"fields,omitempty"`
	Elem   string  `json:"elem,omitempty"`
}

// Types with their own MarshalJSON, encoded by name on the Rust side.
var special = map[reflect.Type]string{
	reflect.TypeOf(resource.Quantity{}):  "quantity",
	reflect.TypeOf(intstr.IntOrString{}): "intorstring",
	reflect.TypeOf(metav1.Time{}):        "time",
	reflect.TypeOf(metav1.MicroTime{}):   "microtime",
	// managedFields: raw JSON, never in a pod template users write.
	reflect.TypeOf(metav1.FieldsV1{}): "rawjson",
	// A step plugin's config: written back compacted, as read.
	reflect.TypeOf(json.RawMessage{}): "rawjson",
}

var marshaler = reflect.TypeOf((*json.Marshaler)(nil)).Elem()

func typeID(t reflect.Type, defs map[string]typeDef) string {
	if s, ok := special[t]; ok {
		return s
	}
	if t.Kind() != reflect.Pointer && (t.Implements(marshaler) || reflect.PointerTo(t).Implements(marshaler)) {
		panic(fmt.Sprintf("%s has its own MarshalJSON: teach the Rust encoder about it", t))
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Pointer:
		return "ptr:" + typeID(t.Elem(), defs)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		return "slice:" + typeID(t.Elem(), defs)
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			panic(fmt.Sprintf("%s: map key is not a string", t))
		}
		return "map:" + typeID(t.Elem(), defs)
	case reflect.Struct:
		id := t.PkgPath() + "." + t.Name()
		if _, done := defs[id]; done {
			return id
		}
		defs[id] = typeDef{Kind: "struct"} // breaks cycles
		var fields []field
		collect(t, defs, &fields)
		defs[id] = typeDef{Kind: "struct", Fields: fields}
		return id
	}
	panic(fmt.Sprintf("%s: kind %s not handled", t, t.Kind()))
}

// collect appends t's fields as encoding/json sees them: untagged embedded
// structs contribute their fields in place (depth-first, the order Go's
// index sequences give), "-" and unexported fields are left out.
func collect(t reflect.Type, defs map[string]typeDef, out *[]field) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				panic(fmt.Sprintf("%s.%s: embedded pointer not handled", t, f.Name))
			}
			if et.Kind() == reflect.Struct {
				if _, ok := special[et]; ok {
					panic(fmt.Sprintf("%s.%s: embedded special type", t, f.Name))
				}
				collect(et, defs, out)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fd := field{Name: name, Type: typeID(f.Type, defs)}
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "omitempty":
				fd.OmitEmpty = true
			case "omitzero":
				// Go 1.24: left out when zero (by IsZero() where the type
				// has one, as metav1.Time does).
				fd.OmitZero = true
			case "", "inline":
			default:
				panic(fmt.Sprintf("%s.%s: option %q not handled", t, f.Name, o))
			}
		}
		*out = append(*out, fd)
	}
}

func types() {
	defs := map[string]typeDef{}
	podTemplate := typeID(reflect.TypeOf(corev1.PodTemplateSpec{}), defs)
	canarySteps := typeID(reflect.TypeOf([]rolloutsv1.CanaryStep{}), defs)
	ids := make([]string, 0, len(defs))
	for id := range defs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// One type per line, sorted, so a diff shows what a new k8s.io/api changed.
	fmt.Printf("{\"roots\": {\"pod_template\": %q, \"canary_steps\": %q}, \"types\": {\n", podTemplate, canarySteps)
	for i, id := range ids {
		b, err := json.Marshal(defs[id])
		if err != nil {
			panic(err)
		}
		sep := ","
		if i == len(ids)-1 {
			sep = ""
		}
		fmt.Printf("%q: %s%s\n", id, b, sep)
	}
	fmt.Println("}}")
}

// hashLines reads one JSON value per line, decodes it into what decode
// gives, and prints upstream's hash of Go's re-encoding (fnv32a, then
// SafeEncodeString) and the encoding itself, or "error: ..." when Go cannot
// decode it.
func hashLines(decode func() any) {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	for in.Scan() {
		v := decode()
		if err := json.Unmarshal(in.Bytes(), v); err != nil {
			fmt.Println("error:", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		h := fnv.New32a()
		h.Write(b)
		fmt.Println(rand.SafeEncodeString(fmt.Sprint(h.Sum32())), string(b))
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func quantity() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var q resource.Quantity
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			fmt.Println("error:", err)
			continue
		}
		b, err := json.Marshal(q)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(string(b))
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gojson types|hash|steps-hash|quantity")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "types":
		types()
	case "hash":
		hashLines(func() any { return &corev1.PodTemplateSpec{} })
	case "steps-hash":
		// upstream's conditions.ComputeStepHash
		hashLines(func() any { return &[]rolloutsv1.CanaryStep{} })
	case "quantity":
		quantity()
	default:
		fmt.Fprintln(os.Stderr, "usage: gojson types|hash|steps-hash|quantity")
		os.Exit(2)
	}
}
