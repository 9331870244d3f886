package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/user-media-plug/umplug/internal/store"
)

// errNameTaken means a name, or another spelling of it in a different case,
// is registered or being registered.
var errNameTaken = errors.New("name taken")

// nameIndex makes user names unique regardless of case: "Alice" cannot be
// registered next to "alice", so nobody can pose as someone else with a
// name that looks the same. Names keep the case they were registered with
// (what whoami, events and peer lists show) and are matched exactly: the
// store's keys are unchanged, and existing data loads as it is.
//
// The store can only look a name up exactly, so the index remembers the
// case-folded form of every stored name that has upper-case letters; for
// an all-lower-case form the store itself answers. It is loaded from the
// store on the first registration (the admin CLI cannot write while a server
// holds the store) and holds only the mixed-case names.
type nameIndex struct {
	mu      sync.Mutex // guards the following
	loaded  bool
	mixed   map[string]string   // folded → stored name, for names with upper case
	pending map[string]struct{} // folded names being registered now
}

func newNameIndex() *nameIndex {
	return &nameIndex{mixed: make(map[string]string), pending: make(map[string]struct{})}
}

// fold is the form two names that differ only in case share. Names are
// ASCII (protocol.CheckName), so ASCII lower case is the whole folding.
func fold(name string) string { return strings.ToLower(name) }

// claim reserves name for a registration, or fails with errNameTaken if a
// case variant of it exists or is being registered, or with the store's
// error. On success the caller must call release exactly once, with whether
// the user was created.
func (ix *nameIndex) claim(ctx context.Context, st store.Store, name string) (release func(created bool), err error) {
	f := fold(name)
	ix.mu.Lock()
	if !ix.loaded {
		if err := ix.loadLocked(ctx, st); err != nil {
			ix.mu.Unlock()
			return nil, err
		}
	}
	if _, busy := ix.pending[f]; busy {
		ix.mu.Unlock()
		return nil, errNameTaken
	}
	if _, ok := ix.mixed[f]; ok {
		ix.mu.Unlock()
		return nil, errNameTaken
	}
	ix.pending[f] = struct{}{}
	ix.mu.Unlock()

	release = func(created bool) {
		ix.mu.Lock()
		defer ix.mu.Unlock()
		delete(ix.pending, f)
		if created && f != name {
			ix.mixed[f] = name
		}
	}
	// The all-lower-case spelling is the one case variant the index does
	// not hold: ask the store (this also finds name itself when it is
	// lower case).
	_, err = st.Get(ctx, f)
	switch {
	case err == nil:
		release(false)
		return nil, errNameTaken
	case !errors.Is(err, store.ErrNotFound):
		release(false)
		return nil, err
	}
	return release, nil
}

func (ix *nameIndex) loadLocked(ctx context.Context, st store.Store) error {
	mixed := make(map[string]string)
	err := st.List(ctx, func(u store.User) bool {
		if f := fold(u.Name); f != u.Name {
			mixed[f] = u.Name
		}
		return ctx.Err() == nil
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("load user names: %w", err)
	}
	ix.mixed, ix.loaded = mixed, true
	return nil
}
