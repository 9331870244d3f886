package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// memoryStore keeps users in a map. It is for tests: nothing is durable.
type memoryStore struct {
	rmw *stripes // serialises read-modify-write per user; taken before mu

	mu       sync.RWMutex // guards the following
	users    map[string]User
	sessions map[string]Session      // by hash
	missed   map[string][]MissedCall // by user, oldest first
	closed   bool
}

var _ Store = (*memoryStore)(nil)

// NewMemory returns an empty in-memory Store. Its writes are not durable; use
// it in tests and as the reference behaviour of the Store contract.
func NewMemory() Store {
	return &memoryStore{rmw: newStripes(), users: make(map[string]User),
		sessions: make(map[string]Session), missed: make(map[string][]MissedCall)}
}

func (s *memoryStore) get(name string) (User, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return User{}, ErrClosed
	}
	u, ok := s.users[name]
	if !ok {
		return User{}, fmt.Errorf("get %q: %w", name, ErrNotFound)
	}
	return cloneUser(u), nil
}

func (s *memoryStore) put(u User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.users[u.Name] = cloneUser(u)
	return nil
}

func (s *memoryStore) Create(ctx context.Context, u User) error {
	if u.Name == "" {
		return fmt.Errorf("create: empty user name")
	}
	defer s.rmw.lock(u.Name)()
	if _, err := s.get(u.Name); err == nil {
		return fmt.Errorf("create %q: %w", u.Name, ErrExists)
	} else if errors.Is(err, ErrClosed) {
		return err
	}
	return s.put(u)
}

func (s *memoryStore) Get(ctx context.Context, name string) (User, error) {
	return s.get(name)
}

func (s *memoryStore) Delete(ctx context.Context, name string) error {
	defer s.rmw.lock(name)()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.users[name]; !ok {
		return fmt.Errorf("delete %q: %w", name, ErrNotFound)
	}
	delete(s.users, name)
	delete(s.missed, name)
	for h, ss := range s.sessions {
		if ss.User == name {
			delete(s.sessions, h)
		}
	}
	return nil
}

func (s *memoryStore) SetPassword(ctx context.Context, name, hash string) error {
	defer s.rmw.lock(name)()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	u, ok := s.users[name]
	if !ok {
		return fmt.Errorf("set password %q: %w", name, ErrNotFound)
	}
	u.Password = hash
	s.users[name] = u
	return nil
}

// UpdatePeers calls fn without holding s.mu, so fn may read the store (for
// example to check that added peers exist). fn must not update the store.
func (s *memoryStore) UpdatePeers(ctx context.Context, name string, fn func([]string) ([]string, error)) (User, error) {
	defer s.rmw.lock(name)()
	u, err := s.get(name)
	if err != nil {
		return User{}, err
	}
	peers, err := fn(u.Peers) // u.Peers is already a copy
	if err != nil {
		return User{}, err
	}
	u.Peers = clonePeers(peers)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return User{}, ErrClosed
	}
	cur, ok := s.users[name]
	if !ok { // cannot happen: Delete takes the same stripe
		return User{}, fmt.Errorf("update peers %q: %w", name, ErrNotFound)
	}
	cur.Peers = u.Peers
	s.users[name] = cur
	return cloneUser(cur), nil
}

// List works on a snapshot taken at the call, so fn may use the store.
func (s *memoryStore) List(ctx context.Context, fn func(User) bool) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	users := make([]User, 0, len(s.users))
	for _, u := range s.users {
		users = append(users, cloneUser(u))
	}
	s.mu.RUnlock()
	slices.SortFunc(users, func(a, b User) int { return strings.Compare(a.Name, b.Name) })
	for _, u := range users {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !fn(u) {
			return nil
		}
	}
	return nil
}

func (s *memoryStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *memoryStore) CreateSession(ctx context.Context, ss Session) error {
	if ss.Hash == "" || ss.User == "" {
		return fmt.Errorf("create session: empty hash or user")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.users[ss.User]; !ok {
		return fmt.Errorf("create session of %q: %w", ss.User, ErrNotFound)
	}
	s.sessions[ss.Hash] = ss
	return nil
}

func (s *memoryStore) GetSession(ctx context.Context, hash string) (Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Session{}, ErrClosed
	}
	ss, ok := s.sessions[hash]
	if !ok {
		return Session{}, fmt.Errorf("get session: %w", ErrNotFound)
	}
	return ss, nil
}

func (s *memoryStore) TouchSession(ctx context.Context, hash string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if ss, ok := s.sessions[hash]; ok {
		ss.LastUsed = at
		s.sessions[hash] = ss
	}
	return nil
}

func (s *memoryStore) DeleteSession(ctx context.Context, hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	delete(s.sessions, hash)
	return nil
}

func (s *memoryStore) DeleteSessions(ctx context.Context, user string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	n := 0
	for h, ss := range s.sessions {
		if ss.User == user {
			delete(s.sessions, h)
			n++
		}
	}
	return n, nil
}

func (s *memoryStore) Sessions(ctx context.Context, user string) ([]Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []Session
	for _, ss := range s.sessions {
		if ss.User == user {
			out = append(out, ss)
		}
	}
	return out, nil
}

func (s *memoryStore) AppendMissedCalls(ctx context.Context, user string, calls []MissedCall, max int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.users[user]; !ok {
		return fmt.Errorf("append missed calls of %q: %w", user, ErrNotFound)
	}
	s.missed[user] = capMissed(append(slices.Clone(s.missed[user]), calls...), max)
	return nil
}

func (s *memoryStore) MissedCalls(ctx context.Context, user string, clear bool) ([]MissedCall, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := slices.Clone(s.missed[user])
	if clear {
		delete(s.missed, user)
	}
	if out == nil {
		out = []MissedCall{}
	}
	return out, nil
}
