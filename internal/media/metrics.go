package media

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/protocol"
)

// metrics are the media server's Prometheus series. They exist (and count)
// even when no Registerer was given, so the code never checks for nil.
type metrics struct {
	active  prometheus.Gauge       // calls whose two sides are paired and relaying
	bytes   prometheus.Counter     // payload bytes relayed, both directions
	frames  prometheus.Counter     // binary messages relayed, both directions
	ended   *prometheus.CounterVec // calls torn down, by reason
	refused *prometheus.CounterVec // media connections refused before relaying, by cause
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "umplug_media_active_relays",
			Help: "Calls whose two media connections are paired and relaying.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umplug_media_relayed_bytes_total",
			Help: "Binary payload bytes relayed between paired media connections (both directions).",
		}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umplug_media_relayed_frames_total",
			Help: "Binary messages relayed between paired media connections (both directions).",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umplug_media_relays_ended_total",
			Help: "Calls whose media was torn down, by reason (hangup, disconnected, shutdown, ...).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umplug_media_refused_total",
			Help: "Media connections refused before relaying, by cause (hello, ticket, shutdown).",
		}, []string{"cause"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.active, m.bytes, m.frames, m.ended, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMetrics, err)
		}
	}
	return m, nil
}

// knownReasons bounds the cardinality of the ended counter's label: Unpair
// reasons come from another component and are not trusted to be few.
var knownReasons = map[string]bool{
	protocol.ReasonHangup:       true,
	protocol.ReasonDisconnected: true,
	protocol.ReasonShutdown:     true,
	protocol.ReasonTimeout:      true,
	protocol.ReasonRejected:     true,
	protocol.ReasonCancelled:    true,
}

func reasonLabel(r string) string {
	if knownReasons[r] {
		return r
	}
	return "other"
}
