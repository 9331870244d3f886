/**
 * umplug.js — the browser client of umplug (user-media-plug), protocol v2
 * (sections 1–7 and the WebRTC media of section 10).
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
 * server: with WebRTC (one RTCPeerConnection to the server, which forwards
 * the RTP), or where there is no WebRTC through the `/media` relay
 * (MediaRecorder → WebSocket → MediaSource).
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
 *   `status`, `call`, `accept`, `reject`, `cancel`, `unpair`, `force-call`,
 *   `reconnecting`, `resumed`, `missed-call`; `message` for every server
 *   event; `close` (`detail: {code, reason}`) when the /meta connection
 *   ends; `media-end` (`detail: {peer, code, reason}`); `media-state`
 *   (WebRTC: `{peer, connectionState, iceConnectionState}`); `media-error`.
 * - `startMedia(forceCall, {mode = 'auto', localStream, remoteVideo, muted,
 *   cameraOff, stallMs = 2000, monitorInterval = 1000, rtcConfig, …relay
 *   options})` → `Promise<WebRTCMediaHandle|MediaHandle>`, resolved when the
 *   server says `paired`; rejected with an `UmplugError` (`code:
 *   'media-closed'`) if the media connection closes first (for example a
 *   bad or expired ticket: close 1008). `mode`: 'webrtc', 'relay', or 'auto'
 *   (WebRTC when the browser has RTCPeerConnection; the relay when it has
 *   not, or when the server refuses WebRTC with close 1003). Relay options:
 *   `timeslice = 100, mimeType, videoBitsPerSecond = 1e6,
 *   audioBitsPerSecond = 64e3, keyFrameInterval = 1000 (ms), maxLag = 1`.
 *   `localStream` may be null (receive only); `remoteVideo` may be null
 *   (send only).
 * - Both handles: `mode`, `peer`, `startedAt`, `pairedAt`, `stop()`,
 *   `ended` (a promise of `{code, reason}`; `1000 'unpaired'` means the call
 *   ended normally), `setMuted(bool)`, `setCamera(bool)`,
 *   `replaceTrack(kind, track)` (WebRTC only), `quality()` → `{mode, rtt,
 *   loss, fps, unstable, remoteVideoOff, score}` and `stats()`; they are
 *   EventTargets (`paired`, `quality` every second; WebRTC also
 *   `remote-track`, `remote-mute`, `remote-unmute`, `state`, `error`).
 *   The WebRTC handle also has `pc`, `remoteStream` and `getStats()`.
 *   `stop()` never stops `localStream`'s tracks: the caller owns them.
 * - `close()` ends the connection (the server then ends any call of this
 *   device as `disconnected`).
 *
 * ## Media transports
 *
 * WebRTC (PROTOCOL.md section 10): the device sends `{type: 'media',
 * ticket, mode: 'webrtc'}` on /media; the server offers (and offers again
 * when the peer's tracks arrive), the device answers, ICE candidates
 * trickle both ways as `{type: 'candidate', candidate}` (null: the end).
 * The local tracks ride on the transceivers the offer opens for receiving.
 * Camera off detaches the video sender (the peer's video stops, it does not
 * turn black); mute disables the audio track (silence is sent).
 *
 * The relay (section 6): the sender records `localStream` with MediaRecorder
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
const EVENT_TYPES = new Set(['status', 'call', 'accept', 'reject', 'cancel', 'unpair', 'force-call', 'reconnecting', 'resumed', 'missed-call'])

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
    /** The session from the last login (null before, or after logout). */
    this.session = null
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

  /**
   * Ends the connection; pending requests reject with code 'closed'. Close
   * code 1000 (the default) tells the server this device is gone for good:
   * it keeps no resume window for it (PROTOCOL.md §8). A page that unloads
   * closes with 1001 by itself, which leaves the window open.
   * @param {number} [code] 1000, or 3000–4999
   * @param {string} [reason]
   */
  close (code = 1000, reason = 'bye') {
    if (this._ws.readyState <= 1) this._ws.close(code, reason)
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
  async login (user, password, opts = {}) {
    return this._identify({ user, password }, opts)
  }

  /** Alias of login, named like the protocol message. */
  whoami (user, password, opts) { return this.login(user, password, opts) }

  /**
   * Identifies this connection with a session (PROTOCOL.md §8) instead of
   * the password: no password hashing on the server. An unknown, expired or
   * revoked session rejects with code 'auth-failed', like a wrong password.
   * `opts.resume`: the device id this device had before; within the
   * server's grace window the connection takes that device's place (same
   * device id, presence, and call: a fresh force-call follows). The result's
   * `resumed` is true when it did.
   * @param {string} user
   * @param {string} session
   * @param {{resume?: string}} [opts]
   */
  loginSession (user, session, opts = {}) {
    return this._identify({ user, session }, opts)
  }

  async _identify (fields, opts) {
    const msg = { ...fields }
    if (opts && opts.resume) msg.resume = opts.resume
    const res = await this.request('whoami', msg)
    this.user = fields.user
    this.device = res.device || null
    /** The session the server gave (keep it to log in again without the password). */
    this.session = res.session || fields.session || null
    res.resumed = !!(opts && opts.resume && res.device === opts.resume)
    return res
  }

  /**
   * Changes the password (PROTOCOL.md §8). Every session of the user is
   * revoked and their other connections closed (1008 'password changed');
   * this connection stays identified and gets a fresh session
   * (`client.session`, also in the result).
   * @param {string} password the current password
   * @param {string} newPassword 8–1024 bytes
   */
  async passwd (password, newPassword) {
    const res = await this.request('passwd', { user: this.user, password, new: newPassword })
    if (res.session) this.session = res.session
    return res
  }

  /**
   * Revokes this connection's session (the connection stays identified
   * until it closes: call close() after it to be gone).
   */
  async logout () {
    const res = await this.request('logout', { user: this.user })
    this.session = null
    return res
  }

  /**
   * Lists the calls this user missed, newest first (PROTOCOL.md §9):
   * `[{user: caller, at: RFC 3339, reason}]`. With `clear: true` the list
   * is emptied after it is returned.
   * @param {{clear?: boolean}} [opts]
   * @returns {Promise<Array<{user: string, at: string, reason: string}>>}
   */
  async missedCalls (opts = {}) {
    const fields = { user: this.user }
    if (opts.clear) fields.clear = true
    const res = await this.request('missed-calls', fields)
    return res.calls || []
  }

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
    const mode = mediaMode(opts)
    if (mode === 'relay') return new MediaHandle(this, fc.peer, url, opts)._start(fc.ticket)
    const started = new WebRTCMediaHandle(this, fc.peer, url, opts)._start(fc.ticket)
    if (opts.mode === 'webrtc') return started
    // Auto: a server without WebRTC refuses the mode with close 1003 and
    // keeps the ticket valid; the relay takes over with the same ticket.
    return started.catch((err) => {
      if (err instanceof UmplugError && err.closeCode === 1003) return new MediaHandle(this, fc.peer, url, opts)._start(fc.ticket)
      throw err
    })
  }
}

/**
 * mediaMode picks the media transport for startMedia: opts.mode 'webrtc' or
 * 'relay' as asked; 'auto' (the default) is WebRTC when this browser has
 * RTCPeerConnection, else the relay.
 * @param {{mode?: string, RTCPeerConnection?: any}} opts
 * @returns {'webrtc'|'relay'}
 */
export function mediaMode (opts = {}) {
  const m = opts.mode || 'auto'
  if (m === 'webrtc' || m === 'relay') return m
  return (opts.RTCPeerConnection || globalThis.RTCPeerConnection) ? 'webrtc' : 'relay'
}

/**
 * MediaHandle is one device's side of a media call. Get it from
 * UmplugClient.startMedia.
 */
export class MediaHandle extends EventTarget {
  constructor (client, peer, url, opts) {
    super()
    /** The transport: 'relay' (MediaRecorder chunks over /media into MediaSource). */
    this.mode = 'relay'
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
    /** True while the microphone is muted; see setMuted. */
    this.muted = !!opts.muted
    /** True while the camera is off; see setCamera. */
    this.cameraOff = !!opts.cameraOff
    /** @type {Promise<{code: number, reason: string}>} resolves when the media connection has closed */
    this.ended = new Promise((resolve) => { this._resolveEnded = resolve })
  }

  /** Reports what went through so far and how far behind the remote video plays. */
  stats () {
    return { ...this._stats, lag: this._lag() }
  }

  /**
   * Mutes or unmutes the microphone: the local audio tracks are disabled,
   * so the recording carries silence. (The tracks are the caller's: this
   * sets their `enabled`.)
   * @param {boolean} muted
   */
  setMuted (muted) {
    this.muted = !!muted
    if (this._local) this._local.getAudioTracks().forEach((t) => { t.enabled = !muted })
  }

  /**
   * Turns the camera off or on. The relay records a disabled track as black
   * frames; the receiving app shows its placeholder when it sees them.
   * @param {boolean} on
   */
  async setCamera (on) {
    this.cameraOff = !on
    if (this._local) this._local.getVideoTracks().forEach((t) => { t.enabled = !!on })
  }

  /** The relay records one stream for the whole call: switching devices needs WebRTC. */
  async replaceTrack (kind) {
    throw new UmplugError('unsupported', `the relay mode cannot switch the ${kind} device during a call`)
  }

  /**
   * quality() summarises how the call is going, in the same shape as the
   * WebRTC mode's: here from how far behind the live edge the video plays
   * and how many frames it showed in the last second.
   * @returns {Promise<Quality>}
   */
  async quality () {
    const v = this._video
    const now = Date.now()
    const q = { mode: 'relay', rtt: null, loss: null, fps: null, lag: this._lag(), unstable: false, remoteVideoOff: false, score: 'unknown' }
    if (v && v.getVideoPlaybackQuality) {
      const frames = v.getVideoPlaybackQuality().totalVideoFrames
      const prev = this._qprev
      if (prev) q.fps = ((frames - prev.frames) * 1000) / Math.max(1, now - prev.at)
      const t = v.currentTime
      const moving = !prev || t !== prev.time
      const lastMove = moving ? now : prev.lastMove
      q.unstable = this._paired && v.readyState > 0 && now - lastMove >= (this._opts.stallMs || 2000)
      this._qprev = { frames, at: now, time: t, lastMove }
    }
    q.score = q.unstable ? 'poor' : scoreQuality({ rtt: null, loss: null, fps: q.fps, lag: q.lag })
    return q
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
          if (msg && msg.type === 'paired' && paired) {
            // Paired again: the peer's media reconnected (a resume,
            // PROTOCOL.md §8). Its new connection needs a stream that starts
            // with a WebM header: start recording afresh.
            this._restartRecording()
            return
          }
          if (msg && msg.type === 'paired' && !paired) {
            paired = true
            this._paired = true
            this.pairedAt = Date.now()
            this._startRecording()
            startMonitor(this)
            this.dispatchEvent(new CustomEvent('paired', { detail: { peer: this.peer } }))
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
      if (rec !== this._recorder) return // a replaced recorder's last chunk: not a stream start
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

  /**
   * restartStream starts the recording afresh, so that what the peer
   * receives next begins with a WebM header. Call it when the peer's media
   * reconnected (its `resumed` event): its new connection cannot decode the
   * middle of the old stream.
   */
  restartStream () { this._restartRecording() }

  /** _restartRecording starts a new recording (a new WebM stream with its header). */
  _restartRecording () {
    const old = this._recorder
    if (!old || this._stopped) return
    this._recorder = null
    try { old.stop() } catch { /* stopped */ }
    this._stats.restarts = (this._stats.restarts || 0) + 1
    this._startRecording()
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
    // Chrome's recorder sends the very first byte of a stream (0x1A) as a
    // chunk of its own: frames under 4 bytes wait for the next one, so that
    // a stream's start is always seen whole (isWebMStart).
    if (this._carry) {
      buf = concat([this._carry, buf])
      this._carry = null
    }
    if (buf.byteLength < 4) {
      this._carry = buf
      return
    }
    this._queue.push(buf)
    this._pump()
  }

  /** _pump appends queued frames one at a time, creating the SourceBuffer from the first frame's codecs. */
  _pump () {
    const ms = this._ms
    if (!ms || ms.readyState !== 'open' || this._stopped) return
    if (!this._sb) {
      // The stream must start with a WebM header: frames before one (the
      // tail of a stream that began elsewhere) cannot be decoded.
      while (this._queue.length > 0 && !isWebMStart(this._queue[0])) this._queue.shift()
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
    if (this._appended && isWebMStart(this._queue[0])) {
      // A new stream from the peer (its media reconnected after a resume):
      // its timestamps start at 0 again. Reset the parser and shift the new
      // stream to follow what is buffered, so the playhead runs on.
      const v = this._video
      const end = v && v.buffered && v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0
      try {
        sb.abort()
        sb.timestampOffset = end
      } catch { /* closing */ }
      this._stats.streams = (this._stats.streams || 1) + 1
    }
    // Merge what waited into one append (fewer appends, less overhead), up
    // to the start of a next stream.
    let n = 1
    while (n < this._queue.length && !isWebMStart(this._queue[n])) n++
    const parts = this._queue.splice(0, n)
    let buf = parts.length === 1 ? parts[0] : concat(parts)
    this._appended = true
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
    clearInterval(this._monitor)
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
 * WebRTCMediaHandle is one device's side of a WebRTC call (PROTOCOL.md
 * section 10): the server is the other end of this device's only peer
 * connection and forwards RTP between the two paired devices. Get it from
 * UmplugClient.startMedia (mode 'webrtc', or 'auto' in a browser that has
 * RTCPeerConnection).
 *
 * Signalling runs as text frames on the /media connection: the server
 * offers (again whenever the peer's tracks arrive or change), this device
 * answers, and ICE candidates trickle both ways. Local tracks ride on the
 * transceivers the server's offer opens for receiving, so no local offer is
 * ever needed.
 *
 * Events (CustomEvent, detail in braces): `paired` {peer}; `remote-track`
 * {kind, track, stream}; `remote-mute` / `remote-unmute` {kind, track};
 * `state` {connectionState, iceConnectionState}; `quality` (a Quality, once
 * a second while paired); `error` {error}.
 */
export class WebRTCMediaHandle extends EventTarget {
  constructor (client, peer, url, opts) {
    super()
    /** The transport: 'webrtc'. */
    this.mode = 'webrtc'
    /** The peer this media connection is paired with. */
    this.peer = peer
    /** Date.now() when the server said paired (media flows from then on). */
    this.startedAt = null
    this.pairedAt = null
    /** The RTCPeerConnection to the server (null before _start). */
    this.pc = null
    const MS = opts.MediaStream || globalThis.MediaStream
    /** The peer's audio and video as one MediaStream (tracks join as they arrive). */
    this.remoteStream = MS ? new MS() : null
    /** True while the microphone is muted (the audio track is disabled: it sends silence). */
    this.muted = !!opts.muted
    /** True while the camera is off (the video sender sends nothing). */
    this.cameraOff = !!opts.cameraOff
    this._client = client
    this._url = url
    this._opts = opts
    this._local = opts.localStream || null
    this._video = opts.remoteVideo || null
    this._PC = opts.RTCPeerConnection || globalThis.RTCPeerConnection
    this._pendingCandidates = [] // remote candidates that came before the first offer
    this._chain = Promise.resolve() // offers and candidates are applied one at a time, in order
    this._tracks = new Map() // kind -> the local track for that kind (kept while the camera is off)
    this._senders = new Map() // kind -> the RTCRtpSender that carries it
    this._stopped = false
    this._paired = false
    this._stats = { offers: 0, answers: 0, candidatesSent: 0, candidatesReceived: 0 }
    if (this._local) {
      for (const t of this._local.getTracks()) if (!this._tracks.has(t.kind)) this._tracks.set(t.kind, t)
    }
    this.setMuted(this.muted)
    /** @type {Promise<{code: number, reason: string}>} resolves when the media connection has closed */
    this.ended = new Promise((resolve) => { this._resolveEnded = resolve })
  }

  /** Signalling counters and the connection's states (cheap, synchronous). */
  stats () {
    const pc = this.pc
    return {
      ...this._stats,
      connectionState: pc ? pc.connectionState : 'new',
      iceConnectionState: pc ? pc.iceConnectionState : 'new'
    }
  }

  /** The peer connection's RTCStatsReport. */
  getStats () {
    return this.pc ? this.pc.getStats() : Promise.resolve(new Map())
  }

  /**
   * quality() reads getStats and summarises the last interval: round trip
   * (s), packet loss (0–1), received frame rate, remote audio level (0–1),
   * whether media stalled (`unstable`) or only the peer's video stopped while
   * their audio flows (`remoteVideoOff`: camera off), and a score 'good' |
   * 'fair' | 'poor' | 'unknown'.
   * @returns {Promise<Quality>}
   */
  async quality () {
    const report = await this.getStats()
    const now = Date.now()
    const cur = summarizeStats(report)
    const prev = this._qprev
    const stallMs = this._opts.stallMs || 2000
    const q = { mode: 'webrtc', rtt: cur.rtt, loss: null, fps: cur.fps, audioLevel: cur.audioLevel, framesDecoded: cur.framesDecoded, unstable: false, remoteVideoOff: false, score: 'unknown' }
    const last = prev ? prev.last : { video: now, audio: now, any: now, frames: now }
    if (!prev || cur.videoPackets > prev.cur.videoPackets) last.video = now
    if (!prev || cur.audioPackets > prev.cur.audioPackets) last.audio = now
    if (!prev || cur.framesDecoded > prev.cur.framesDecoded) last.frames = now
    last.any = Math.max(last.video, last.audio)
    if (prev) {
      const lost = cur.packetsLost - prev.cur.packetsLost
      const got = cur.videoPackets + cur.audioPackets - prev.cur.videoPackets - prev.cur.audioPackets
      if (lost + got > 0) q.loss = Math.max(0, lost) / (Math.max(0, lost) + Math.max(0, got))
      if (q.fps === null && cur.framesDecoded !== null && prev.cur.framesDecoded !== null) {
        q.fps = ((cur.framesDecoded - prev.cur.framesDecoded) * 1000) / Math.max(1, now - prev.at)
      }
    }
    this._qprev = { cur, at: now, last }
    const pc = this.pc
    const ice = pc ? pc.iceConnectionState : 'new'
    const remoteVideo = this.remoteStream && this.remoteStream.getVideoTracks ? this.remoteStream.getVideoTracks()[0] : null
    const audioFlows = now - last.audio < stallMs
    const videoStalled = now - last.frames >= stallMs
    // No frames for a while (or never: a peer without a camera) while their
    // audio flows: their camera is off, the connection is fine.
    q.remoteVideoOff = !!(remoteVideo && remoteVideo.muted) || (this._paired && videoStalled && audioFlows)
    q.unstable = ice === 'disconnected' || ice === 'failed' || (this._paired && now - last.any >= stallMs) ||
      (this._paired && videoStalled && !audioFlows && cur.framesDecoded !== null)
    // With the peer's camera off there is no frame rate to judge.
    q.score = q.unstable ? 'poor' : scoreQuality(q.remoteVideoOff ? { ...q, fps: null } : q)
    return q
  }

  /**
   * Mutes or unmutes the microphone. A muted track stays on the wire and
   * sends silence, so unmuting needs no renegotiation and the peer's level
   * meter falls to zero.
   * @param {boolean} muted
   */
  setMuted (muted) {
    this.muted = !!muted
    const t = this._tracks.get('audio')
    if (t) t.enabled = !muted
  }

  /**
   * Turns the camera off or on. Off detaches the video track from its sender
   * (replaceTrack(null)): nothing is sent, the peer's video track stops and
   * its app shows a placeholder, not a black picture. The local track is
   * left alone (the caller may stop it to turn the camera light off, and
   * hand a new one to replaceTrack before turning the camera on again).
   * @param {boolean} on
   */
  async setCamera (on) {
    this.cameraOff = !on
    const sender = this._senders.get('video')
    if (sender) await sender.replaceTrack(on ? (this._tracks.get('video') || null) : null)
  }

  /**
   * Sends track instead of the current track of its kind (another camera or
   * microphone), without renegotiation. A muted or camera-off state carries
   * over to the new track.
   * @param {'audio'|'video'} kind
   * @param {MediaStreamTrack} track
   */
  async replaceTrack (kind, track) {
    this._tracks.set(kind, track)
    if (kind === 'audio') track.enabled = !this.muted
    const sender = this._senders.get(kind)
    if (sender && !(kind === 'video' && this.cameraOff)) await sender.replaceTrack(track)
  }

  /**
   * Ends this media connection: closes the peer connection and the
   * WebSocket, detaches the remote video. The local tracks keep running.
   * Hang up the call itself with client.unpair(peer).
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
      let pc
      try {
        pc = new this._PC(this._opts.rtcConfig || {})
      } catch (err) {
        this._stopped = true
        try { ws.close(1000, 'no peer connection') } catch { /* never opened */ }
        reject(new UmplugError('media-closed', `cannot create a WebRTC peer connection: ${err.message}`))
        return
      }
      this.pc = pc
      pc.addEventListener('icecandidate', (ev) => {
        const c = ev.candidate
        this._send({ type: 'candidate', candidate: c ? (typeof c.toJSON === 'function' ? c.toJSON() : c) : null })
        this._stats.candidatesSent++
      })
      pc.addEventListener('track', (ev) => this._onTrack(ev.track))
      const onState = () => {
        const detail = { peer: this.peer, connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState }
        this.dispatchEvent(new CustomEvent('state', { detail }))
        this._client.dispatchEvent(new CustomEvent('media-state', { detail }))
      }
      pc.addEventListener('connectionstatechange', onState)
      pc.addEventListener('iceconnectionstatechange', onState)
      ws.addEventListener('open', () => ws.send(JSON.stringify({ type: 'media', ticket, mode: 'webrtc' })))
      ws.addEventListener('message', (ev) => {
        if (typeof ev.data !== 'string') return // this mode has no binary frames
        let msg
        try { msg = JSON.parse(ev.data) } catch { return }
        if (!msg || typeof msg !== 'object') return
        switch (msg.type) {
          case 'offer':
            this._enqueue(() => this._onOffer(msg.sdp))
            break
          case 'candidate':
            this._stats.candidatesReceived++
            this._enqueue(() => this._onCandidate(msg.candidate === undefined ? null : msg.candidate))
            break
          case 'paired':
            if (paired) break
            paired = true
            this._paired = true
            this.pairedAt = this.startedAt = Date.now()
            startMonitor(this)
            this.dispatchEvent(new CustomEvent('paired', { detail: { peer: this.peer } }))
            resolve(this)
            break
        }
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
    })
  }

  _send (msg) {
    if (this._ws && this._ws.readyState === 1 && !this._stopped) this._ws.send(JSON.stringify(msg))
  }

  _enqueue (fn) {
    this._chain = this._chain.then(() => { if (!this._stopped) return fn() }).catch((err) => this._error(err))
  }

  _error (error) {
    if (this._stopped) return
    this.dispatchEvent(new CustomEvent('error', { detail: { peer: this.peer, error } }))
    this._client.dispatchEvent(new CustomEvent('media-error', { detail: { peer: this.peer, error } }))
  }

  /** _onOffer answers one server offer (the first, or a renegotiation). */
  async _onOffer (sdp) {
    const pc = this.pc
    this._stats.offers++
    await pc.setRemoteDescription({ type: 'offer', sdp })
    await this._attachLocal(sdp)
    const answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    this._send({ type: 'answer', sdp: pc.localDescription ? pc.localDescription.sdp : answer.sdp })
    this._stats.answers++
    const queued = this._pendingCandidates
    this._pendingCandidates = []
    for (const c of queued) await this._addCandidate(c)
  }

  _onCandidate (c) {
    if (!this.pc.remoteDescription) {
      this._pendingCandidates.push(c)
      return
    }
    return this._addCandidate(c)
  }

  async _addCandidate (c) {
    try {
      if (c === null) await this.pc.addIceCandidate() // end of candidates
      else await this.pc.addIceCandidate(c)
    } catch (err) {
      if (c !== null) this._error(err) // an end-of-candidates some browsers reject is harmless
    }
  }

  /**
   * _attachLocal puts each local track not yet sent on a transceiver of its
   * kind that the server's offer opened for receiving.
   */
  async _attachLocal (sdp) {
    const sections = offerMedia(sdp)
    for (const kind of [...this._tracks.keys()]) {
      if (this._senders.has(kind)) continue
      const used = new Set(this._senders.values())
      const tr = this.pc.getTransceivers().find((t) => {
        const m = t.mid !== null && t.mid !== undefined ? sections.get(t.mid) : null
        return m && m.kind === kind && m.recv && !t.stopped && !used.has(t.sender) && !t.sender.track
      })
      if (!tr) continue
      tr.direction = 'sendrecv' // answered as sendonly when the server only receives here
      if (this._local && typeof tr.sender.setStreams === 'function') tr.sender.setStreams(this._local)
      this._senders.set(kind, tr.sender) // from now on setCamera and replaceTrack act on it
      await tr.sender.replaceTrack(kind === 'video' && this.cameraOff ? null : this._tracks.get(kind))
    }
  }

  _onTrack (track) {
    const stream = this.remoteStream
    if (stream && !stream.getTracks().includes(track)) {
      // One track per kind: a renegotiated track of a kind replaces the old.
      for (const old of stream.getTracks()) if (old.kind === track.kind) stream.removeTrack(old)
      stream.addTrack(track)
    }
    track.addEventListener('mute', () => this.dispatchEvent(new CustomEvent('remote-mute', { detail: { kind: track.kind, track } })))
    track.addEventListener('unmute', () => this.dispatchEvent(new CustomEvent('remote-unmute', { detail: { kind: track.kind, track } })))
    track.addEventListener('ended', () => { if (stream) stream.removeTrack(track) })
    this.dispatchEvent(new CustomEvent('remote-track', { detail: { kind: track.kind, track, stream } }))
    const v = this._video
    if (v && stream && !this._stopped) {
      // Re-attach so that the element picks up a track added after it started.
      v.playsInline = true
      v.autoplay = true
      v.srcObject = null
      v.srcObject = stream
      const p = v.play()
      if (p && p.catch) {
        p.catch((err) => {
          if (err && err.name === 'AbortError') return // superseded by the next re-attach
          this._client.dispatchEvent(new CustomEvent('media-autoplay-blocked', { detail: { peer: this.peer, error: err } }))
        })
      }
    }
  }

  _teardown () {
    if (this._stopped) return
    this._stopped = true
    clearInterval(this._monitor)
    if (this.pc) {
      try { this.pc.close() } catch { /* closed */ }
    }
    const v = this._video
    if (v && v.srcObject === this.remoteStream) v.srcObject = null
  }
}

/**
 * @typedef {object} Quality
 * @property {'webrtc'|'relay'} mode
 * @property {number|null} rtt round trip to the server, seconds
 * @property {number|null} loss fraction of packets lost in the last interval (0–1)
 * @property {number|null} fps frames per second received
 * @property {boolean} unstable media stalled (nothing for ~2 s) or ICE disconnected
 * @property {boolean} remoteVideoOff the peer's video stopped while their audio flows (camera off)
 * @property {'good'|'fair'|'poor'|'unknown'} score
 */

/**
 * scoreQuality rates a call from what getStats tells: good when the round
 * trip is under 150 ms, loss under 2 % and video at 20 fps or more; poor
 * over 400 ms, over 8 % loss or under 10 fps; fair between. (The relay
 * mode rates by `lag`, seconds behind the live edge.) Unknown figures are
 * ignored; with none at all the score is 'unknown'.
 * @param {{rtt?: number|null, loss?: number|null, fps?: number|null, lag?: number|null}} q
 */
export function scoreQuality (q) {
  const checks = []
  const grade = (v, good, poor, higherIsBetter = false) => {
    if (v === null || v === undefined || Number.isNaN(v)) return
    if (higherIsBetter) checks.push(v >= good ? 2 : v < poor ? 0 : 1)
    else checks.push(v <= good ? 2 : v > poor ? 0 : 1)
  }
  grade(q.rtt, 0.15, 0.4)
  grade(q.loss, 0.02, 0.08)
  grade(q.fps, 20, 10, true)
  grade(q.lag, 0.5, 1.5)
  if (checks.length === 0) return 'unknown'
  const worst = Math.min(...checks)
  return worst === 2 ? 'good' : worst === 1 ? 'fair' : 'poor'
}

/**
 * summarizeStats pulls what the quality indicator needs out of an
 * RTCStatsReport (or any map-like of stats objects): the round trip of the
 * selected candidate pair, received packets and losses, decoded frames,
 * the received frame rate and the remote audio level.
 */
export function summarizeStats (report) {
  const out = { rtt: null, fps: null, audioLevel: null, audioEnergy: null, framesDecoded: null, videoPackets: 0, audioPackets: 0, packetsLost: 0, frameWidth: null }
  let remoteRtt = null
  report.forEach((s) => {
    const kind = s.kind || s.mediaType
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && typeof s.currentRoundTripTime === 'number') {
      out.rtt = s.currentRoundTripTime
    } else if (s.type === 'remote-inbound-rtp' && typeof s.roundTripTime === 'number') {
      remoteRtt = s.roundTripTime
    } else if (s.type === 'inbound-rtp' && kind === 'video') {
      out.videoPackets += s.packetsReceived || 0
      out.packetsLost += s.packetsLost || 0
      out.framesDecoded = (out.framesDecoded || 0) + (s.framesDecoded || 0)
      if (typeof s.framesPerSecond === 'number') out.fps = s.framesPerSecond
      if (s.frameWidth) out.frameWidth = s.frameWidth
    } else if (s.type === 'inbound-rtp' && kind === 'audio') {
      out.audioPackets += s.packetsReceived || 0
      out.packetsLost += s.packetsLost || 0
      if (typeof s.audioLevel === 'number') out.audioLevel = s.audioLevel
      if (typeof s.totalAudioEnergy === 'number') out.audioEnergy = s.totalAudioEnergy
    }
  })
  if (out.rtt === null) out.rtt = remoteRtt
  return out
}

/**
 * offerMedia reads the m-sections of an SDP offer: mid → {kind, recv},
 * recv meaning the offerer is willing to receive there (sendrecv or
 * recvonly, port not 0).
 * @param {string} sdp
 * @returns {Map<string, {kind: string, recv: boolean}>}
 */
export function offerMedia (sdp) {
  const out = new Map()
  for (const sec of String(sdp || '').split(/\r?\n(?=m=)/).slice(1)) {
    const kind = (/^m=(\w+)/.exec(sec) || [])[1]
    const mid = (/^a=mid:(\S+)/m.exec(sec) || [])[1]
    const dir = (/^a=(sendrecv|sendonly|recvonly|inactive)\s*$/m.exec(sec) || [])[1] || 'sendrecv'
    const rejected = /^m=\w+ 0 /.test(sec)
    if (mid !== undefined) out.set(mid, { kind, recv: !rejected && (dir === 'sendrecv' || dir === 'recvonly') })
  }
  return out
}

/**
 * startMonitor has a paired handle dispatch a `quality` event every
 * opts.monitorInterval ms (default 1000; 0 turns it off).
 */
function startMonitor (h) {
  const every = h._opts.monitorInterval === undefined ? 1000 : h._opts.monitorInterval
  if (!every || h._stopped) return
  let busy = false
  h._monitor = setInterval(async () => {
    if (busy || h._stopped) return
    busy = true
    try {
      const q = await h.quality()
      if (!h._stopped) h.dispatchEvent(new CustomEvent('quality', { detail: q }))
    } catch (err) {
      /* a closing peer connection: the next tick or the close event tells */
    } finally {
      busy = false
    }
  }, every)
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

/** isWebMStart: does this frame begin a WebM stream (the EBML magic 1A 45 DF A3)? */
function isWebMStart (buf) {
  if (!buf || buf.byteLength < 4) return false
  const b = new Uint8Array(buf, 0, 4)
  return b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3
}

function concat (bufs) {
  let n = 0
  for (const b of bufs) n += b.byteLength
  const out = new Uint8Array(n)
  let off = 0
  for (const b of bufs) { out.set(new Uint8Array(b), off); off += b.byteLength }
  return out.buffer
}
