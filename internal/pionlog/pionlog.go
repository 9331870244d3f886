// Package pionlog routes pion's (WebRTC, ICE, DTLS) log lines into a
// *slog.Logger, so that the server and the Go client keep one logging path
// and tests see pion's diagnostics in their own test log.
//
// pion is chatty about ordinary events, even at Error (every packet still
// queued when a call's sockets close is a "Failed to write packet" error),
// so levels are shifted down: pion Error is slog Info, Warn and Info are
// Debug, and Debug/Trace are dropped.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Factory returns a pion LoggerFactory writing to log (nil discards).
func Factory(log *slog.Logger) logging.LoggerFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return factory{log}
}

type factory struct{ log *slog.Logger }

func (f factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{f.log.With("pion", scope)}
}

type logger struct{ log *slog.Logger }

func (l logger) emit(lv slog.Level, msg string) {
	if l.log.Enabled(context.Background(), lv) {
		l.log.Log(context.Background(), lv, msg)
	}
}

func (l logger) Trace(string)          {}
func (l logger) Tracef(string, ...any) {}
func (l logger) Debug(string)          {}
func (l logger) Debugf(string, ...any) {}
func (l logger) Info(m string)         { l.emit(slog.LevelDebug, m) }
func (l logger) Infof(f string, a ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.emit(slog.LevelDebug, fmt.Sprintf(f, a...))
	}
}
func (l logger) Warn(m string) { l.emit(slog.LevelInfo, m) }
func (l logger) Warnf(f string, a ...any) {
	if l.log.Enabled(context.Background(), slog.LevelInfo) {
		l.emit(slog.LevelInfo, fmt.Sprintf(f, a...))
	}
}
func (l logger) Error(m string)            { l.emit(slog.LevelWarn, m) }
func (l logger) Errorf(f string, a ...any) { l.emit(slog.LevelWarn, fmt.Sprintf(f, a...)) }
