// Unit tests of umplug.js's message handling with a fake WebSocket:
// node --test web/jstest/
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { UmplugClient, UmplugError, sniffWebM, mediaMode, offerMedia, scoreQuality } from '../static/umplug.js'

// FakeWS records what the client sends and lets the test play the server.
class FakeWS extends EventTarget {
  static last = null
  constructor (url) {
    super()
    this.url = url
    this.readyState = 0
    this.sent = []
    FakeWS.last = this
    queueMicrotask(() => { this.readyState = 1; this.dispatchEvent(new Event('open')) })
  }

  send (data) { this.sent.push(JSON.parse(data)) }
  close (code = 1000, reason = '') { this.serverClose(code, reason) }
  serverSend (msg) { this.dispatchEvent(Object.assign(new Event('message'), { data: JSON.stringify(msg) })) }
  serverClose (code, reason) {
    if (this.readyState === 3) return
    this.readyState = 3
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason }))
  }

  lastSent () { return this.sent[this.sent.length - 1] }
}

async function connect () {
  const c = await UmplugClient.connect('http://example.test:8080', { WebSocket: FakeWS, timeout: 1000 })
  return { c, ws: FakeWS.last }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

test('connect turns an http URL into the /meta WebSocket URL', async () => {
  const { c, ws } = await connect()
  assert.equal(ws.url, 'ws://example.test:8080/meta')
  assert.equal(c.url, 'ws://example.test:8080/meta')
})

test('login sends whoami with a numeric tx and keeps user and device', async () => {
  const { c, ws } = await connect()
  const p = c.login('alice', 'sesameopen')
  const m = ws.lastSent()
  assert.deepEqual(m, { type: 'whoami', user: 'alice', password: 'sesameopen', tx: 1 })
  ws.serverSend({ type: 'res', for: 'whoami', tx: 1, ok: true, device: 'd7' })
  const res = await p
  assert.equal(res.device, 'd7')
  assert.equal(c.user, 'alice')
  assert.equal(c.device, 'd7')
})

test('every request carries user and a fresh tx', async () => {
  const { c, ws } = await connect()
  c.user = 'alice'
  const cases = [
    [() => c.register('bob', 'sesameopen', ['alice']), { type: 'reg-user', user: 'bob', password: 'sesameopen', peers: ['alice'] }],
    [() => c.addPeers(['bob']), { type: 'add-peers', user: 'alice', peers: ['bob'] }],
    [() => c.delPeers(['bob']), { type: 'del-peers', user: 'alice', peers: ['bob'] }],
    [() => c.peers(), { type: 'peers', user: 'alice' }],
    [() => c.peersOnline(), { type: 'peers-online', user: 'alice' }],
    [() => c.setStatus('away'), { type: 'status', user: 'alice', status: 'away' }],
    [() => c.cancel('bob'), { type: 'cancel', user: 'alice', peer: 'bob' }],
    [() => c.unpair('bob'), { type: 'unpair', user: 'alice', peer: 'bob' }]
  ]
  let tx = 0
  for (const [call, want] of cases) {
    const p = call()
    const m = ws.lastSent()
    tx++
    assert.deepEqual(m, { ...want, tx })
    ws.serverSend({ type: 'res', for: m.type, tx, ok: true, peers: [] })
    await p
  }
})

test('responses are matched by type and tx, even out of order', async () => {
  const { c, ws } = await connect()
  c.user = 'alice'
  const p1 = c.peersOnline()
  const p2 = c.peers()
  ws.serverSend({ type: 'res', for: 'peers', tx: 2, ok: true, peers: [{ user: 'bob', mutual: true, online: true, status: 'online' }] })
  ws.serverSend({ type: 'res', for: 'peers-online', tx: 1, ok: true, peers: ['bob'] })
  assert.deepEqual(await p1, ['bob'])
  assert.equal((await p2)[0].user, 'bob')
})

test('failures reject with UmplugError carrying code, reason and missing', async () => {
  const { c, ws } = await connect()
  c.user = 'alice'
  const p = c.addPeers(['nobody'])
  ws.serverSend({ type: 'res', for: 'add-peers', tx: 1, ok: false, error: 'not-found', reason: 'not registered', missing: ['nobody'] })
  await assert.rejects(p, (err) => {
    assert.ok(err instanceof UmplugError)
    assert.equal(err.code, 'not-found')
    assert.equal(err.reason, 'not registered')
    assert.deepEqual(err.missing, ['nobody'])
    return true
  })
})

test('call resolves with its tx; accept and reject reuse the call tx', async () => {
  const { c, ws } = await connect()
  c.user = 'alice'
  const p = c.call('bob')
  const m = ws.lastSent()
  assert.equal(m.type, 'call')
  ws.serverSend({ type: 'res', for: 'call', tx: m.tx, ok: true })
  assert.equal(await p, m.tx)

  const pa = c.accept('carol', 0.25)
  assert.deepEqual(ws.lastSent(), { type: 'accept', user: 'alice', peer: 'carol', tx: 0.25 })
  ws.serverSend({ type: 'res', for: 'accept', tx: 0.25, ok: true })
  await pa
  const pr = c.reject('carol', 3)
  assert.deepEqual(ws.lastSent(), { type: 'reject', user: 'alice', peer: 'carol', tx: 3 })
  ws.serverSend({ type: 'res', for: 'reject', tx: 3, ok: true })
  await pr
})

test('server events are dispatched by type and as message', async () => {
  const { c, ws } = await connect()
  const got = []
  for (const type of ['status', 'call', 'accept', 'reject', 'cancel', 'unpair', 'force-call']) {
    c.addEventListener(type, (e) => got.push(e.detail.type))
  }
  let messages = 0
  c.addEventListener('message', () => messages++)
  for (const type of ['status', 'call', 'accept', 'reject', 'cancel', 'unpair', 'force-call']) {
    ws.serverSend({ type, user: 'bob', peer: 'alice', tx: 1 })
  }
  assert.deepEqual(got, ['status', 'call', 'accept', 'reject', 'cancel', 'unpair', 'force-call'])
  assert.equal(messages, 7)
})

test('close rejects pending requests with code closed and dispatches close', async () => {
  const { c, ws } = await connect()
  c.user = 'alice'
  let closed = null
  c.addEventListener('close', (e) => { closed = e.detail })
  const p = c.peers()
  ws.serverClose(1001, 'going away')
  await assert.rejects(p, (err) => err.code === 'closed')
  assert.deepEqual(closed, { code: 1001, reason: 'going away' })
  await assert.rejects(c.peers(), (err) => err.code === 'closed')
})

test('a request with no answer rejects with code timeout', async () => {
  const { c } = await connect()
  c.user = 'alice'
  await assert.rejects(c.peers(), (err) => err.code === 'timeout')
})

test('connect rejects when the socket closes before opening', async () => {
  class Refused extends FakeWS {
    constructor (url) {
      super(url)
      this.readyState = 3
      queueMicrotask(() => this.dispatchEvent(Object.assign(new Event('close'), { code: 1006, reason: '' })))
    }

    dispatchEvent (ev) { return ev.type === 'open' ? true : super.dispatchEvent(ev) }
  }
  await assert.rejects(UmplugClient.connect('ws://x.test/meta', { WebSocket: Refused }), (err) => err.code === 'closed')
})

test('startMedia sends the ticket on /media and rejects on a refused ticket', async () => {
  const { c } = await connect()
  const p = c.startMedia({ type: 'force-call', peer: 'bob', ticket: 'T1', media: '/media' }, {})
  const ws = FakeWS.last
  assert.equal(ws.url, 'ws://example.test:8080/media')
  await tick()
  assert.deepEqual(ws.lastSent(), { type: 'media', ticket: 'T1' })
  let ended = null
  c.addEventListener('media-end', (e) => { ended = e.detail })
  ws.serverClose(1008, 'bad ticket')
  await assert.rejects(p, (err) => err.code === 'media-closed' && err.closeCode === 1008)
  assert.deepEqual(ended, { peer: 'bob', code: 1008, reason: 'bad ticket' })
})

test('startMedia resolves on paired; ended resolves on unpaired', async () => {
  const { c } = await connect()
  const p = c.startMedia({ peer: 'bob', ticket: 'T2' }, {})
  const ws = FakeWS.last
  await tick()
  ws.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  assert.equal(h.peer, 'bob')
  ws.serverClose(1000, 'unpaired')
  assert.deepEqual(await h.ended, { code: 1000, reason: 'unpaired' })
})

test('sniffWebM reads the codecs of a WebM header', () => {
  const enc = (s) => new TextEncoder().encode(s).buffer
  assert.equal(sniffWebM(enc('....V_VP8....A_OPUS..')), 'video/webm; codecs="vp8,opus"')
  assert.equal(sniffWebM(enc('....V_VP9..')), 'video/webm; codecs="vp9"')
  assert.equal(sniffWebM(enc('....A_OPUS..')), 'audio/webm; codecs="opus"')
})

// ---- WebRTC mode ----------------------------------------------------------

// FakePC plays an RTCPeerConnection: it records what the client does with
// it and lets the test raise its events.
class FakePC extends EventTarget {
  static last = null
  constructor (config) {
    super()
    this.config = config
    this.remoteDescription = null
    this.localDescription = null
    this.transceivers = []
    this.candidates = []
    this.closed = false
    this.connectionState = 'new'
    this.iceConnectionState = 'new'
    this.statsReport = new Map()
    FakePC.last = this
  }

  async setRemoteDescription (d) {
    this.remoteDescription = d
    // Like a browser: a transceiver per new m-section of the offer.
    for (const [mid, m] of offerMedia(d.sdp)) {
      if (this.transceivers.some((t) => t.mid === mid)) continue
      const sender = { track: null, streams: null, async replaceTrack (t) { this.track = t }, setStreams (...s) { this.streams = s } }
      this.transceivers.push({ mid, kind: m.kind, direction: 'recvonly', stopped: false, sender })
    }
  }

  getTransceivers () { return this.transceivers }
  async createAnswer () { return { type: 'answer', sdp: `answer-to:${this.remoteDescription.sdp.length}:` + this.transceivers.map((t) => `${t.mid}=${t.direction}/${t.sender.track ? t.sender.track.kind : '-'}`).join(',') } }
  async setLocalDescription (d) { this.localDescription = d }
  async addIceCandidate (c) {
    if (c && c.candidate === 'bad') throw new Error('bad candidate')
    this.candidates.push(c === undefined ? null : c)
  }

  async getStats () { return this.statsReport }
  close () { this.closed = true }
  raiseCandidate (c) { this.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: c })) }
  raiseTrack (track) { this.dispatchEvent(Object.assign(new Event('track'), { track })) }
}

class FakeTrack extends EventTarget {
  constructor (kind) { super(); this.kind = kind; this.enabled = true; this.muted = false }
}
class FakeStream {
  constructor (tracks = []) { this.tracks = [...tracks] }
  getTracks () { return [...this.tracks] }
  getAudioTracks () { return this.tracks.filter((t) => t.kind === 'audio') }
  getVideoTracks () { return this.tracks.filter((t) => t.kind === 'video') }
  addTrack (t) { this.tracks.push(t) }
  removeTrack (t) { this.tracks = this.tracks.filter((x) => x !== t) }
}

const sdpOffer = (...sections) => ['v=0', 'o=- 1 1 IN IP4 0.0.0.0', 's=-', 't=0 0',
  ...sections.map(([kind, mid, dir]) => `m=${kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:${mid}\r\na=${dir}`)].join('\r\n') + '\r\n'

// settle lets the handle's promise chain run.
const settle = async () => { for (let i = 0; i < 20; i++) await tick() }

async function startWebRTC (opts = {}) {
  const { c } = await connect()
  const mic = new FakeTrack('audio')
  const cam = new FakeTrack('video')
  const local = new FakeStream([mic, cam])
  const p = c.startMedia({ peer: 'bob', ticket: 'T3', media: '/media' }, {
    mode: 'webrtc', RTCPeerConnection: FakePC, MediaStream: FakeStream, localStream: local, monitorInterval: 0, ...opts
  })
  const ws = FakeWS.last
  const pc = FakePC.last
  await tick()
  return { c, p, ws, pc, mic, cam, local }
}

test('mediaMode: auto is webrtc when RTCPeerConnection exists, relay otherwise', () => {
  assert.equal(mediaMode({ mode: 'relay', RTCPeerConnection: FakePC }), 'relay')
  assert.equal(mediaMode({ mode: 'webrtc' }), 'webrtc')
  assert.equal(mediaMode({ RTCPeerConnection: FakePC }), 'webrtc')
  assert.equal(mediaMode({}), globalThis.RTCPeerConnection ? 'webrtc' : 'relay')
})

test('webrtc: sends the ticket with mode webrtc and answers the server offer with the local tracks', async () => {
  const { p, ws, pc, mic, cam } = await startWebRTC()
  assert.deepEqual(ws.sent[0], { type: 'media', ticket: 'T3', mode: 'webrtc' })
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly'], ['video', '1', 'recvonly']) })
  await settle()
  const answer = ws.sent.find((m) => m.type === 'answer')
  assert.ok(answer, 'an answer was sent')
  assert.equal(answer.sdp, pc.localDescription.sdp)
  assert.equal(pc.transceivers[0].sender.track, mic)
  assert.equal(pc.transceivers[1].sender.track, cam)
  assert.equal(pc.transceivers[0].direction, 'sendrecv')
  ws.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  assert.equal(h.mode, 'webrtc')
  assert.ok(h.pairedAt > 0)
})

test('webrtc: renegotiation offers are answered and the peer tracks join the remote stream', async () => {
  const { p, ws, pc, mic } = await startWebRTC()
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly'], ['video', '1', 'recvonly']) })
  ws.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  const tracks = []
  h.addEventListener('remote-track', (e) => tracks.push(e.detail.kind))
  // The peer's tracks arrive: the server offers again with sending sections.
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly'], ['video', '1', 'recvonly'], ['audio', '2', 'sendonly'], ['video', '3', 'sendonly']) })
  await settle()
  assert.equal(ws.sent.filter((m) => m.type === 'answer').length, 2)
  assert.equal(pc.transceivers.length, 4)
  assert.equal(pc.transceivers[2].sender.track, null, 'a send-only server section carries nothing of ours')
  assert.equal(pc.transceivers[0].sender.track, mic, 'the first sender is kept')
  pc.raiseTrack(new FakeTrack('audio'))
  pc.raiseTrack(new FakeTrack('video'))
  assert.deepEqual(tracks, ['audio', 'video'])
  assert.equal(h.remoteStream.getTracks().length, 2)
})

test('webrtc: trickle ICE both ways; candidates before the offer wait for it; null ends them', async () => {
  const { ws, pc } = await startWebRTC()
  ws.serverSend({ type: 'candidate', candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 7882 typ host', sdpMid: '0', sdpMLineIndex: 0 } })
  await settle()
  assert.equal(pc.candidates.length, 0, 'no remote description yet: queued')
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly']) })
  ws.serverSend({ type: 'candidate', candidate: null })
  await settle()
  assert.equal(pc.candidates.length, 2)
  assert.equal(pc.candidates[0].sdpMid, '0')
  assert.equal(pc.candidates[1], null)
  pc.raiseCandidate({ toJSON: () => ({ candidate: 'candidate:2 1 udp 2 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 }) })
  pc.raiseCandidate(null)
  const sent = ws.sent.filter((m) => m.type === 'candidate')
  assert.deepEqual(sent, [
    { type: 'candidate', candidate: { candidate: 'candidate:2 1 udp 2 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 } },
    { type: 'candidate', candidate: null }
  ])
})

test('webrtc: a bad remote candidate is an error event, not the end of the call', async () => {
  const { c, ws } = await startWebRTC()
  const errors = []
  c.addEventListener('media-error', (e) => errors.push(e.detail.error.message))
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly']) })
  ws.serverSend({ type: 'candidate', candidate: { candidate: 'bad' } })
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly'], ['video', '1', 'sendonly']) })
  await settle()
  assert.deepEqual(errors, ['bad candidate'])
  assert.equal(ws.sent.filter((m) => m.type === 'answer').length, 2)
})

test('webrtc: mute disables the audio track; camera off detaches the video sender; replaceTrack swaps', async () => {
  const { p, ws, pc, mic, cam } = await startWebRTC()
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly'], ['video', '1', 'recvonly']) })
  ws.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  await settle()
  h.setMuted(true)
  assert.equal(mic.enabled, false)
  h.setMuted(false)
  assert.equal(mic.enabled, true)
  await h.setCamera(false)
  assert.equal(pc.transceivers[1].sender.track, null)
  const cam2 = new FakeTrack('video')
  await h.replaceTrack('video', cam2)
  assert.equal(pc.transceivers[1].sender.track, null, 'still off')
  await h.setCamera(true)
  assert.equal(pc.transceivers[1].sender.track, cam2)
  assert.notEqual(cam2, cam)
})

test('webrtc: camera off before the offer sends no video; ended and pc closed on unpaired', async () => {
  const { p, ws, pc, c } = await startWebRTC({ cameraOff: true, muted: true })
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly'], ['video', '1', 'recvonly']) })
  await settle()
  assert.equal(pc.transceivers[1].sender.track, null)
  assert.equal(pc.transceivers[0].sender.track.enabled, false)
  ws.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  let end = null
  c.addEventListener('media-end', (e) => { end = e.detail })
  ws.serverClose(1000, 'unpaired')
  assert.deepEqual(await h.ended, { code: 1000, reason: 'unpaired' })
  assert.deepEqual(end, { peer: 'bob', code: 1000, reason: 'unpaired' })
  assert.ok(pc.closed)
})

test('webrtc: a refused ticket rejects with media-closed and closes the peer connection', async () => {
  const { p, ws, pc } = await startWebRTC()
  ws.serverClose(1008, 'bad ticket')
  await assert.rejects(p, (err) => err.code === 'media-closed' && err.closeCode === 1008)
  assert.ok(pc.closed)
})

test('webrtc: quality reads rtt, loss, fps and sees a stall and a camera turned off', async () => {
  const { p, ws, pc } = await startWebRTC({ stallMs: 50 })
  ws.serverSend({ type: 'offer', sdp: sdpOffer(['audio', '0', 'recvonly']) })
  ws.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  pc.iceConnectionState = 'connected'
  const set = (video, audio, frames) => {
    pc.statsReport = new Map([
      ['cp', { type: 'candidate-pair', nominated: true, state: 'succeeded', currentRoundTripTime: 0.02 }],
      ['v', { type: 'inbound-rtp', kind: 'video', packetsReceived: video, packetsLost: 0, framesDecoded: frames, framesPerSecond: 30 }],
      ['a', { type: 'inbound-rtp', kind: 'audio', packetsReceived: audio, packetsLost: 0, audioLevel: 0.3 }]
    ])
  }
  set(100, 50, 30)
  let q = await h.quality()
  assert.equal(q.rtt, 0.02)
  assert.equal(q.score, 'good')
  assert.equal(q.unstable, false)
  set(200, 100, 60)
  q = await h.quality()
  assert.equal(q.loss, 0)
  // Video stops, audio flows: the peer's camera is off, not a broken call.
  await new Promise((resolve) => setTimeout(resolve, 60))
  set(200, 150, 60)
  q = await h.quality()
  assert.equal(q.remoteVideoOff, true)
  assert.equal(q.unstable, false)
  // Nothing at all arrives: unstable.
  await new Promise((resolve) => setTimeout(resolve, 60))
  q = await h.quality()
  assert.equal(q.unstable, true)
  assert.equal(q.score, 'poor')
  pc.iceConnectionState = 'disconnected'
  set(300, 200, 90)
  q = await h.quality()
  assert.equal(q.unstable, true, 'ICE disconnected is unstable even with packets counted')
})

test('scoreQuality grades rtt, loss and frame rate', () => {
  const cases = [
    [{}, 'unknown'],
    [{ rtt: 0.05, loss: 0, fps: 30 }, 'good'],
    [{ rtt: 0.2, loss: 0, fps: 30 }, 'fair'],
    [{ rtt: 0.05, loss: 0.05, fps: 30 }, 'fair'],
    [{ rtt: 0.05, loss: 0, fps: 15 }, 'fair'],
    [{ rtt: 0.5, loss: 0, fps: 30 }, 'poor'],
    [{ rtt: 0.05, loss: 0.1 }, 'poor'],
    [{ fps: 5 }, 'poor'],
    [{ lag: 0.2 }, 'good'],
    [{ lag: 2 }, 'poor']
  ]
  for (const [q, want] of cases) assert.equal(scoreQuality(q), want, JSON.stringify(q))
})

test('offerMedia reads kinds, mids and whether the offerer receives', () => {
  const m = offerMedia(sdpOffer(['audio', '0', 'recvonly'], ['video', 'v1', 'sendonly'], ['video', '2', 'sendrecv']))
  assert.deepEqual([...m], [['0', { kind: 'audio', recv: true }], ['v1', { kind: 'video', recv: false }], ['2', { kind: 'video', recv: true }]])
})

test('auto mode falls back to the relay when the server refuses WebRTC (1003), with the same ticket', async () => {
  const { c } = await connect()
  const p = c.startMedia({ peer: 'bob', ticket: 'T4' }, { RTCPeerConnection: FakePC, MediaStream: FakeStream, monitorInterval: 0 })
  const ws1 = FakeWS.last
  await tick()
  assert.deepEqual(ws1.sent[0], { type: 'media', ticket: 'T4', mode: 'webrtc' })
  ws1.serverClose(1003, 'media mode not supported')
  await settle()
  const ws2 = FakeWS.last
  assert.notEqual(ws2, ws1)
  assert.deepEqual(ws2.sent[0], { type: 'media', ticket: 'T4' })
  ws2.serverSend({ type: 'paired', peer: 'bob' })
  const h = await p
  assert.equal(h.mode, 'relay')
})

test('explicit webrtc mode does not fall back', async () => {
  const { p, ws } = await startWebRTC()
  ws.serverClose(1003, 'media mode not supported')
  await assert.rejects(p, (err) => err.code === 'media-closed' && err.closeCode === 1003)
})

test('sessions: loginSession with resume, passwd keeps the fresh session, logout forgets it', async () => {
  const { c, ws } = await connect()
  const p = c.loginSession('alice', 'S1', { resume: 'd7' })
  assert.deepEqual(ws.lastSent(), { type: 'whoami', user: 'alice', session: 'S1', resume: 'd7', tx: 1 })
  ws.serverSend({ type: 'res', for: 'whoami', tx: 1, ok: true, device: 'd7', session: 'S1' })
  const res = await p
  assert.equal(res.resumed, true)
  assert.equal(c.device, 'd7')
  assert.equal(c.session, 'S1')

  const p2 = c.passwd('oldpassword', 'newpassword')
  assert.deepEqual(ws.lastSent(), { type: 'passwd', user: 'alice', password: 'oldpassword', new: 'newpassword', tx: 2 })
  ws.serverSend({ type: 'res', for: 'passwd', tx: 2, ok: true, session: 'S2' })
  await p2
  assert.equal(c.session, 'S2')

  const p3 = c.logout()
  assert.deepEqual(ws.lastSent(), { type: 'logout', user: 'alice', tx: 3 })
  ws.serverSend({ type: 'res', for: 'logout', tx: 3, ok: true })
  await p3
  assert.equal(c.session, null)
})

test('sessions: a password login gets a session; a resume that the server refuses is not resumed', async () => {
  const { c, ws } = await connect()
  const p = c.login('alice', 'sesameopen')
  ws.serverSend({ type: 'res', for: 'whoami', tx: 1, ok: true, device: 'd1', session: 'S9' })
  assert.equal((await p).resumed, false)
  assert.equal(c.session, 'S9')
  const { c: c2, ws: ws2 } = await connect()
  const p2 = c2.loginSession('alice', 'S9', { resume: 'd1' })
  ws2.serverSend({ type: 'res', for: 'whoami', tx: 1, ok: true, device: 'd2', session: 'S9' })
  assert.equal((await p2).resumed, false)
  assert.equal(c2.device, 'd2')
})

test('missed calls: list, clear, and the live event', async () => {
  const { c, ws } = await connect()
  c.user = 'bob'
  const calls = [{ user: 'alice', at: '2026-01-01T10:00:00.000Z', reason: 'timeout' }]
  const p = c.missedCalls()
  assert.deepEqual(ws.lastSent(), { type: 'missed-calls', user: 'bob', tx: 1 })
  ws.serverSend({ type: 'res', for: 'missed-calls', tx: 1, ok: true, calls })
  assert.deepEqual(await p, calls)
  const p2 = c.missedCalls({ clear: true })
  assert.deepEqual(ws.lastSent(), { type: 'missed-calls', user: 'bob', clear: true, tx: 2 })
  ws.serverSend({ type: 'res', for: 'missed-calls', tx: 2, ok: true, calls: [] })
  assert.deepEqual(await p2, [])
  let got = null
  c.addEventListener('missed-call', (e) => { got = e.detail })
  ws.serverSend({ type: 'missed-call', user: 'alice', peer: 'bob', at: calls[0].at, reason: 'offline' })
  assert.equal(got.reason, 'offline')
})

test('close defaults to 1000 (gone for good: no resume window) and takes another code', async () => {
  const { c, ws } = await connect()
  let closed = null
  c.addEventListener('close', (e) => { closed = e.detail })
  c.close()
  assert.equal(closed.code, 1000)
  const { c: c2 } = await connect()
  c2.addEventListener('close', (e) => { closed = e.detail })
  c2.close(4000, 'retry')
  assert.equal(closed.code, 4000)
  void ws
})
