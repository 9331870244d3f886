package storetest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/user-media-plug/umplug/internal/store"
)

// WriteCorruptTable writes users (with peers: none) into a Pebble store in
// dir, flushes them into a table, and flips bytes in the table's first
// data block: reading any of those users afterwards finds a checksum
// mismatch, as a bad disk sector would cause. The directory is then ready
// for store.OpenPebble (opening succeeds; the corruption is found on read).
func WriteCorruptTable(t testing.TB, dir string, users ...string) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{t}, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range users {
		val, _ := json.Marshal(store.User{Password: "$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAA$BBBBBBBBBBBBBBBBBBBBBB", Peers: []string{}})
		if err := db.Set([]byte("u/"+name), val, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The first data block starts at offset 0 and holds the keys;
		// flip the bytes of the first user's value (it is in that block).
		i := bytes.Index(b, []byte("$argon2id$"))
		if i < 0 {
			continue
		}
		for j := i; j < i+16 && j < len(b); j++ {
			b[j] ^= 0xff
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("storetest: no table holding user records to corrupt")
	}
}

type quietPebble struct{ t testing.TB }

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (q quietPebble) Fatalf(f string, a ...any) {
	q.t.Fatalf("pebble: "+f, a...)
}

// FailingFS is the operating system's file system with write failures that
// a test switches on: every write, sync or create then fails, as on a full
// or broken disk. Reads keep working.
type FailingFS struct {
	vfs.FS
	toggle *errorfs.Toggle
}

// NewFailingFS returns a FailingFS with failures off.
func NewFailingFS() *FailingFS {
	tg := &errorfs.Toggle{Injector: errorfs.ErrInjected}
	return &FailingFS{FS: errorfs.Wrap(vfs.Default, writesOnly{tg}), toggle: tg}
}

// Fail switches write failures on.
func (f *FailingFS) Fail() { f.toggle.On() }

type writesOnly struct{ inj errorfs.Injector }

func (w writesOnly) String() string { return "writes-only" }

func (w writesOnly) MaybeError(op errorfs.Op) error {
	if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
		return nil
	}
	return w.inj.MaybeError(op)
}
