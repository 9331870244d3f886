package media

import "errors"

// Errors returned by New.
var (
	// ErrNoEnder means Config.Ender was nil: without it a media failure could
	// never end the call on the metadata side.
	ErrNoEnder = errors.New("media: Config.Ender is required")
	// ErrMetrics means a metric could not be registered (usually a second
	// Server registered with the same Registerer).
	ErrMetrics = errors.New("media: register metrics")
)
