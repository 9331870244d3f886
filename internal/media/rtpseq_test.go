package media

import (
	"encoding/binary"
	"testing"
	"time"
)

func rtpPacket(seq uint16, ts uint32) []byte {
	p := make([]byte, 12)
	p[0] = 0x80
	binary.BigEndian.PutUint16(p[2:4], seq)
	binary.BigEndian.PutUint32(p[4:8], ts)
	return p
}

func TestSeqRewriter(t *testing.T) {
	type in struct {
		from  string
		seq   uint16
		ts    uint32
		after time.Duration // since the previous packet
	}
	type out struct {
		ok  bool
		seq uint16
		ts  uint32
	}
	tests := []struct {
		name string
		in   []in
		want []out
	}{
		{"first sender passes unchanged, reordering included",
			[]in{{"a", 100, 9000, 0}, {"a", 102, 9060, 20 * time.Millisecond}, {"a", 101, 9030, 0}},
			[]out{{true, 100, 9000}, {true, 102, 9060}, {true, 101, 9030}}},
		{"a new sender far behind continues after the last one",
			[]in{{"a", 5000, 1_000_000, 0}, {"a", 5001, 1_000_960, 20 * time.Millisecond}, {"b", 3, 77, 2 * time.Second}, {"b", 4, 1037, 20 * time.Millisecond}},
			[]out{{true, 5000, 1_000_000}, {true, 5001, 1_000_960}, {true, 5002, 1_000_960 + 2*48000}, {true, 5003, 1_000_960 + 2*48000 + 960}}},
		{"wraparound of both counters",
			[]in{{"a", 65535, 4294967000, 0}, {"b", 40000, 10, time.Millisecond}, {"b", 40001, 58, 0}},
			[]out{{true, 65535, 4294967000}, {true, 0, 4294967000 + 48}, {true, 1, 4294967000 + 96}}},
		{"a replaced sender's late packets are dropped",
			[]in{{"a", 10, 100, 0}, {"b", 500, 7, 0}, {"a", 11, 200, 0}, {"b", 501, 8, 0}},
			[]out{{true, 10, 100}, {true, 11, 101}, {false, 0, 0}, {true, 12, 102}}},
		{"a third sender follows the second",
			[]in{{"a", 1, 1, 0}, {"b", 900, 900, 0}, {"b", 901, 901, 0}, {"c", 30000, 5, time.Second}},
			[]out{{true, 1, 1}, {true, 2, 2}, {true, 3, 3}, {true, 4, 3 + 48000}}},
		{"too short to be RTP",
			[]in{{"a", 0, 0, 0}},
			[]out{{false, 0, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newSeqRewriter(48000)
			now := time.Unix(1000, 0)
			for i, p := range tc.in {
				now = now.Add(p.after)
				pkt := rtpPacket(p.seq, p.ts)
				if tc.name == "too short to be RTP" {
					pkt = pkt[:11]
				}
				ok := w.rewrite(uint64(p.from[0]-'a'+1), pkt, now) // a, b, c: senders 1, 2, 3
				want := tc.want[i]
				if ok != want.ok {
					t.Fatalf("packet %d: ok %v, want %v", i, ok, want.ok)
				}
				if !ok {
					continue
				}
				seq, ts := binary.BigEndian.Uint16(pkt[2:4]), binary.BigEndian.Uint32(pkt[4:8])
				if seq != want.seq || ts != want.ts {
					t.Errorf("packet %d: seq %d ts %d, want seq %d ts %d", i, seq, ts, want.seq, want.ts)
				}
			}
		})
	}
}

func BenchmarkSeqRewriter(b *testing.B) {
	w := newSeqRewriter(90000)
	pkt := rtpPacket(0, 0)
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint16(pkt[2:4], uint16(i))
		w.rewrite(1, pkt, now)
	}
}
