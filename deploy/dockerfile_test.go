package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The image is checked by reading the Dockerfile, not by building it: a build needs a Docker daemon and
// registry access, which CI and development machines do not always have. What is checked is what a
// build without those would not catch: platform arguments with default values (an arm64 image carrying
// an x86-64 binary), short base image names (podman refuses them), a label without a value source.

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, ARG, LABEL, …
	args string
}

func parseDockerfile(src string) []instruction {
	var out []instruction
	var cur strings.Builder
	for line := range strings.SplitSeq(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // comment inside a continued instruction
		}
		if body, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// stage is the instructions from one FROM to the next; stage 0 is the global scope before the first.
type stage struct {
	from  string // the FROM arguments
	instr []instruction
}

func stages(instrs []instruction) []stage {
	st := []stage{{}}
	for _, in := range instrs {
		if in.cmd == "FROM" {
			st = append(st, stage{from: in.args})
			continue
		}
		st[len(st)-1].instr = append(st[len(st)-1].instr, in)
	}
	return st
}

// args returns the ARG declarations of a stage: name → default, and whether a default is written.
func args(s stage) (map[string]string, map[string]bool) {
	values, hasDefault := map[string]string{}, map[string]bool{}
	for _, in := range s.instr {
		if in.cmd != "ARG" {
			continue
		}
		name, value, ok := strings.Cut(in.args, "=")
		values[name] = strings.Trim(value, `"`)
		hasDefault[name] = ok
	}
	return values, hasDefault
}

var (
	argRef       = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
	digestSuffix = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	labelPair    = regexp.MustCompile(`([a-z0-9.\-]+)="([^"]*)"`)
)

// fullyQualified says whether an image reference names its registry, as podman requires: the first path
// component is a host (it has a dot or a port, or is localhost).
func fullyQualified(ref string) bool {
	host, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(host, ".:") || host == "localhost")
}

// dockerfileProblems lists what is wrong with a Dockerfile for a multi-platform, labelled, portable image.
func dockerfileProblems(src string) []string {
	var problems []string
	st := stages(parseDockerfile(src))
	if len(st) < 2 {
		return []string{"no FROM"}
	}
	global, globalDefault := args(st[0])
	platformArgs := []string{"BUILDPLATFORM", "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"}
	for i, s := range st {
		_, hasDefault := args(s)
		if i == 0 {
			hasDefault = globalDefault
		}
		for _, name := range platformArgs {
			if hasDefault[name] {
				problems = append(problems, "ARG "+name+" has a default value, which wins over BuildKit's")
			}
		}
	}
	stageNames := map[string]bool{}
	for _, s := range st[1:] {
		fields := strings.Fields(s.from)
		var image, name string
		for j, f := range fields {
			if strings.HasPrefix(f, "--") {
				continue
			}
			image = f
			if j+2 < len(fields) && strings.EqualFold(fields[j+1], "AS") {
				name = fields[j+2]
			}
			break
		}
		resolved := argRef.ReplaceAllStringFunc(image, func(m string) string {
			return global[argRef.FindStringSubmatch(m)[1]]
		})
		switch {
		case stageNames[resolved] || resolved == "scratch":
		case resolved == "":
			problems = append(problems, "FROM "+image+" resolves to nothing: declare its ARG with a default before the first FROM")
		case !fullyQualified(resolved):
			problems = append(problems, "FROM "+resolved+" is not fully qualified (registry/name)")
		case strings.Contains(resolved, "@") && !digestSuffix.MatchString(resolved):
			problems = append(problems, "FROM "+resolved+" has a malformed digest")
		}
		if name != "" {
			stageNames[name] = true // later stages may start FROM it
		}
	}
	// The stage that compiles must run on the build platform and compile for the target one.
	var compiles bool
	for _, s := range st[1:] {
		for _, in := range s.instr {
			if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
				continue
			}
			compiles = true
			values, _ := args(s)
			if !strings.Contains(s.from, "--platform=$BUILDPLATFORM") {
				problems = append(problems, "the go build stage does not run on $BUILDPLATFORM")
			}
			for _, want := range []string{"GOOS=$TARGETOS", "GOARCH=$TARGETARCH"} {
				if !strings.Contains(in.args, want) {
					problems = append(problems, "go build does not set "+want)
				}
			}
			for _, name := range []string{"TARGETOS", "TARGETARCH"} {
				if _, ok := values[name]; !ok {
					problems = append(problems, "the go build stage does not declare ARG "+name)
				}
			}
		}
	}
	if !compiles {
		problems = append(problems, "no RUN go build")
	}
	// The labels are on the final stage and their changing values come from build arguments.
	final := st[len(st)-1]
	finalArgs, _ := args(final)
	labels := map[string]string{}
	for _, in := range final.instr {
		if in.cmd == "LABEL" {
			for _, m := range labelPair.FindAllStringSubmatch(in.args, -1) {
				labels[m[1]] = m[2]
			}
		}
	}
	fromArg := map[string]string{
		"org.opencontainers.image.version":  "VERSION",
		"org.opencontainers.image.revision": "REVISION",
		"org.opencontainers.image.created":  "CREATED",
		"org.opencontainers.image.source":   "SOURCE",
	}
	for label, arg := range fromArg {
		value, ok := labels[label]
		switch {
		case !ok:
			problems = append(problems, "label "+label+" missing from the final stage")
		case value != "${"+arg+"}" && value != "$"+arg:
			problems = append(problems, "label "+label+" is "+value+", not the build argument "+arg)
		default:
			if _, ok := finalArgs[arg]; !ok {
				problems = append(problems, "the final stage does not declare ARG "+arg+" for label "+label)
			}
		}
	}
	if labels["org.opencontainers.image.licenses"] != "MIT" {
		problems = append(problems, "label org.opencontainers.image.licenses is not MIT")
	}
	return problems
}

func TestDockerfileProblems(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) string {
		if !strings.Contains(string(good), old) {
			t.Fatalf("the Dockerfile no longer contains %q; update the test case", old)
		}
		return strings.Replace(string(good), old, new, 1)
	}
	tests := []struct {
		name string
		src  string
		want string // a problem that must be reported; "" for none at all
	}{
		{"the repository's Dockerfile", string(good), ""},
		{"TARGETARCH with a default", replace("ARG TARGETARCH\n", "ARG TARGETARCH=amd64\n"), "ARG TARGETARCH has a default value"},
		{"TARGETOS with a default", replace("ARG TARGETOS\n", "ARG TARGETOS=linux\n"), "ARG TARGETOS has a default value"},
		{"BUILDPLATFORM with a default", replace("ARG BUILDPLATFORM\n", "ARG BUILDPLATFORM=linux/amd64\n"), "ARG BUILDPLATFORM has a default value"},
		{"TARGETARCH not declared", replace("ARG TARGETARCH\n", ""), "does not declare ARG TARGETARCH"},
		{"short golang name", replace("ARG GO_IMAGE=docker.io/library/golang:", "ARG GO_IMAGE=golang:"), "FROM golang:"},
		{"short name with a path", replace("ARG GO_IMAGE=docker.io/library/golang:", "ARG GO_IMAGE=library/golang:"), "not fully qualified"},
		{"short name written in FROM", replace("FROM ${RUNTIME_IMAGE}", "FROM distroless/static-debian12"), "not fully qualified"},
		{"a later stage from an earlier one", replace("FROM ${RUNTIME_IMAGE}", "FROM build"), ""},
		{"base image argument without a default", replace("ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm\n", "ARG GO_IMAGE\n"), "resolves to nothing"},
		{"truncated digest", replace("ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot\n", "ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:abc\n"), "malformed digest"},
		{"compiled on the target platform", replace("FROM --platform=$BUILDPLATFORM ", "FROM "), "does not run on $BUILDPLATFORM"},
		{"fixed GOARCH", replace("GOARCH=$TARGETARCH", "GOARCH=amd64"), "does not set GOARCH=$TARGETARCH"},
		{"revision label missing", replace(`org.opencontainers.image.revision="${REVISION}" \`, `\`), "label org.opencontainers.image.revision missing"},
		{"version label written in", replace(`org.opencontainers.image.version="${VERSION}"`, `org.opencontainers.image.version="1.0"`), "not the build argument VERSION"},
		{"created argument not declared in the final stage", replace("ARG CREATED=\nARG SOURCE", "ARG SOURCE"), "does not declare ARG CREATED"},
		{"another licence", replace(`licenses="MIT"`, `licenses="Apache-2.0"`), "licenses is not MIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := dockerfileProblems(tt.src)
			if tt.want == "" {
				if len(got) > 0 {
					t.Fatalf("problems:\n  %s", strings.Join(got, "\n  "))
				}
				return
			}
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Fatalf("want a problem containing %q, got %q", tt.want, got)
			}
		})
	}
}

func TestDockerfileLicense(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"MIT License",
		"Copyright (c) 2025-2026 tasker-sidecar contributors",
		"Permission is hereby granted, free of charge, to any person obtaining a copy",
		`THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("LICENSE lacks %q", want)
		}
	}
}

// The build context must hold what the Dockerfile copies; .dockerignore must not leave it out.
func TestDockerfileContext(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimSuffix(line, "/"))
		}
	}
	for _, needed := range []string{"LICENSE", "go.mod", "go.sum", "config.example.yaml", "cmd", "internal"} {
		if _, err := os.Stat(filepath.Join("..", needed)); err != nil {
			t.Errorf("%s: %v", needed, err)
		}
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, needed); ok {
				t.Errorf(".dockerignore pattern %q leaves %s out of the build context", p, needed)
			}
		}
	}
}

// make docker must pass the build arguments the labels read, and its base images must be the
// Dockerfile's, so a pin given to one is not silently different from the other.
func TestDockerfileMakeTarget(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	recipe := regexp.MustCompile(`(?ms)^docker:.*?\n((?:\t.*\n)+)`).FindSubmatch(mk)
	if recipe == nil {
		t.Fatal("no docker target in the Makefile")
	}
	for _, arg := range []string{"VERSION", "REVISION", "CREATED", "SOURCE", "GO_IMAGE", "RUNTIME_IMAGE"} {
		if !strings.Contains(string(recipe[1]), "--build-arg "+arg+"=") {
			t.Errorf("make docker does not pass --build-arg %s", arg)
		}
	}
	global, _ := args(stages(parseDockerfile(string(df)))[0])
	for _, name := range []string{"GO_IMAGE", "RUNTIME_IMAGE"} {
		m := regexp.MustCompile(`(?m)^` + name + `\s*\?=\s*(\S+)`).FindSubmatch(mk)
		if m == nil {
			t.Errorf("the Makefile does not set %s", name)
			continue
		}
		if string(m[1]) != global[name] {
			t.Errorf("Makefile %s = %s, Dockerfile default %s", name, m[1], global[name])
		}
	}
}
