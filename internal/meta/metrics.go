package meta

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/protocol"
)

// metrics are the server's Prometheus instruments. Label lookups are cached
// per message type and error code so the hot path does not hash label sets.
type metrics struct {
	conns         prometheus.Gauge
	users         prometheus.Gauge
	devices       prometheus.Gauge
	messagesVec   *prometheus.CounterVec
	errorsVec     *prometheus.CounterVec
	durationVec   *prometheus.HistogramVec
	calls         *prometheus.CounterVec
	setup         prometheus.Histogram
	presence      prometheus.Counter
	logins        *prometheus.CounterVec
	registrations prometheus.Counter
	slowConsumers prometheus.Counter
	graceDevices  prometheus.Gauge
	resumes       prometheus.Counter

	mu   sync.Mutex // guards the caches below
	msgC map[string]prometheus.Counter
	errC map[protocol.Code]prometheus.Counter
	durH map[string]prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "umplug_meta_connections",
			Help: "Open /meta connections, identified or not."}),
		users: prometheus.NewGauge(prometheus.GaugeOpts{Name: "umplug_meta_online_users",
			Help: "Users with at least one identified device."}),
		devices: prometheus.NewGauge(prometheus.GaugeOpts{Name: "umplug_meta_devices",
			Help: "Identified /meta connections."}),
		messagesVec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "umplug_meta_messages_total",
			Help: "Client messages received, by type (\"\" when not a known type)."}, []string{"type"}),
		errorsVec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "umplug_meta_errors_total",
			Help: "Failed responses, by error code."}, []string{"code"}),
		durationVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "umplug_meta_request_seconds",
			Help:    "Time to process one client message, by type.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{"type"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "umplug_meta_calls_total",
			Help: "Calls by outcome: started, paired, and how they ended (rejected, timeout, cancelled, hangup, disconnected, offline, shutdown)."},
			[]string{"outcome"}),
		setup: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "umplug_meta_call_setup_seconds",
			Help:    "Time from call to pair (ringing included).",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 12)}),
		presence: prometheus.NewCounter(prometheus.CounterOpts{Name: "umplug_meta_presence_deliveries_total",
			Help: "Status messages queued to devices."}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "umplug_meta_logins_total",
			Help: "whoami attempts that checked a password, by result."}, []string{"result"}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "umplug_meta_registrations_total",
			Help: "Users created through reg-user."}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Name: "umplug_meta_slow_consumers_total",
			Help: "Connections closed because their outbound queue overflowed."}),
		graceDevices: prometheus.NewGauge(prometheus.GaugeOpts{Name: "umplug_meta_grace_devices",
			Help: "Devices whose connection dropped, waiting for a resume (contract section 8)."}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "umplug_meta_resumes_total",
			Help: "whoami with resume that took over their device."}),
		msgC: make(map[string]prometheus.Counter),
		errC: make(map[protocol.Code]prometheus.Counter),
		durH: make(map[string]prometheus.Observer),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.users, m.devices, m.messagesVec, m.errorsVec,
			m.durationVec, m.calls, m.setup, m.presence, m.logins, m.registrations, m.slowConsumers,
			m.graceDevices, m.resumes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) message(typ string) {
	if typ != "" && !protocol.IsClientType(typ) {
		typ = "unknown"
	}
	m.mu.Lock()
	c := m.msgC[typ]
	if c == nil {
		c = m.messagesVec.WithLabelValues(typ)
		m.msgC[typ] = c
	}
	m.mu.Unlock()
	c.Inc()
}

func (m *metrics) errors(code protocol.Code) {
	m.mu.Lock()
	c := m.errC[code]
	if c == nil {
		c = m.errorsVec.WithLabelValues(string(code))
		m.errC[code] = c
	}
	m.mu.Unlock()
	c.Inc()
}

func (m *metrics) observe(typ string, d time.Duration) {
	m.mu.Lock()
	o := m.durH[typ]
	if o == nil {
		o = m.durationVec.WithLabelValues(typ)
		m.durH[typ] = o
	}
	m.mu.Unlock()
	o.Observe(d.Seconds())
}
