package recstrata_test

// Loader checks against fake libraries compiled here with the C compiler cgo
// uses. The library is process-global (loaded once), so each check runs in a
// child process: this test binary re-executed with RECSTRATA_FAKE_LIBRARY set,
// which TestMain turns into "load that path, print the outcome, exit".

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recstrata/recstrata/go_client"
)

func TestMain(m *testing.M) {
	if path := os.Getenv("RECSTRATA_FAKE_LIBRARY"); path != "" {
		err := recstrata.LoadLibrary(path)
		var e *recstrata.Error
		switch {
		case err == nil:
			s, n, _, _ := recstrata.LibraryVersion()
			fmt.Printf("loaded %s %d\n", s, n)
		case errors.As(err, &e):
			fmt.Printf("error %s: %s\n", e.Code, e.Message)
		default:
			fmt.Printf("untyped error: %v\n", err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeSymbols are every function the shim looks up, as trivial C stubs.
const fakeSymbols = `
int rs_error_code(void* e) { return 0; }
const char* rs_error_message(void* e) { return ""; }
void rs_error_free(void* e) {}
const char* rs_status_name(int c) { return "X"; }
void rs_free(void* p) {}
int rs_model_open(const char* d, const char* c, void** o, void** e) { return 11; }
void rs_model_close(void* m) {}
unsigned long rs_model_num_inputs(const void* m) { return 0; }
unsigned long rs_model_num_outputs(const void* m) { return 0; }
int rs_model_input(const void* m, unsigned long i, void* o, void** e) { return 5; }
int rs_model_output(const void* m, unsigned long i, void* o, void** e) { return 5; }
int rs_model_describe_json(const void* m, char** o, void** e) { return 11; }
int rs_model_stats_json(const void* m, char** o, void** e) { return 11; }
int rs_model_run(void* m, const void* in, unsigned long n, const char* const* on,
                 unsigned long no, void** r, void** e) { return 11; }
unsigned long rs_result_count(const void* r) { return 0; }
int rs_result_output(const void* r, unsigned long i, void* o, void** e) { return 5; }
void rs_result_free(void* r) {}
int rs_model_predict(void* m, const void* q, unsigned long n, void** o,
                     unsigned long* on, void** e) { return 11; }
`

func buildFake(t *testing.T, name, src string) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		out, err := exec.Command("go", "env", "CC").Output()
		if err != nil {
			t.Fatalf("go env CC: %v", err)
		}
		cc = strings.Fields(string(out))[0]
	}
	dir := t.TempDir()
	cfile := filepath.Join(dir, name+".c")
	lib := filepath.Join(dir, name+".so")
	if err := os.WriteFile(cfile, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, cfile).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cc, err, out)
	}
	return lib
}

func loadInChild(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RECSTRATA_FAKE_LIBRARY="+path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestLoaderChecksVersions(t *testing.T) {
	version := func(abi, number int) string {
		return fmt.Sprintf("int rs_abi_version(void) { return %d; }\n"+
			"int rs_version_number(void) { return %d; }\n"+
			"const char* rs_version_string(void) { return \"fake\"; }\n", abi, number)
	}
	cases := []struct {
		name, src, want string
	}{
		{"good", version(1, 100) + fakeSymbols, "loaded fake 100"},
		{"newer minor", version(1, 300) + fakeSymbols, "loaded fake 300"},
		{"other ABI", version(2, 100) + fakeSymbols, "error RS_ERR_INCOMPATIBLE: "},
		{"too old", version(1, 99) + fakeSymbols, "error RS_ERR_INCOMPATIBLE: "},
		{"missing symbols", version(1, 100), "error RS_ERR_INCOMPATIBLE: "},
	}
	for _, c := range cases {
		got := loadInChild(t, buildFake(t, strings.ReplaceAll(c.name, " ", "_"), c.src))
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: %q, want prefix %q", c.name, got, c.want)
		} else {
			t.Logf("%s: %s", c.name, got)
		}
	}
	got := loadInChild(t, filepath.Join(t.TempDir(), "absent.so"))
	if !strings.HasPrefix(got, "error RS_ERR_NOT_FOUND: ") {
		t.Errorf("absent library: %q", got)
	}
}
