package media

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// seqRewriter keeps the RTP sequence numbers and timestamps of one copy
// (the track the server sends a device) continuous when the sender feeding
// it changes: a side back after a drop (resume.go) sends from a new
// PeerConnection whose sequence numbers and timestamps start at random
// values. A receiver takes a copy whose sequence number jumps backwards for
// old packets: its SRTP replay window (64 packets in libwebrtc and pion)
// drops them, and its jitter buffer waits for the "missing" ones, so the
// peer's picture and sound would freeze until the new numbers caught up
// with the old ones, which can take minutes.
//
// The first sender's packets pass unchanged. From the second on, each
// sender's numbers get an offset chosen at its first packet: its sequence
// numbers follow the last one sent, its timestamps the last one plus the
// wall time in between (at the codec's clock rate), as if one sender had
// paused. Packets of a sender that was replaced are not sent (they are
// late: the receiver has moved on).
//
// Senders are told apart by a generation number (newer senders have larger
// ones, see senderGen), not by pointer, so that the rewriter of a long call
// holds nothing of the senders it has seen: a device may resume many times.
type seqRewriter struct {
	clockRate uint32 // ticks per second of the copy's codec

	mu      sync.Mutex // guards the following
	cur     uint64     // generation of the sender being forwarded; 0 before the first packet
	seqOff  uint16
	tsOff   uint32
	lastSeq uint16 // highest sequence number sent (RFC 3550 serial order)
	lastTS  uint32 // timestamp of that packet
	lastAt  time.Time
}

func newSeqRewriter(clockRate uint32) *seqRewriter {
	return &seqRewriter{clockRate: clockRate}
}

// senderGen numbers senders (sources) in the order they are created.
var senderGen atomic.Uint64

// rewrite rewrites pkt's header in place for the copy, pkt being from the
// sender of generation gen (> 0) and read at now; it reports false when
// pkt must not be sent (too short to be RTP, or from a replaced sender).
func (w *seqRewriter) rewrite(gen uint64, pkt []byte, now time.Time) bool {
	if len(pkt) < 12 {
		return false
	}
	seq := binary.BigEndian.Uint16(pkt[2:4])
	ts := binary.BigEndian.Uint32(pkt[4:8])
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen != w.cur {
		if gen < w.cur {
			return false // replaced
		}
		if w.cur != 0 {
			gap := now.Sub(w.lastAt)
			ticks := uint32(1)
			if gap > 0 {
				// A drop lasts seconds; cap at an hour so the product
				// cannot overflow.
				ticks = max(1, uint32(min(gap, time.Hour).Seconds()*float64(w.clockRate)))
			}
			w.seqOff = w.lastSeq + 1 - seq
			w.tsOff = w.lastTS + ticks - ts
		}
		w.cur = gen
		w.lastSeq = seq + w.seqOff - 1 // so the first packet counts as the newest
	}
	seq += w.seqOff
	ts += w.tsOff
	if int16(seq-w.lastSeq) > 0 {
		w.lastSeq, w.lastTS, w.lastAt = seq, ts, now
	}
	binary.BigEndian.PutUint16(pkt[2:4], seq)
	binary.BigEndian.PutUint32(pkt[4:8], ts)
	return true
}
