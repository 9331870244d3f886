package loadgen

import "errors"

// Sentinel errors of the load generator.
var (
	// ErrBadConfig means a Config field is out of range.
	ErrBadConfig = errors.New("loadgen: bad config")
	// ErrUnknownScenario names no scenario of Scenarios.
	ErrUnknownScenario = errors.New("loadgen: unknown scenario")
	// ErrSetup means the users or connections a scenario needs could not be
	// made ready, so nothing was measured.
	ErrSetup = errors.New("loadgen: setup failed")
	// ErrMetrics means the server's /metrics could not be read or lacks a
	// series the scenario reports.
	ErrMetrics = errors.New("loadgen: metrics")
	// ErrTimeout means an expected event did not arrive in time.
	ErrTimeout = errors.New("loadgen: timed out waiting")
)
