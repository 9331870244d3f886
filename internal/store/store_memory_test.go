package store_test

import (
	"testing"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/internal/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewMemory() })
}
