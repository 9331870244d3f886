/**
 * umplug.js — the browser client of umplug (user-media-plug), protocol v1.
 *
 * An ES module with no dependencies and no build step. The server serves it at
 * `/umplug.js`; import it from there:
 *
 * ```js
 * import { UmplugClient, UmplugError } from '/umplug.js'
 *
 * const client = await UmplugClient.connect()      // ws(s)://<this host>/meta
 * await client.register('alice', 'sesameopen')      // create the account (once)
 * await client.login('alice', 'sesameopen')         // identify this connection
 * await client.addPeers(['bob'])                    // bob must add alice too
 * console.log(await client.peers())                 // [{user:'bob', mutual:true, online:true, status:'online'}]
 *
 * client.addEventListener('status', e => console.log(e.detail.user, e.detail.status))
 * ```
 *
 * ## Calls
 *
 * The server runs the call state machine; the client sends intents and
 * reacts to events. When a call is accepted, both devices receive a
 * `force-call` event carrying a single-use media ticket; hand it to
 * `startMedia` and the two browsers stream to each other through the
 * server's `/media` relay (MediaRecorder → WebSocket → MediaSource).
 *
 * ```js
 * // caller
 * const tx = await client.call('bob')               // resolves when bob's devices ring
 * client.addEventListener('reject', e => console.log('no call:', e.detail.reason)) // 'rejected' | 'timeout' | …
 * // await client.cancel('bob')                     // stop ringing
 *
 * // callee
 * client.addEventListener('call', async e => {
 *   const { user: caller, tx } = e.detail
 *   await client.accept(caller, tx)                  // or client.reject(caller, tx)
 * })
 *
 * // both sides
 * client.addEventListener('force-call', async e => {
 *   const localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true })
 *   const media = await client.startMedia(e.detail, {
 *     localStream,
 *     remoteVideo: document.querySelector('#remote'),
 *   })                                               // resolves once both sides are connected ("paired")
 *   const end = await media.ended                    // {code, reason}: 1000 'unpaired' = the call ended
 *   localStream.getTracks().forEach(t => t.stop())
 * })
 * await client.unpair('bob')                         // hang up (either side)
 * ```
 *
 * ## API
 *
 * - `UmplugClient.connect(url?, options?)` → `Promise<UmplugClient>`. `url`
 *   defaults to `ws(s)://<page host>/meta` (wss on an https page); an
 *   `http(s)://host` URL is turned into the matching `ws(s)://host/meta`.
 *   `options.timeout` (ms, default 20000) bounds every request;
 *   `options.WebSocket` replaces the WebSocket class (tests, Node).
 * - Requests (each resolves with the server's `res` object, or rejects with an
 *   `UmplugError`):
 *   `register(user, password, peers = [])`, `login(user, password)` (alias
 *   `whoami`; resolves `{device, …}` and sets `client.user`/`client.device`),
 *   `addPeers(peers)`, `delPeers(peers)`, `peers()` → `[{user, mutual, online, status}]`,
 *   `peersOnline()` → `['bob', …]`, `setStatus(status)`,
 *   `call(peer)` → the call's `tx`, `accept(peer, tx)`, `reject(peer, tx)`,
 *   `cancel(peer)`, `unpair(peer)`.
 * - `UmplugError`: `.code` (the protocol's error code: `offline`, `busy`,
 *   `not-a-peer`, `auth-failed`, `exists`, `not-found`, `rate-limited`,
 *   `too-many-devices`, `forbidden`, `unavailable`, `bad-request`, … plus the
 *   client-side `closed` and `timeout`), `.reason` (human-readable text),
 *   `.missing` (for `not-found`: the unknown peer names), `.for` (request type).
 * - Events (each a `CustomEvent` whose `detail` is the server's message):
 *   `status`, `call`, `accept`, `reject`, `cancel`, `unpair`, `force-call`;
 *   `message` for every server event; `close` (`detail: {code, reason}`) when
 *   the /meta connection ends; `media-end` (`detail: {peer, code, reason}`).
 * - `startMedia(forceCall, {localStream, remoteVideo, timeslice = 100,
 *   mimeType, videoBitsPerSecond = 1e6, audioBitsPerSecond = 64e3,
 *   keyFrameInterval = 1000 (ms), maxLag = 1})` →
 *   `Promise<MediaHandle>`, resolved when the server says `paired`; rejected
 *   with an `UmplugError` (`code: 'media-closed'`) if the media connection
 *   closes first (for example a bad or expired ticket: close 1008).
 *   `localStream` may be null (receive only); `remoteVideo` may be null (send
 *   only). The handle has `stop()`, `ended` (a promise of `{code, reason}`;
 *   `1000 'unpaired'` means the call ended normally), `peer`, `startedAt`
 *   (Date.now() when local recording started) and `stats()` →
 *   `{bytesSent, bytesReceived, chunksSent, chunksReceived, appends, seeks,
 *   gapJumps, lag}` where `lag`
 *   is seconds of remote media buffered ahead of what is shown.
 *   `stop()` never stops `localStream`'s tracks: the caller owns them.
 * - `close()` ends the connection (the server then ends any call of this
 *   device as `disconnected`).
 *
 * ## Media transport
 *
 * The sender records `localStream` with MediaRecorder
 * (`video/webm;codecs=vp8,opus`, one chunk every `timeslice` ms) and sends
 * each chunk as one binary frame; recording starts only on `paired` so the
 * receiver's first frame holds the WebM header. The receiver appends frames
 * to a MediaSource SourceBuffer (queued while updating; 'segments' mode,
 * the recorder's timestamps), trims what was played, and keeps the video
 * near the live edge: it jumps over holes in the media (a busy sender's
 * encoder skips frames, and a video element stalls at every hole); more
 * than `maxLag` seconds behind, it seeks forward; a little behind, it plays
 * at 1.1× until it has caught up. A keyframe every second keeps those seeks
 * cheap.
 *
 * Browsers allow the camera only in a secure context: https, or http on
 * localhost.
 *
 * @module umplug
 */

/** The default time a request may wait for its response, in milliseconds. */
const DEFAULT_TIMEOUT = 20000

/**
 * UmplugError is how every failed request rejects: the server's stable error
 * code and its human-readable reason.
 */
export class UmplugError extends Error {
  /**
   * @param {string} code a protocol error code (or 'closed', 'timeout', 'media-closed')
   * @param {string} [reason] human-readable text
   * @param {{missing?: string[], for?: string, closeCode?: number}} [extra]
   */
  constructor (code, reason, extra = {}) {
    super(reason ? `${code}: ${reason}` : code)
    this.name = 'UmplugError'
    this.code = code
    this.reason = reason || ''
    this.missing = extra.missing || []
    this.for = extra.for || ''
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode
  }
}

/** Server event types that are dispatched under their own name. */
const EVENT_TYPES = new Set(['status', 'call', 'accept', 'reject', 'cancel', 'unpair', 'force-call'])

/**
 * metaURL works out the /meta WebSocket URL from what the caller gave.
 * @param {string|URL|undefined} url
 */
function metaURL (url) {
  const loc = globalThis.location
  if (url === undefined || url === null || url === '') {
    if (!loc) throw new UmplugError('bad-request', 'no url given and no page location to default to')
    return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/meta`
  }
  const u = new URL(String(url), loc ? loc.href : undefined)
  if (u.protocol === 'http:' || u.protocol === 'https:') {
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:'
    if (u.pathname === '/' || u.pathname === '') u.pathname = '/meta'
  }
  return u.href
}

/**
 * UmplugClient is one device's connection to the metadata server (/meta).
 * Create it with UmplugClient.connect.
 */
export class UmplugClient extends EventTarget {
  /**
   * Opens a /meta connection and resolves when it is open.
   * @param {string|URL} [url] ws(s):// or http(s):// URL; default: this page's host, path /meta
   * @param {{timeout?: number, WebSocket?: typeof WebSocket}} [options]
   * @returns {Promise<UmplugClient>}
   */
  static connect (url, options = {}) {
    const href = metaURL(url)
    const WS = options.WebSocket || globalThis.WebSocket
    return new Promise((resolve, reject) => {
      let ws
      try {
        ws = new WS(href)
      } catch (err) {
        reject(new UmplugError('closed', `cannot connect to ${href}: ${err.message}`))
        return
      }
      const onOpen = () => {
        ws.removeEventListener('close', onEarlyClose)
        resolve(new UmplugClient(ws, href, options))
      }
      const onEarlyClose = (ev) => {
        ws.removeEventListener('open', onOpen)
        reject(new UmplugError('closed', `cannot connect to ${href} (close ${ev.code}${ev.reason ? ' ' + ev.reason : ''})`, { closeCode: ev.code }))
      }
      ws.addEventListener('open', onOpen, { once: true })
      ws.addEventListener('close', onEarlyClose, { once: true })
    })
  }

  /**
   * Use UmplugClient.connect; the constructor takes an already open socket.
   * @param {WebSocket} ws
   * @param {string} url
   * @param {{timeout?: number, WebSocket?: typeof WebSocket}} [options]
   */
  constructor (ws, url, options = {}) {
    super()
    /** The /meta URL this client is connected to. */
    this.url = url
    /** The identified user (after login), else null. */
    this.user = null
    /** The server-assigned device id (after login), else null. */
    this.device = null
    /** True once the /meta connection has closed. */
    this.closed = false
    this._ws = ws
    this._WS = options.WebSocket || globalThis.WebSocket
    this._timeout = options.timeout || DEFAULT_TIMEOUT
    this._tx = 0
    /** @type {Map<string, Array<{resolve: Function, reject: Function, timer: any}>>} pending requests by "type:tx" */
    this._pending = new Map()
    ws.addEventListener('message', (ev) => this._onMessage(ev))
    ws.addEventListener('close', (ev) => this._onClose(ev))
  }

  /** Ends the connection; pending requests reject with code 'closed'. */
  close () {
    if (this._ws.readyState <= 1) this._ws.close(1000, 'bye')
  }

  // ---- requests ----------------------------------------------------------

  /**
   * Sends one client message and resolves with its `res` (ok: true), or
   * rejects with an UmplugError. A tx is assigned unless fields.tx is given.
   * Responses are matched by (type, tx): accept/reject reuse the call's tx,
   * which may collide with a number of this connection's own counter.
   * @param {string} type
   * @param {object} [fields]
   * @returns {Promise<object>}
   */
  request (type, fields = {}) {
    const tx = fields.tx !== undefined ? fields.tx : ++this._tx
    const msg = { ...fields, type, tx }
    return new Promise((resolve, reject) => {
      if (this.closed || this._ws.readyState !== 1) {
        reject(new UmplugError('closed', 'not connected to the server', { for: type }))
        return
      }
      const key = `${type}:${tx}`
      const entry = { resolve, reject, timer: null }
      entry.timer = setTimeout(() => {
        this._take(key, entry)
        reject(new UmplugError('timeout', `no answer to ${type} within ${this._timeout} ms`, { for: type }))
      }, this._timeout)
      if (!this._pending.has(key)) this._pending.set(key, [])
      this._pending.get(key).push(entry)
      try {
        this._ws.send(JSON.stringify(msg))
      } catch (err) {
        this._take(key, entry)
        clearTimeout(entry.timer)
        reject(new UmplugError('closed', `send failed: ${err.message}`, { for: type }))
      }
    })
  }

  /** _take removes one pending entry (or the oldest one for key). */
  _take (key, entry) {
    const q = this._pending.get(key)
    if (!q) return undefined
    const i = entry ? q.indexOf(entry) : 0
    if (i < 0) return undefined
    const [e] = q.splice(i, 1)
    if (q.length === 0) this._pending.delete(key)
    return e
  }

  /**
   * Creates an account (it does not log this connection in).
   * @param {string} user 1–64 of A–Z a–z 0–9 . _ - @
   * @param {string} password 8–1024 bytes
   * @param {string[]} [peers] initial peers; each must be registered
   */
  register (user, password, peers = []) {
    return this.request('reg-user', { user, password, peers })
  }

  /**
   * Identifies (logs in) this connection. Resolves with the res, whose
   * `device` is this connection's device id.
   * @param {string} user
   * @param {string} password
   */
  async login (user, password) {
    const res = await this.request('whoami', { user, password })
    this.user = user
    this.device = res.device || null
    return res
  }

  /** Alias of login, named like the protocol message. */
  whoami (user, password) { return this.login(user, password) }

  /** Adds peers (contacts); unknown names reject with code 'not-found' and `.missing`. @param {string[]} peers */
  addPeers (peers) { return this.request('add-peers', { user: this.user, peers }) }

  /** Removes peers; absent ones are ignored. @param {string[]} peers */
  delPeers (peers) { return this.request('del-peers', { user: this.user, peers }) }

  /**
   * Lists this user's peers. `online` and `status` are only revealed for
   * mutual peers.
   * @returns {Promise<Array<{user: string, mutual: boolean, online: boolean, status: string|null}>>}
   */
  async peers () {
    const res = await this.request('peers', { user: this.user })
    return res.peers || []
  }

  /** Lists the names of the online mutual peers. @returns {Promise<string[]>} */
  async peersOnline () {
    const res = await this.request('peers-online', { user: this.user })
    return res.peers || []
  }

  /** Sets this user's status text (1–64 characters); mutual peers get a status event. @param {string} status */
  setStatus (status) { return this.request('status', { user: this.user, status }) }

  /**
   * Rings a mutual peer. Resolves with the call's tx once the peer's devices
   * ring; the outcome arrives as an accept (then force-call) or reject event.
   * @param {string} peer
   * @returns {Promise<number>}
   */
  async call (peer) {
    const tx = ++this._tx
    await this.request('call', { user: this.user, peer, tx })
    return tx
  }

  /** Takes a ringing call. @param {string} peer the caller @param {number} tx the call event's tx */
  accept (peer, tx) { return this.request('accept', { user: this.user, peer, tx }) }

  /** Declines a ringing call. @param {string} peer the caller @param {number} tx the call event's tx */
  reject (peer, tx) { return this.request('reject', { user: this.user, peer, tx }) }

  /** Stops ringing a peer before they answer. @param {string} peer */
  cancel (peer) { return this.request('cancel', { user: this.user, peer }) }

  /** Hangs up the active call with peer. @param {string} peer */
  unpair (peer) { return this.request('unpair', { user: this.user, peer }) }

  // ---- incoming ----------------------------------------------------------

  _onMessage (ev) {
    if (typeof ev.data !== 'string') return // /meta is text only
    let msg
    try {
      msg = JSON.parse(ev.data)
    } catch {
      return
    }
    if (!msg || typeof msg !== 'object') return
    if (msg.type === 'res') {
      const key = `${msg.for}:${msg.tx}`
      const entry = this._take(key)
      if (!entry) {
        // An answer to nothing we sent (bad-json has tx null): surface it.
        this.dispatchEvent(new CustomEvent('unmatched', { detail: msg }))
        return
      }
      clearTimeout(entry.timer)
      if (msg.ok) entry.resolve(msg)
      else entry.reject(new UmplugError(msg.error || 'unknown', msg.reason, { missing: msg.missing, for: msg.for }))
      return
    }
    if (EVENT_TYPES.has(msg.type)) this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }))
    this.dispatchEvent(new CustomEvent('message', { detail: msg }))
  }

  _onClose (ev) {
    if (this.closed) return
    this.closed = true
    for (const [key, q] of this._pending) {
      for (const e of q) {
        clearTimeout(e.timer)
        e.reject(new UmplugError('closed', `connection closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`, { for: key.split(':')[0], closeCode: ev.code }))
      }
    }
    this._pending.clear()
    this.dispatchEvent(new CustomEvent('close', { detail: { code: ev.code, reason: ev.reason } }))
  }

  // ---- media -------------------------------------------------------------

  /**
   * Connects this device's media for a force-call: opens /media, presents the
   * ticket, and once paired streams localStream to the peer and plays the
   * peer's stream in remoteVideo. Resolves with a MediaHandle when paired.
   * @param {{peer: string, ticket: string, media?: string}} forceCall the force-call event's detail
   * @param {{localStream?: MediaStream|null, remoteVideo?: HTMLVideoElement|null, timeslice?: number,
   *          mimeType?: string, videoBitsPerSecond?: number, audioBitsPerSecond?: number, maxLag?: number}} [opts]
   * @returns {Promise<MediaHandle>}
   */
  startMedia (forceCall, opts = {}) {
    const fc = forceCall && forceCall.detail ? forceCall.detail : forceCall // accept the event itself too
    if (!fc || !fc.ticket) return Promise.reject(new UmplugError('bad-request', 'startMedia needs a force-call with a ticket'))
    const url = new URL(fc.media || '/media', this.url).href
    const handle = new MediaHandle(this, fc.peer, url, opts)
    return handle._start(fc.ticket)
  }
}

/**
 * MediaHandle is one device's side of a media call. Get it from
 * UmplugClient.startMedia.
 */
export class MediaHandle {
  constructor (client, peer, url, opts) {
    /** The peer this media connection is paired with. */
    this.peer = peer
    /** Date.now() when local recording started (null before, or when receive only). */
    this.startedAt = null
    this._client = client
    this._url = url
    this._opts = opts
    this._local = opts.localStream || null
    this._video = opts.remoteVideo || null
    this._timeslice = opts.timeslice || 100
    this._maxLag = opts.maxLag || 1
    this._recorder = null
    this._ms = null // MediaSource
    this._sb = null // SourceBuffer
    this._objectURL = null
    this._queue = [] // ArrayBuffers waiting for the SourceBuffer
    this._stopped = false
    this._stats = { bytesSent: 0, bytesReceived: 0, chunksSent: 0, chunksReceived: 0 }
    /** @type {Promise<{code: number, reason: string}>} resolves when the media connection has closed */
    this.ended = new Promise((resolve) => { this._resolveEnded = resolve })
  }

  /** Reports what went through so far and how far behind the remote video plays. */
  stats () {
    return { ...this._stats, lag: this._lag() }
  }

  /**
   * Ends this media connection: stops recording, closes the WebSocket and
   * detaches the remote video. The local stream's tracks are left running.
   * Hanging up the call itself is client.unpair(peer).
   */
  stop () {
    this._teardown()
    if (this._ws && this._ws.readyState <= 1) this._ws.close(1000, 'stop')
  }

  _start (ticket) {
    return new Promise((resolve, reject) => {
      let paired = false
      const ws = new this._client._WS(this._url)
      this._ws = ws
      ws.binaryType = 'arraybuffer'
      ws.addEventListener('open', () => ws.send(JSON.stringify({ type: 'media', ticket })))
      ws.addEventListener('message', (ev) => {
        if (typeof ev.data === 'string') {
          let msg
          try { msg = JSON.parse(ev.data) } catch { return }
          if (msg && msg.type === 'paired' && !paired) {
            paired = true
            this._startRecording()
            resolve(this)
          }
          return
        }
        this._stats.bytesReceived += ev.data.byteLength
        this._stats.chunksReceived++
        this._receive(ev.data)
      })
      ws.addEventListener('close', (ev) => {
        this._teardown()
        const end = { code: ev.code, reason: ev.reason }
        this._resolveEnded(end)
        this._client.dispatchEvent(new CustomEvent('media-end', { detail: { peer: this.peer, ...end } }))
        if (!paired) {
          reject(new UmplugError('media-closed', ev.code === 1008
            ? 'the media ticket was refused (expired or already used)'
            : `the media connection closed before the peer joined (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`, { closeCode: ev.code }))
        }
      })
      this._setupPlayback()
    })
  }

  // ---- sending -----------------------------------------------------------

  _startRecording () {
    if (!this._local || this._stopped) return
    const hasAudio = this._local.getAudioTracks().length > 0
    const hasVideo = this._local.getVideoTracks().length > 0
    let mimeType = this._opts.mimeType
    if (!mimeType) {
      const codecs = [hasVideo && 'vp8', hasAudio && 'opus'].filter(Boolean).join(',')
      mimeType = `${hasVideo ? 'video' : 'audio'}/webm;codecs=${codecs}`
    }
    const rec = new MediaRecorder(this._local, {
      mimeType,
      videoBitsPerSecond: this._opts.videoBitsPerSecond || 1000000,
      audioBitsPerSecond: this._opts.audioBitsPerSecond || 64000,
      // A keyframe every second: the receiver can jump to the live edge (and
      // drop what it played) without decoding from the start of the call.
      videoKeyFrameIntervalDuration: this._opts.keyFrameInterval || 1000
    })
    this._recorder = rec
    rec.addEventListener('dataavailable', (ev) => {
      if (!ev.data || ev.data.size === 0 || this._stopped || this._ws.readyState !== 1) return
      // A Blob is sent as one binary frame, in order, without copying it
      // into script memory first.
      this._ws.send(ev.data)
      this._stats.bytesSent += ev.data.size
      this._stats.chunksSent++
    })
    rec.start(this._timeslice)
    this.startedAt = Date.now()
  }

  // ---- receiving ---------------------------------------------------------

  _setupPlayback () {
    const video = this._video
    if (!video) return
    const MS = globalThis.MediaSource || globalThis.ManagedMediaSource
    if (!MS) return
    this._ms = new MS()
    this._objectURL = URL.createObjectURL(this._ms)
    video.disableRemotePlayback = true
    video.playsInline = true
    video.autoplay = true
    video.src = this._objectURL
    this._ms.addEventListener('sourceopen', () => this._pump(), { once: true })
    this._timer = setInterval(() => this._keepLive(), 200)
  }

  _receive (buf) {
    if (!this._ms || this._stopped) return
    this._queue.push(buf)
    this._pump()
  }

  /** _pump appends queued frames one at a time, creating the SourceBuffer from the first frame's codecs. */
  _pump () {
    const ms = this._ms
    if (!ms || ms.readyState !== 'open' || this._stopped) return
    if (!this._sb) {
      if (this._queue.length === 0) return
      const type = sniffWebM(this._queue[0])
      try {
        this._sb = ms.addSourceBuffer(type)
      } catch (err) {
        this._client.dispatchEvent(new CustomEvent('media-error', { detail: { peer: this.peer, error: err } }))
        this._queue = []
        return
      }
      // 'segments' (the WebM default): the recorder's own timestamps are
      // continuous from 0; 'sequence' mode stalls muxed audio+video here.
      this._sb.mode = 'segments'
      this._sb.addEventListener('updateend', () => { this._afterAppend(); this._pump() })
      this._sb.addEventListener('error', () => {
        this._client.dispatchEvent(new CustomEvent('media-error', { detail: { peer: this.peer, error: new Error('SourceBuffer error') } }))
      })
    }
    const sb = this._sb
    if (sb.updating || this._queue.length === 0) return
    // Merge what waited into one append: fewer appends, less overhead.
    let buf = this._queue.length === 1 ? this._queue[0] : concat(this._queue)
    this._queue = []
    try {
      sb.appendBuffer(buf)
      this._stats.appends = (this._stats.appends || 0) + 1
    } catch (err) {
      if (err && err.name === 'QuotaExceededError') {
        this._queue.unshift(buf)
        this._trim(true)
      } else {
        this._client.dispatchEvent(new CustomEvent('media-error', { detail: { peer: this.peer, error: err } }))
      }
      buf = null
    }
  }

  _afterAppend () {
    this._keepLive()
    this._trim(false)
    const v = this._video
    if (v && v.paused && v.readyState >= 2) {
      const p = v.play()
      if (p && p.catch) {
        p.catch((err) => {
          this._client.dispatchEvent(new CustomEvent('media-autoplay-blocked', { detail: { peer: this.peer, error: err } }))
        })
      }
    }
  }

  /** _lag is how many seconds of received media wait ahead of the playhead. */
  _lag () {
    const v = this._video
    if (!v || !v.buffered || v.buffered.length === 0) return 0
    return v.buffered.end(v.buffered.length - 1) - v.currentTime
  }

  /**
   * _keepLive holds the playhead near the live edge. A live recording has
   * holes (the sender's encoder skips frames when its CPU is busy) and the
   * element stalls at every hole, so: inside a hole or stuck at the end of a
   * range with newer media after it, jump to the newer media; more than
   * maxLag behind the newest media, seek forward; a little behind, play at
   * 1.1x until caught up. It runs after every append and on a timer (a
   * stalled element sends no timeupdate).
   */
  _keepLive () {
    const v = this._video
    if (!v || this._stopped || !v.buffered || v.buffered.length === 0 || v.seeking) return
    const b = v.buffered
    const last = b.length - 1
    const end = b.end(last)
    const t = v.currentTime
    const lag = end - t
    if (lag > this._maxLag) {
      v.currentTime = Math.max(b.start(last), end - 0.3)
      v.playbackRate = 1
      this._stats.seeks = (this._stats.seeks || 0) + 1
      return
    }
    // Which range holds the playhead, and is there newer media after it?
    let i = 0
    while (i < b.length && b.end(i) < t + 0.08) i++ // first range ending after the playhead (with a little slack)
    if (i < b.length && b.start(i) > t + 0.01) {
      v.currentTime = b.start(i) + 0.01 // in a hole, or at the end of a range: jump over
      this._stats.gapJumps = (this._stats.gapJumps || 0) + 1
      return
    }
    if (lag > 0.5) {
      if (v.playbackRate !== 1.1) v.playbackRate = 1.1
    } else if (lag < 0.25 && v.playbackRate !== 1) {
      v.playbackRate = 1
    }
  }

  /** _trim drops played media so a long call does not fill the SourceBuffer's quota. */
  _trim (force) {
    const sb = this._sb
    const v = this._video
    if (!sb || !v || sb.updating || !v.buffered || v.buffered.length === 0) return
    const start = v.buffered.start(0)
    const keep = force ? 1 : 10
    const until = v.currentTime - keep
    if (until - start > (force ? 0 : 10)) {
      try { sb.remove(start, until) } catch { /* busy: next time */ }
    }
  }

  _teardown () {
    if (this._stopped) return
    this._stopped = true
    clearInterval(this._timer)
    if (this._recorder && this._recorder.state !== 'inactive') {
      try { this._recorder.stop() } catch { /* already stopped */ }
    }
    const v = this._video
    if (v) {
      if (this._objectURL && v.src === this._objectURL) {
        v.removeAttribute('src')
        v.load()
      }
    }
    if (this._ms && this._ms.readyState === 'open') {
      try { this._ms.endOfStream() } catch { /* closing anyway */ }
    }
    if (this._objectURL) URL.revokeObjectURL(this._objectURL)
    this._queue = []
  }
}

/**
 * sniffWebM reads the codec ids in a WebM header so that the SourceBuffer
 * matches what the peer records (audio-only or video-only senders too).
 * @param {ArrayBuffer} buf the first media frame
 */
export function sniffWebM (buf) {
  const bytes = new Uint8Array(buf, 0, Math.min(buf.byteLength, 65536))
  let text = ''
  for (let i = 0; i < bytes.length; i++) text += bytes[i] >= 32 && bytes[i] < 127 ? String.fromCharCode(bytes[i]) : ' '
  const codecs = []
  if (text.includes('V_VP8')) codecs.push('vp8')
  else if (text.includes('V_VP9')) codecs.push('vp9')
  else if (text.includes('V_AV1')) codecs.push('av01.0.04M.08')
  const video = codecs.length > 0
  if (text.includes('A_OPUS')) codecs.push('opus')
  else if (text.includes('A_VORBIS')) codecs.push('vorbis')
  if (codecs.length === 0) return 'video/webm; codecs="vp8,opus"'
  return `${video ? 'video' : 'audio'}/webm; codecs="${codecs.join(',')}"`
}

function concat (bufs) {
  let n = 0
  for (const b of bufs) n += b.byteLength
  const out = new Uint8Array(n)
  let off = 0
  for (const b of bufs) { out.set(new Uint8Array(b), off); off += b.byteLength }
  return out.buffer
}
