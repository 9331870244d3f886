// Unit tests of umplug.js's message handling with a fake WebSocket:
// node --test web/jstest/
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { UmplugClient, UmplugError, sniffWebM } from '../static/umplug.js'

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
