package password

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// cheap keeps tests fast under -race; Verify reads params from the hash.
var cheap = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	h := New(Config{Params: cheap})
	phc, err := h.Hash(ctx, "sesameopen")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q: unexpected prefix", phc)
	}
	if strings.Contains(phc, "sesameopen") {
		t.Fatal("hash contains the clear password")
	}
	ok, err := h.Verify(ctx, phc, "sesameopen")
	if err != nil || !ok {
		t.Fatalf("Verify(right) = %v, %v; want true, nil", ok, err)
	}
	ok, err = h.Verify(ctx, phc, "sesameopen!")
	if err != nil || ok {
		t.Fatalf("Verify(wrong) = %v, %v; want false, nil", ok, err)
	}
	phc2, err := h.Hash(ctx, "sesameopen")
	if err != nil {
		t.Fatal(err)
	}
	if phc2 == phc {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestOWASPDefaults(t *testing.T) {
	if OWASP.Memory != 19456 || OWASP.Time != 2 || OWASP.Threads != 1 {
		t.Fatalf("OWASP = %+v; want m=19456,t=2,p=1", OWASP)
	}
	h := New(Config{})
	if h.Params() != OWASP {
		t.Fatalf("zero Config params = %+v; want OWASP", h.Params())
	}
	if !strings.HasPrefix(h.dummy, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("dummy hash %q does not carry the OWASP params", h.dummy)
	}
}

func TestParamsFromString(t *testing.T) {
	ctx := testCtx(t)
	phc, err := New(Config{Params: cheap}).Hash(ctx, "sesameopen")
	if err != nil {
		t.Fatal(err)
	}
	other := New(Config{Params: Params{Memory: 128, Time: 3, Threads: 2, SaltLen: 8, KeyLen: 16}})
	ok, err := other.Verify(ctx, phc, "sesameopen")
	if err != nil || !ok {
		t.Fatalf("Verify with other params = %v, %v; want true, nil", ok, err)
	}
}

func TestMalformed(t *testing.T) {
	ctx := testCtx(t)
	h := New(Config{Params: cheap})
	good, err := h.Hash(ctx, "sesameopen")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	tests := []struct {
		name, phc string
	}{
		{"empty", ""},
		{"garbage", "not a hash"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key},
		{"old version", "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key},
		{"missing key", "$argon2id$v=19$m=64,t=1,p=1$" + salt},
		{"extra field", good + "$x"},
		{"two params", "$argon2id$v=19$m=64,t=1$" + salt + "$" + key},
		{"repeated param", "$argon2id$v=19$m=64,m=64,t=1$" + salt + "$" + key},
		{"unknown param", "$argon2id$v=19$m=64,t=1,x=1$" + salt + "$" + key},
		{"not a number", "$argon2id$v=19$m=abc,t=1,p=1$" + salt + "$" + key},
		{"negative", "$argon2id$v=19$m=-64,t=1,p=1$" + salt + "$" + key},
		{"memory over 1 GiB", "$argon2id$v=19$m=1048577,t=1,p=1$" + salt + "$" + key},
		{"memory under 8p", "$argon2id$v=19$m=7,t=1,p=1$" + salt + "$" + key},
		{"time zero", "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key},
		{"time absurd", "$argon2id$v=19$m=64,t=100000,p=1$" + salt + "$" + key},
		{"threads zero", "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key},
		{"threads over 255", "$argon2id$v=19$m=4096,t=1,p=256$" + salt + "$" + key},
		{"padded base64", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key},
		{"bad base64", "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + key},
		{"short salt", "$argon2id$v=19$m=64,t=1,p=1$AAAA$" + key},
		{"short key", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$AAAA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := h.Verify(ctx, tt.phc, "sesameopen")
			if ok || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Verify(%q) = %v, %v; want false, ErrMalformed", tt.phc, ok, err)
			}
		})
	}
}

func TestVerifyUnknown(t *testing.T) {
	ctx := testCtx(t)
	h := New(Config{Params: cheap})
	h.VerifyUnknown(ctx, "sesameopen") // must not panic; does one derivation
	if _, _, _, err := decode(h.dummy); err != nil {
		t.Fatalf("dummy hash does not parse: %v", err)
	}
}

func TestSemaphoreBound(t *testing.T) {
	h := newTestHasher(1)
	if err := h.acquire(testCtx(t), "holder"); err != nil { // hold the only slot
		t.Fatal(err)
	}

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := h.Hash(ctx, "sesameopen"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Hash = %v; want context.Canceled", err)
		}
	})
	t.Run("deadline while waiting", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		phc := "$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		if _, err := h.Verify(ctx, phc, "sesameopen"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Verify = %v; want context.DeadlineExceeded", err)
		}
	})
	t.Run("released", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			_, err := h.Hash(testCtx(t), "sesameopen")
			done <- err
		}()
		waitQueued(t, h, 1)
		h.release() // free the slot: the waiter proceeds
		if err := <-done; err != nil {
			t.Fatalf("Hash after release = %v", err)
		}
	})
}

func BenchmarkHashOWASP(b *testing.B) {
	h := New(Config{})
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.Hash(ctx, "sesameopen"); err != nil {
			b.Fatal(err)
		}
	}
}
