package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Sessions and missed calls on disk (next to "u/" + name):
//
//	"s/" + hash                 ->  {"user":…,"created":…,"used":…}
//	"su/" + user + "/" + hash   ->  ""   (index: the sessions of a user)
//	"m/" + user                 ->  [{"user":<caller>,"at":…,"reason":…}, …] oldest first
//
// hash is the hex SHA-256 of the session secret: the secret itself is never
// written. User names cannot contain '/', so "su/alice/" never prefixes
// another user's keys. A user's keys are written under the user's stripe,
// and Delete removes them with the user in one batch.
const (
	sessionPrefix      = "s/"
	sessionIndexPrefix = "su/"
	missedPrefix       = "m/"
)

func sessionKey(hash string) []byte { return []byte(sessionPrefix + hash) }
func sessionIndexKey(user, hash string) []byte {
	return []byte(sessionIndexPrefix + user + "/" + hash)
}
func sessionIndexRange(user string) (lo, hi []byte) {
	return []byte(sessionIndexPrefix + user + "/"), []byte(sessionIndexPrefix + user + "0") // '/'+1 == '0'
}
func missedKey(user string) []byte { return []byte(missedPrefix + user) }

// getSession reads a session; ErrNotFound if absent.
func (s *pebbleStore) getSession(hash string) (Session, error) {
	val, closer, err := s.db.Get(sessionKey(hash))
	if errors.Is(err, pebble.ErrNotFound) {
		return Session{}, fmt.Errorf("get session: %w", ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("get session: %w", err)
	}
	defer closer.Close()
	var ss Session
	if err := json.Unmarshal(val, &ss); err != nil {
		return Session{}, fmt.Errorf("decode session: %w", err)
	}
	ss.Hash = hash
	return ss, nil
}

func (s *pebbleStore) putSession(b *pebble.Batch, ss Session) error {
	val, err := json.Marshal(ss)
	if err != nil {
		return fmt.Errorf("encode session: %w", err)
	}
	if err := b.Set(sessionKey(ss.Hash), val, nil); err != nil {
		return err
	}
	return b.Set(sessionIndexKey(ss.User, ss.Hash), nil, nil)
}

func (s *pebbleStore) CreateSession(ctx context.Context, ss Session) error {
	if ss.Hash == "" || ss.User == "" || strings.Contains(ss.User, "/") {
		return fmt.Errorf("create session: bad hash or user")
	}
	return s.do(func() error {
		defer s.rmw.lock(ss.User)()
		if _, err := s.get(ss.User); err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		b := s.db.NewBatch()
		defer b.Close()
		if err := s.putSession(b, ss); err != nil {
			return err
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("write session: %w", err)
		}
		return nil
	})
}

func (s *pebbleStore) GetSession(ctx context.Context, hash string) (ss Session, err error) {
	err = s.do(func() error {
		ss, err = s.getSession(hash)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	return ss, nil
}

// TouchSession writes without sync (see the interface). It takes the
// user's stripe so that it never brings back a session deleted meanwhile.
func (s *pebbleStore) TouchSession(ctx context.Context, hash string, at time.Time) error {
	return s.do(func() error {
		ss, err := s.getSession(hash)
		if errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		defer s.rmw.lock(ss.User)()
		if ss, err = s.getSession(hash); errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		ss.LastUsed = at
		val, err := json.Marshal(ss)
		if err != nil {
			return fmt.Errorf("encode session: %w", err)
		}
		if err := s.db.Set(sessionKey(hash), val, pebble.NoSync); err != nil {
			return fmt.Errorf("touch session: %w", err)
		}
		return nil
	})
}

func (s *pebbleStore) DeleteSession(ctx context.Context, hash string) error {
	return s.do(func() error {
		ss, err := s.getSession(hash)
		if errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		defer s.rmw.lock(ss.User)()
		b := s.db.NewBatch()
		defer b.Close()
		_ = b.Delete(sessionKey(hash), nil)
		_ = b.Delete(sessionIndexKey(ss.User, hash), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("delete session: %w", err)
		}
		return nil
	})
}

// deleteSessionsInto adds the deletion of every session of user to b and
// returns how many there were. The caller holds user's stripe.
func (s *pebbleStore) deleteSessionsInto(b *pebble.Batch, user string) (int, error) {
	lo, hi := sessionIndexRange(user)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		hash := strings.TrimPrefix(string(it.Key()), string(lo))
		_ = b.Delete(sessionKey(hash), nil)
		_ = b.Delete(sessionIndexKey(user, hash), nil)
		n++
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	return n, nil
}

func (s *pebbleStore) DeleteSessions(ctx context.Context, user string) (n int, err error) {
	err = s.do(func() error {
		defer s.rmw.lock(user)()
		b := s.db.NewBatch()
		defer b.Close()
		if n, err = s.deleteSessionsInto(b, user); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("delete sessions: %w", err)
		}
		return nil
	})
	return n, err
}

func (s *pebbleStore) Sessions(ctx context.Context, user string) (out []Session, err error) {
	err = s.do(func() error {
		lo, hi := sessionIndexRange(user)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return fmt.Errorf("list sessions: %w", err)
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			ss, err := s.getSession(strings.TrimPrefix(string(it.Key()), string(lo)))
			if errors.Is(err, ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			out = append(out, ss)
		}
		return it.Error()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *pebbleStore) getMissed(user string) ([]MissedCall, error) {
	val, closer, err := s.db.Get(missedKey(user))
	if errors.Is(err, pebble.ErrNotFound) {
		return []MissedCall{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get missed calls: %w", err)
	}
	defer closer.Close()
	var out []MissedCall
	if err := json.Unmarshal(val, &out); err != nil {
		return nil, fmt.Errorf("decode missed calls of %q: %w", user, err)
	}
	if out == nil {
		out = []MissedCall{}
	}
	return out, nil
}

func (s *pebbleStore) AppendMissedCalls(ctx context.Context, user string, calls []MissedCall, max int) error {
	return s.do(func() error {
		defer s.rmw.lock(user)()
		if _, err := s.get(user); err != nil {
			return fmt.Errorf("append missed calls: %w", err)
		}
		cur, err := s.getMissed(user)
		if err != nil {
			return err
		}
		val, err := json.Marshal(capMissed(append(cur, calls...), max))
		if err != nil {
			return fmt.Errorf("encode missed calls: %w", err)
		}
		if err := s.db.Set(missedKey(user), val, pebble.Sync); err != nil {
			return fmt.Errorf("write missed calls: %w", err)
		}
		return nil
	})
}

func (s *pebbleStore) MissedCalls(ctx context.Context, user string, clear bool) (out []MissedCall, err error) {
	err = s.do(func() error {
		if clear {
			defer s.rmw.lock(user)()
		}
		if out, err = s.getMissed(user); err != nil {
			return err
		}
		if clear && len(out) > 0 {
			if err := s.db.Delete(missedKey(user), pebble.Sync); err != nil {
				return fmt.Errorf("clear missed calls: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
