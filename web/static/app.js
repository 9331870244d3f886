// The umplug web app: log in, keep a peers list with live presence, and make
// and take video calls. Plain DOM code on top of umplug.js; the server runs
// the call state machine, this file only mirrors it on screen.
//
// Screen states (shown in #state, also as data-state): logged-out, idle,
// ringing (we call), incoming (we are called), in-call.
//
// The call view: mute, camera off/on (the other side sees a placeholder with
// our name), a call timer, device selection (the settings panel, also before
// a call, with a live preview), a quality indicator from getStats, a visible
// "connection unstable" state, a ringtone and ringback made with Web Audio,
// and a notification for a call that rings while the tab is hidden.

import { UmplugClient, UmplugError } from '/umplug.js'

const $ = (sel) => document.querySelector(sel)
const PEERS_REFRESH_MS = 4000 // becoming a mutual peer sends no event: poll the list while idle

const app = {
  client: null,
  state: 'logged-out',
  creds: null, // {user} while logged in (the password is never kept)
  session: null, // {user, session}: logs in again without the password (also in localStorage)
  device: null, // this tab's device id, presented to resume it (also in sessionStorage)
  offline: false, // logged in, but the /meta connection is down: reconnecting
  retry: { attempt: 0, timer: null, at: 0, busy: false, tick: null, resumeTries: 0 }, // reconnect backoff
  serverRestarted: false, // a call ended with reason shutdown: say so once back online
  missed: [], // missed calls, newest first: {user, at, reason}
  peers: new Map(), // name -> {user, mutual, online, status}
  call: null, // {peer, tx, role, stream, media, muted, cameraOff, acceptedAt, connectedAt, firstFrameAt, quality, …}
  refreshTimer: null,
  mediaErrors: [], // SourceBuffer/decoder problems, for diagnosis
  tone: null, // 'ring' | 'ringback' | null: what the speaker plays now
  notification: null // the incoming-call Notification while it shows
}
// A handle for tests and the curious: window.umplugApp.client, .state, .call.
window.umplugApp = app

// ---- messages ---------------------------------------------------------------

/** humanError turns an UmplugError into a sentence a person understands. */
function humanError (err, ctx = {}) {
  if (!(err instanceof UmplugError)) return `Something went wrong: ${err && err.message ? err.message : err}`
  const peer = ctx.peer ? `“${ctx.peer}”` : 'They'
  switch (err.code) {
    case 'offline': return `${peer} is offline right now.`
    case 'busy': return `${peer} is busy in another call (or you are). Try again later.`
    case 'not-a-peer': return `You can only call mutual peers: ${ctx.peer ? `“${ctx.peer}”` : 'they'} must add you too.`
    case 'auth-failed': return 'Wrong user name or password.'
    case 'exists': return 'That user name is already taken. Pick another one or log in.'
    case 'not-found': return err.missing.length ? `No such user: ${err.missing.join(', ')}.` : 'No such user.'
    case 'rate-limited': return 'Too many attempts. Wait a moment and try again.'
    case 'too-many-devices': return 'You are logged in on too many devices. Close the app on one of them and try again.'
    case 'forbidden': return ctx.action === 'register' ? 'Registration is closed on this server.' : 'That is not allowed.'
    case 'unavailable': return 'The server is temporarily unavailable; nothing was changed. Please try again.'
    case 'bad-request': return `Invalid request${err.reason ? `: ${err.reason}` : '.'}`
    case 'no-call': return 'That call is no longer there.'
    case 'unauthenticated': return 'Please log in again.'
    case 'closed': return 'Lost the connection to the server.'
    case 'timeout': return 'The server did not answer in time. Please try again.'
    case 'media-closed': return `Could not connect the call’s media: ${err.reason}`
    default: return err.reason || err.code
  }
}

/** endReason explains why a call ended or never started. */
function endReason (kind, reason, peer) {
  const p = `“${peer}”`
  if (kind === 'reject') {
    switch (reason) {
      case 'rejected': return `${p} declined the call.`
      case 'timeout': return `${p} did not answer.`
      case 'offline': case 'disconnected': return `${p} went offline.`
      case 'shutdown': return 'The server is shutting down.'
    }
  }
  if (kind === 'cancel') {
    switch (reason) {
      case 'cancelled': return `${p} cancelled the call.`
      case 'timeout': return `Missed call from ${p}.`
      case 'answered-elsewhere': return 'The call was answered on another of your devices.'
      case 'disconnected': return `${p} lost the connection.`
      case 'shutdown': return 'The server is shutting down.'
    }
  }
  if (kind === 'unpair') {
    switch (reason) {
      case 'hangup': return `${p} hung up.`
      case 'disconnected': return `The call with ${p} was disconnected.`
      case 'shutdown': return 'The call ended: the server is restarting.'
    }
  }
  return `The call with ${p} ended${reason ? ` (${reason})` : ''}.`
}

function showError (text) {
  $('#error-text').textContent = text
  $('#error').hidden = false
}
function clearError () { $('#error').hidden = true }
function showNotice (text) {
  $('#notice-text').textContent = text
  $('#notice').hidden = false
}
function clearNotice () { $('#notice').hidden = true }

// ---- screen state -----------------------------------------------------------

function setState (s) {
  app.state = s
  const el = $('#state')
  el.textContent = s
  el.dataset.state = s
  document.body.dataset.state = s
  // Logged out with a stored session: signing in by ourselves (the banner
  // says so); the form shows only if the session is refused.
  $('#auth').hidden = s !== 'logged-out' || !!app.session
  $('#home').hidden = s !== 'idle'
  $('#outgoing').hidden = s !== 'ringing'
  $('#incoming').hidden = s !== 'incoming'
  $('#call').hidden = s !== 'in-call'
  $('#btn-logout').hidden = s === 'logged-out'
  $('#btn-missed').hidden = s === 'logged-out'
  $('#btn-account').hidden = s === 'logged-out'
  $('#me').hidden = s === 'logged-out'
  document.title = s === 'incoming' && app.call ? `${app.call.peer} is calling – umplug` : 'umplug'
  // What the speaker plays follows the screen: a ringtone while a call
  // rings here, the ringback while we ring someone, silence otherwise.
  if (s === 'incoming') tones.play('ring')
  else if (s === 'ringing') tones.play('ringback')
  else tones.stop()
  if (s !== 'incoming') closeCallNotification()
  renderPeers()
  renderMissed()
}

function setPhase (text) { $('#call-phase').textContent = text }

// ---- connection and login ----------------------------------------------------

// Reconnecting: exponential backoff with full jitter. Attempt n waits a
// random time in [0, min(cap, base·2ⁿ)), so that 10,000 tabs dropped by one
// server restart come back spread over seconds, not in the same instant.
//
// A device in a call that dropped by itself (no word from the server) has
// only the server's resume window (20 s, PROTOCOL.md §8) to come back with
// its call: during that window its waits are capped at 2 s. A server that
// shuts down says so (1001) and ends the calls first, so a restart storm
// gets the full backoff.
const BACKOFF_BASE_MS = 500
const BACKOFF_CAP_MS = 30000
const RESUME_CAP_MS = 2000
const RESUME_WINDOW_MS = 20000
const RESUME_TRIES = 4 // a refused resume is asked again this often, RESUME_RETRY_MS apart, within the window
const RESUME_RETRY_MS = 800

/** backoffDelay is how long to wait before reconnect attempt n (0-based). */
function backoffDelay (attempt) {
  const resuming = !!app.call && app.droppedAt && Date.now() - app.droppedAt < RESUME_WINDOW_MS
  const cap = resuming ? RESUME_CAP_MS : BACKOFF_CAP_MS
  return Math.random() * Math.min(cap, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 20))
}

// Where the login survives a reload. The session (a secret that logs this
// user in again without the password, PROTOCOL.md §8) is in localStorage:
// every tab and a browser restart stay logged in until "Log out" (which
// revokes it on the server) or a password change. The device id, which a
// reloaded page presents to resume its device (and its call), is in
// sessionStorage: it belongs to this tab only, so two tabs never try to
// take over each other's device. The password is never kept.
const SESSION_KEY = 'umplug.session'
const DEVICE_KEY = 'umplug.device'

function loadJSON (storage, key) {
  try { return JSON.parse(storage.getItem(key) || 'null') } catch { return null }
}
function saveJSON (storage, key, value) {
  try { storage.setItem(key, JSON.stringify(value)) } catch { /* storage refused (private mode): this page only */ }
}
function storedSession () {
  const v = loadJSON(localStorage, SESSION_KEY)
  return v && typeof v.user === 'string' && typeof v.session === 'string' ? v : null
}
function storedDevice (user) {
  const v = loadJSON(sessionStorage, DEVICE_KEY)
  return v && v.user === user && typeof v.device === 'string' ? v.device : null
}
/** storedDropAt is when the page that had the stored device went away (pagehide), or 0. */
function storedDropAt () {
  const v = loadJSON(sessionStorage, DEVICE_KEY)
  return v && typeof v.at === 'number' ? v.at : 0
}

/**
 * onPageHide: the page goes away (reload, navigation, tab closed). Tell the
 * server now, with a close that keeps the resume window (not 1000), so the
 * reloaded page's resume does not race the old connection's end; and note
 * when, so the new page knows whether its device may still be held.
 */
function onPageHide () {
  const c = app.client
  if (!c || c.closed || !app.creds || !app.device) return
  saveJSON(sessionStorage, DEVICE_KEY, { user: app.creds.user, device: app.device, at: Date.now() })
  app.client = null
  c.close(4001, 'page closed')
}
function forgetSession () {
  app.session = null
  try {
    localStorage.removeItem(SESSION_KEY)
    sessionStorage.removeItem(DEVICE_KEY)
  } catch { /* nothing stored */ }
}

/** cli is the connected client, or an UmplugError 'closed' while offline. */
function cli () {
  if (!app.client || app.client.closed) throw new UmplugError('closed', 'not connected to the server')
  return app.client
}

async function ensureClient () {
  if (app.client && !app.client.closed) return app.client
  const client = await UmplugClient.connect()
  client.addEventListener('status', onStatus)
  client.addEventListener('call', onIncomingCall)
  client.addEventListener('accept', onAccepted)
  client.addEventListener('reject', onRejected)
  client.addEventListener('cancel', onCancelled)
  client.addEventListener('unpair', onUnpaired)
  client.addEventListener('force-call', onForceCall)
  client.addEventListener('reconnecting', (e) => { if (app.call && e.detail.user === app.call.peer) { app.call.peerReconnecting = true; app.call.peerDrops++; renderStage() } })
  client.addEventListener('resumed', (e) => {
    const call = app.call
    if (!call || e.detail.user !== call.peer) return
    call.peerReconnecting = false
    // The relay re-pairs the peer's new media connection with ours: start
    // a new stream (with its header) for it. WebRTC needs nothing here.
    if (call.media && call.media.mode === 'relay') call.media.restartStream()
    renderStage()
  })
  client.addEventListener('missed-call', onMissedCall)
  client.addEventListener('media-state', (e) => { if (app.call) { app.call.ice = e.detail.iceConnectionState; renderStage() } })
  client.addEventListener('close', (e) => onClosed(client, e.detail))
  // Autoplay with sound can be refused without a tap; offer one.
  client.addEventListener('media-error', (e) => { app.mediaErrors.push(String(e.detail.error)); console.warn('umplug media error', e.detail.error) })
  client.addEventListener('media-autoplay-blocked', () => { $('#btn-play').hidden = false })
  app.client = client
  return client
}

function readCreds () {
  const user = $('#reg-user').value.trim()
  const password = $('#reg-pass').value
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(user)) {
    showError('User names are 1–64 characters: letters, digits, and . _ - @')
    return null
  }
  if (new TextEncoder().encode(password).length < 8) {
    showError('Passwords need at least 8 characters.')
    return null
  }
  return { user, password }
}

async function authenticate (register) {
  clearError()
  clearNotice()
  const creds = readCreds()
  if (!creds) return
  const buttons = [$('#btn-login'), $('#btn-register')]
  buttons.forEach((b) => { b.disabled = true })
  try {
    let client
    try {
      client = await ensureClient()
    } catch (err) {
      showError('Cannot reach the server. Check your connection and try again.')
      return
    }
    if (register) {
      try {
        await client.register(creds.user, creds.password)
      } catch (err) {
        showError(humanError(err, { action: 'register' }))
        return
      }
    }
    let res
    try {
      res = await client.login(creds.user, creds.password)
    } catch (err) {
      // Enter logs in, it never registers (a typo must not create an
      // account): say which button is for a new name.
      showError(err instanceof UmplugError && err.code === 'auth-failed'
        ? 'Wrong user name or password. New here? Press Register to create this account.'
        : humanError(err, { action: 'login' }))
      return
    }
    loggedIn(creds.user, res)
    if (register) showNotice(`Welcome, ${creds.user}! Add a peer by name to get started.`)
  } finally {
    buttons.forEach((b) => { b.disabled = false })
  }
}

/**
 * loggedIn takes over after a successful whoami (password or session):
 * keeps the session and device id for reconnects, and shows the home
 * screen, or keeps the call screen when the device was resumed with its
 * call.
 */
function loggedIn (user, res) {
  app.creds = { user }
  app.offline = false
  app.device = res.device || null
  if (res.session) {
    app.session = { user, session: res.session }
    saveJSON(localStorage, SESSION_KEY, app.session)
  }
  if (app.device) saveJSON(sessionStorage, DEVICE_KEY, { user, device: app.device })
  $('#reg-pass').value = ''
  $('#me').textContent = user
  hideReconnecting()
  const call = app.call
  const hungUp = app.hungUpOffline
  app.hungUpOffline = null
  app.ignoreForceCall = hungUp && res.resumed && !call ? hungUp : null
  if (app.ignoreForceCall) app.client.unpair(hungUp).catch(() => {}) // hung up while offline
  if (call && res.resumed) {
    // Same device, same call: the server sends a fresh force-call to
    // reconnect the media (onForceCall replaces it).
    setState(app.state)
    renderStage()
  } else {
    if (call) {
      endCall(app.serverRestarted ? null : `The call with “${call.peer}” was disconnected.`)
    }
    setState('idle')
  }
  if (app.serverRestarted) {
    app.serverRestarted = false
    showNotice('The server restarted, which ended your call. You are back online.')
  }
  refreshPeers()
  loadMissed()
  clearInterval(app.refreshTimer)
  app.refreshTimer = setInterval(() => { if (app.state === 'idle') refreshPeers() }, PEERS_REFRESH_MS)
}

/**
 * logout revokes this device's session on the server (so that it logs no
 * one in again), forgets it here and closes the connection with 1000 (the
 * device is gone for good: no resume window).
 */
async function logout () {
  stopReconnecting()
  clearInterval(app.refreshTimer)
  const session = app.session
  forgetSession()
  const call = app.call
  if (call && app.client && !app.client.closed) {
    // Hang up first: the peer is told "hung up", not "disconnected".
    const peer = call.peer
    const ending = app.state === 'ringing' ? app.client.cancel(peer) : app.state === 'incoming' ? app.client.reject(peer, call.tx) : app.client.unpair(peer)
    await Promise.race([ending.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 2000))])
  }
  endCall(null)
  app.creds = null
  app.device = null
  app.offline = false
  app.peers.clear()
  app.missed = []
  renderMissed()
  closePanels()
  const c = app.client
  app.client = null
  clearError()
  clearNotice()
  setState('logged-out')
  if (c && !c.closed) {
    try { await c.logout() } catch { /* the session expires on its own */ }
    c.close(1000, 'logout')
  } else if (session) {
    // Offline: revoke it on a connection of its own as soon as possible.
    revokeLater(session)
  }
}

/** revokeLater logs in with a session only to log it out (used when Log out was pressed offline). */
async function revokeLater (session) {
  try {
    const c = await UmplugClient.connect()
    try {
      await c.loginSession(session.user, session.session)
      await c.logout()
    } finally {
      c.close(1000, 'logout')
    }
  } catch { /* the server is unreachable: the session expires unused */ }
}

/** signedOut shows the sign-in form with why (the session is no longer valid). */
function signedOut (message) {
  stopReconnecting()
  clearInterval(app.refreshTimer)
  forgetSession()
  if (app.call) endCall(null)
  app.creds = null
  app.device = null
  app.offline = false
  app.peers.clear()
  closePanels()
  setState('logged-out')
  showError(message)
}

function onClosed (client, detail) {
  if (client !== app.client) return // an old connection we closed on purpose
  app.client = null
  clearInterval(app.refreshTimer)
  if (detail && detail.code === 1008 && /password/i.test(detail.reason || '')) {
    signedOut('Your password was changed (here, on another device, or by the administrator). Please log in with the new password.')
    return
  }
  if (detail && detail.code === 1008 && /resumed/i.test(detail.reason || '')) {
    // Another connection took this device over (a duplicated tab carries
    // our device id): come back as a new device, without the call.
    app.device = null
    try { sessionStorage.removeItem(DEVICE_KEY) } catch { /* nothing stored */ }
    if (app.call) endCall(`The call with “${app.call.peer}” moved to another tab or window.`)
  }
  if (!app.session || !app.creds) { // not logged in: nothing to come back to
    if (app.state !== 'logged-out') setState('logged-out')
    return
  }
  // Logged in: keep what is on screen (the call too: the server keeps it
  // for a short while, PROTOCOL.md §8) and come back by ourselves.
  app.offline = true
  app.droppedAt = detail && detail.code === 1001 ? 0 : Date.now() // 1001: the server went away on purpose
  if (app.call) {
    app.call.reconnecting = true
    if (app.state === 'in-call') setPhase('reconnecting…')
    renderStage()
  }
  renderPeers()
  if (!app.retry.busy) scheduleReconnect()
}

/** scheduleReconnect plans the next attempt with backoff and shows the banner. */
function scheduleReconnect () {
  clearTimeout(app.retry.timer)
  const d = backoffDelay(app.retry.attempt++)
  app.retry.at = Date.now() + d
  app.retry.timer = setTimeout(tryReconnect, d)
  showReconnecting()
}

function stopReconnecting () {
  clearTimeout(app.retry.timer)
  app.retry.timer = null
  app.retry.attempt = 0
  hideReconnecting()
}

/**
 * tryReconnect opens a new connection and logs in with the session,
 * resuming this tab's device (and with it presence and the call) when the
 * server still holds it.
 */
async function tryReconnect () {
  clearTimeout(app.retry.timer)
  app.retry.timer = null
  const s = app.session
  if (!s || app.retry.busy) return
  app.retry.busy = true
  app.retry.at = 0
  showReconnecting()
  let client = null
  try {
    client = await ensureClient()
    const resume = app.device || storedDevice(s.user) || undefined
    const res = await client.loginSession(s.user, s.session, { resume })
    if (app.session !== s || app.client !== client) { client.close(1000, 'logout'); return } // logged out meanwhile
    if (resume && !res.resumed && app.retry.resumeTries < RESUME_TRIES && app.droppedAt && Date.now() - app.droppedAt < RESUME_WINDOW_MS) {
      // Refused while the old connection may not be noticed as gone yet
      // (a reload races the old page's close; a half-open socket must be
      // quiet for 2 s before the server lets a resume take it over): give
      // this fresh device back at once (1000) and ask again shortly.
      app.retry.resumeTries++
      app.client = null
      client.close(1000, 'retry resume')
      clearTimeout(app.retry.timer)
      app.retry.at = Date.now() + RESUME_RETRY_MS
      app.retry.timer = setTimeout(tryReconnect, RESUME_RETRY_MS)
      return
    }
    app.retry.resumeTries = 0
    app.retry.attempt = 0
    loggedIn(s.user, res)
  } catch (err) {
    if (client && app.client === client) {
      app.client = null // closed on purpose: onClosed must not schedule again
      client.close(4000, 'retry') // not 1000: a whoami that resumed but answered too late keeps its window
    }
    if (app.session !== s) return
    if (err instanceof UmplugError && err.code === 'auth-failed') {
      signedOut('Your login has ended (logged out, expired, or the password was changed). Please log in again.')
      return
    }
    scheduleReconnect()
  } finally {
    app.retry.busy = false
  }
}

function showReconnecting () {
  $('#reconnecting').hidden = false
  renderReconnecting()
  if (!app.retry.tick) app.retry.tick = setInterval(renderReconnecting, 500)
  document.body.dataset.offline = 'true'
}

function renderReconnecting () {
  const left = app.retry.at ? Math.ceil((app.retry.at - Date.now()) / 1000) : 0
  const first = !app.creds || app.state === 'logged-out'
  $('#reconnecting-text').textContent = app.retry.busy || left <= 0
    ? (first ? 'Signing you in…' : 'Reconnecting…')
    : `Reconnecting… (next try in ${left} s)`
  $('#btn-reconnect-now').hidden = app.retry.busy || left <= 0
}

function hideReconnecting () {
  $('#reconnecting').hidden = true
  clearInterval(app.retry.tick)
  app.retry.tick = null
  delete document.body.dataset.offline
}

/** reconnectNow is "Try now" and the browser's online event: skip the wait. */
function reconnectNow () {
  if (app.retry.timer) tryReconnect()
}

/**
 * onOnline is the browser's online event (a network came back, or the
 * device moved to another one): retry at once if reconnecting; if the
 * connection looks open, make sure it still is. A socket on a network that
 * went away can stay "open" for minutes with nothing arriving (browsers do
 * not close it, and a page cannot ping): a request that gets no answer
 * within 5 s means it is dead, and the app reconnects (and resumes).
 */
async function onOnline () {
  if (app.retry.timer) { tryReconnect(); return }
  const client = app.client
  if (!client || client.closed || !app.creds) return
  const answered = await Promise.race([
    client.peersOnline().then(() => true, (err) => err.code !== 'closed' && err.code !== 'timeout'),
    new Promise((resolve) => setTimeout(() => resolve(false), LIVENESS_MS))
  ])
  if (!answered && app.client === client) abandon(client)
}
const LIVENESS_MS = 5000

/**
 * onOffline is the browser's offline event: the device lost its network.
 * Its sockets are dead even while the browser still calls them open (it can
 * take a minute to notice): give the connection up now, so that the call
 * shows "Reconnecting…" at once and the retries (resuming the device within
 * the server's window) start; onOnline retries at once when the network is
 * back.
 */
function onOffline () {
  const client = app.client
  if (client && !client.closed && app.creds) abandon(client)
}

/** abandon gives a connection up as dead: reconnect now, without waiting for its close. */
function abandon (client) {
  client.close(4000, 'dead') // not 1000: the device wants to resume
  onClosed(client, { code: 4000, reason: 'no answer' })
}

// ---- missed calls --------------------------------------------------------------

async function loadMissed () {
  const client = app.client
  if (!client) return
  try {
    app.missed = await client.missedCalls()
    renderMissed()
  } catch (err) {
    if (err.code !== 'closed') console.warn('missed calls', err)
  }
}

function onMissedCall (ev) {
  const { user, at, reason } = ev.detail
  app.missed.unshift({ user, at, reason })
  app.missed.length = Math.min(app.missed.length, 100)
  renderMissed()
}

const MISSED_WHY = {
  timeout: 'not answered',
  cancelled: 'they hung up',
  disconnected: 'they lost the connection',
  offline: 'you were offline',
  shutdown: 'the server restarted'
}

function formatWhen (at) {
  const d = new Date(at)
  if (Number.isNaN(d.getTime())) return ''
  const today = new Date().toDateString() === d.toDateString()
  return today
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' })
}

/** renderMissed draws the badge (how many) and the list (newest first). */
function renderMissed () {
  const n = app.missed.length
  const badge = $('#missed-badge')
  badge.hidden = n === 0
  badge.textContent = n > 99 ? '99+' : String(n)
  const btn = $('#btn-missed')
  btn.title = n ? `${n} missed call${n === 1 ? '' : 's'}` : 'Missed calls'
  btn.setAttribute('aria-label', btn.title)
  $('#missed-empty').hidden = n > 0
  $('#btn-missed-clear').disabled = n === 0
  $('#missed-list').replaceChildren(...app.missed.map((m) => {
    const li = document.createElement('li')
    li.dataset.caller = m.user
    const info = document.createElement('span')
    info.className = 'info'
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = m.user
    const when = document.createElement('span')
    when.className = 'when'
    const time = document.createElement('time')
    time.dateTime = m.at
    time.textContent = formatWhen(m.at)
    when.append(time, ` · ${MISSED_WHY[m.reason] || m.reason}`)
    info.append(name, when)
    const back = document.createElement('button')
    back.type = 'button'
    back.className = 'call-back primary'
    back.textContent = 'Call back'
    const p = app.peers.get(m.user)
    back.disabled = !(p && p.mutual && p.online && app.state === 'idle' && !app.offline)
    back.addEventListener('click', () => { closePanels(); startCall(m.user) })
    li.append(info, back)
    return li
  }))
}

async function clearMissed () {
  try {
    await cli().missedCalls({ clear: true })
    app.missed = []
    renderMissed()
  } catch (err) {
    showError(humanError(err))
  }
}

// ---- panels: missed calls and account -------------------------------------------

function togglePanel (id) {
  const el = $(id)
  const open = el.hidden
  closePanels()
  el.hidden = !open
  if (open && id === '#missed') renderMissed()
  if (open && id === '#account') $('#passwd-user').value = app.creds ? app.creds.user : ''
}

function closePanels () {
  $('#missed').hidden = true
  $('#account').hidden = true
}

async function changePassword (ev) {
  ev.preventDefault()
  clearError()
  const old = $('#passwd-old').value
  const next = $('#passwd-new').value
  if (new TextEncoder().encode(next).length < 8) {
    showError('Passwords need at least 8 characters.')
    return
  }
  try {
    const res = await cli().passwd(old, next)
    if (res.session && app.creds) {
      app.session = { user: app.creds.user, session: res.session }
      saveJSON(localStorage, SESSION_KEY, app.session)
    }
    $('#passwd-old').value = ''
    $('#passwd-new').value = ''
    closePanels()
    showNotice('Password changed. Your other devices were logged out.')
  } catch (err) {
    showError(err instanceof UmplugError && err.code === 'auth-failed' ? 'The current password is wrong.' : humanError(err))
  }
}

// ---- peers -------------------------------------------------------------------

async function refreshPeers () {
  const client = app.client
  if (!client || !app.creds) return
  try {
    const list = await client.peers()
    app.peers = new Map(list.map((p) => [p.user, p]))
    renderPeers()
  } catch (err) {
    if (err.code !== 'closed') showError(humanError(err))
  }
}

function renderPeers () {
  const ul = $('#peers')
  const names = [...app.peers.keys()].sort((a, b) => a.localeCompare(b))
  $('#peers-empty').hidden = names.length > 0
  ul.replaceChildren(...names.map((name) => {
    const p = app.peers.get(name)
    const li = document.createElement('li')
    li.dataset.peer = name
    li.dataset.online = String(!!p.online)
    li.dataset.mutual = String(!!p.mutual)
    const dot = document.createElement('span')
    dot.className = `dot ${!p.mutual ? 'pending' : p.online ? 'online' : 'offline'}`
    dot.title = !p.mutual ? 'not a mutual peer yet' : p.online ? 'online' : 'offline'
    const info = document.createElement('span')
    info.className = 'info'
    const n = document.createElement('span')
    n.className = 'name'
    n.textContent = name
    const st = document.createElement('span')
    st.className = 'peer-status'
    st.textContent = !p.mutual ? 'has not added you yet' : p.online ? (p.status || 'online') : 'offline'
    info.append(n, st)
    const call = document.createElement('button')
    call.type = 'button'
    call.className = 'call primary'
    call.textContent = 'Call'
    call.disabled = !(p.mutual && p.online && app.state === 'idle' && !app.offline)
    call.addEventListener('click', () => startCall(name))
    const rm = document.createElement('button')
    rm.type = 'button'
    rm.className = 'remove'
    rm.title = `Remove ${name}`
    rm.setAttribute('aria-label', `Remove ${name}`)
    rm.textContent = '×'
    rm.addEventListener('click', () => removePeer(name))
    li.append(dot, info, call, rm)
    return li
  }))
  if (!$('#missed').hidden) renderMissed()
}

async function addPeer (ev) {
  ev.preventDefault()
  clearError()
  const input = $('#peer-add')
  const name = input.value.trim()
  if (!name) return
  if (app.creds && name === app.creds.user) {
    showError('You cannot add yourself.')
    return
  }
  try {
    await cli().addPeers([name])
    input.value = ''
    await refreshPeers()
  } catch (err) {
    showError(humanError(err, { peer: name }))
  }
}

async function removePeer (name) {
  clearError()
  try {
    await cli().delPeers([name])
    app.peers.delete(name)
    renderPeers()
  } catch (err) {
    showError(humanError(err, { peer: name }))
  }
}

async function setStatus (ev) {
  ev.preventDefault()
  clearError()
  const input = $('#status-input')
  const status = input.value.trim()
  if (!status) return
  try {
    await cli().setStatus(status)
    showNotice(`Status set to “${status}”.`)
  } catch (err) {
    showError(humanError(err))
  }
}

function onStatus (ev) {
  const { user, status } = ev.detail
  const p = app.peers.get(user)
  if (!p) {
    refreshPeers()
    return
  }
  // Only mutual peers get status events, so any status but offline means
  // mutual and online; offline may also mean "no longer mutual": ask.
  p.online = status !== 'offline'
  p.status = status === 'offline' ? null : status
  if (p.online) p.mutual = true
  renderPeers()
  if (!p.online) refreshPeers()
}

// ---- calls ---------------------------------------------------------------------

/** getMedia asks for camera and microphone; on failure the call goes on receive-only. */
async function getMedia () {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showNotice('This browser gives no camera here (it needs https or localhost): you will only see and hear the other side.')
    return null
  }
  try {
    return await navigator.mediaDevices.getUserMedia(constraints())
  } catch (err) {
    showNotice(`No camera/microphone (${err.name}): you will only see and hear the other side.`)
    return null
  }
}

function stopStream (stream) {
  if (stream) stream.getTracks().forEach((t) => t.stop())
}

async function startCall (peer) {
  if (app.state !== 'idle') return
  clearError()
  clearNotice()
  app.call = newCall(peer, null, 'caller')
  const call = app.call
  $('#outgoing-peer').textContent = peer
  setState('ringing')
  call.stream = await getMedia()
  if (app.call !== call) { stopStream(call.stream); return } // ended meanwhile
  try {
    call.tx = await cli().call(peer)
  } catch (err) {
    if (app.call === call) {
      endCall(null)
      showError(humanError(err, { peer }))
    }
  }
}

async function cancelCall () {
  const call = app.call
  if (!call || app.state !== 'ringing') return
  endCall(`You cancelled the call to “${call.peer}”.`)
  try {
    await cli().cancel(call.peer)
  } catch (err) {
    if (err.code !== 'no-call' && err.code !== 'closed') showError(humanError(err, { peer: call.peer }))
  }
}

function onIncomingCall (ev) {
  const { user: peer, tx } = ev.detail
  if (app.state !== 'idle') return // the server answers busy; nothing to show
  clearError()
  clearNotice()
  app.call = newCall(peer, tx, 'callee')
  $('#incoming-peer').textContent = peer
  setState('incoming')
  notifyIncoming(peer)
}

async function acceptCall () {
  const call = app.call
  if (!call || app.state !== 'incoming') return
  $('#btn-accept').disabled = true
  call.acceptedAt = Date.now()
  try {
    call.stream = await getMedia()
    if (app.call !== call) { stopStream(call.stream); return } // cancelled while asking for the camera
    enterCall(call)
    await cli().accept(call.peer, call.tx)
  } catch (err) {
    if (app.call === call) {
      endCall(null)
      showError(humanError(err, { peer: call.peer }))
    }
  } finally {
    $('#btn-accept').disabled = false
  }
}

async function rejectCall () {
  const call = app.call
  if (!call || app.state !== 'incoming') return
  endCall(`You declined the call from “${call.peer}”.`)
  try {
    await cli().reject(call.peer, call.tx)
  } catch (err) {
    if (err.code !== 'no-call' && err.code !== 'closed') showError(humanError(err, { peer: call.peer }))
  }
}

function onAccepted (ev) {
  const call = app.call
  if (!call || ev.detail.user !== call.peer) return
  if (!call.acceptedAt) call.acceptedAt = Date.now()
  if (app.state === 'ringing') enterCall(call)
}

function onRejected (ev) {
  const call = app.call
  if (!call || ev.detail.user !== call.peer || app.state !== 'ringing') return
  endCall(endReason('reject', ev.detail.reason, call.peer))
}

function onCancelled (ev) {
  const call = app.call
  if (!call || ev.detail.user !== call.peer) return
  if (app.state === 'incoming' || (app.state === 'in-call' && !call.media)) {
    endCall(endReason('cancel', ev.detail.reason, call.peer))
  }
}

function onUnpaired (ev) {
  const call = app.call
  if (!call || ev.detail.user !== call.peer) return
  if (ev.detail.reason === 'shutdown') app.serverRestarted = true // said again once we are back
  endCall(endReason('unpair', ev.detail.reason, call.peer))
}

/** enterCall switches to the in-call view and shows the local preview. */
function enterCall (call) {
  if (app.state === 'in-call') return
  $('#call-peer').textContent = call.peer
  $('#remote-name').textContent = call.peer
  $('#remote-avatar').textContent = initials(call.peer)
  setPhase('connecting…')
  showLocal()
  $('#btn-play').hidden = true
  setState('in-call')
  watchRemote(call)
  renderControls()
  renderStage()
}

async function onForceCall (ev) {
  const fc = ev.detail
  let call = app.call
  if (!call && app.state === 'idle' && app.ignoreForceCall !== fc.peer) {
    // A resumed device whose page was reloaded mid-call: the server's fresh
    // force-call is all it knows of the call. Take it up again.
    call = app.call = newCall(fc.peer, null, 'resumed')
    call.reconnecting = true
    call.acceptedAt = Date.now()
    enterCall(call)
    call.stream = await getMedia()
    if (app.call !== call) { stopStream(call.stream); return }
    showLocal()
    renderControls()
  }
  if (!call || fc.peer !== call.peer) return
  enterCall(call) // glare, or force-call before accept's res
  if (call.media) {
    // A fresh force-call for a call whose media runs (the server
    // reconnects it, PROTOCOL.md §8): the new ticket replaces the old media.
    const old = call.media
    call.media = null
    old.stop()
  }
  setPhase(call.reconnecting ? 'reconnecting…' : 'waiting for the other side…')
  renderStage()
  const remote = $('#remote-video')
  remote.muted = false
  call.mode = mediaSetting()
  const gen = call.mediaGen = (call.mediaGen || 0) + 1 // a later force-call supersedes this one
  let media
  try {
    media = await cli().startMedia(fc, {
      mode: call.mode,
      localStream: call.stream,
      remoteVideo: remote,
      muted: call.muted,
      cameraOff: call.cameraOff
    })
  } catch (err) {
    if (app.call === call && call.mediaGen === gen) {
      if (app.offline || call.peerReconnecting) return // a drop: the resume brings a new force-call
      endCall(null)
      showError(humanError(err, { peer: call.peer }))
      app.client && app.client.unpair(call.peer).catch(() => {})
    }
    return
  }
  if (app.call !== call || call.mediaGen !== gen) { media.stop(); return }
  call.media = media
  call.reconnecting = false
  media.setMuted(call.muted) // toggled while the media was connecting
  if (media.cameraOff !== call.cameraOff) media.setCamera(!call.cameraOff).catch(() => {})
  setPhase(call.stream ? 'connected' : 'connected (receive only)')
  if (!call.connectedAt) call.connectedAt = Date.now() // the timer runs on through a media reconnect
  call.media.addEventListener('quality', (e) => { if (app.call === call) { call.quality = e.detail; renderStage() } })
  call.media.addEventListener('remote-mute', (e) => { if (app.call === call && e.detail.kind === 'video') { call.remoteTrackMuted = true; renderStage() } })
  call.media.addEventListener('remote-unmute', (e) => { if (app.call === call && e.detail.kind === 'video') { call.remoteTrackMuted = false; renderStage() } })
  startCallTimer(call)
  renderStage()
  media.ended.then((end) => {
    if (app.call !== call || call.media !== media) return // ended, or replaced
    // 1000 "unpaired" comes with an unpair event that explains why; anything
    // else means the media path broke. Either way, wait a moment: when this
    // device or the peer dropped, the server keeps the call for its resume
    // window and a fresh force-call reconnects the media (PROTOCOL.md §8).
    call.media = null
    call.reconnecting = true
    setPhase('reconnecting…')
    renderStage()
    const giveUp = () => {
      if (app.call !== call || call.mediaGen !== gen) return // ended, or a new force-call came
      if (app.offline || call.peerReconnecting) { setTimeout(giveUp, 1000); return } // the server decides
      if (end.code === 1000) {
        endCall(`The call with “${call.peer}” ended.`)
      } else {
        endCall(`The call with “${call.peer}” lost its media connection.`)
        app.client && app.client.unpair(call.peer).catch(() => {})
      }
    }
    setTimeout(giveUp, end.code === 1000 ? 1500 : 3000)
  })
}

async function hangUp () {
  const call = app.call
  if (!call) return
  // Keep the media connection open until the server has the unpair: closed
  // first, the server would end the call as "disconnected" instead of
  // "hangup" (the server closes it for us anyway).
  const media = call.media
  call.media = null
  endCall(`You hung up on “${call.peer}”.`)
  if (app.offline) app.hungUpOffline = call.peer // the server may still hold the call: unpair once back
  try {
    await cli().unpair(call.peer)
  } catch (err) {
    if (err.code !== 'no-call' && err.code !== 'closed') showError(humanError(err, { peer: call.peer }))
  } finally {
    if (media) media.stop()
  }
}

/** endCall tears the call down locally and returns to idle (or logged-out). */
function endCall (message) {
  const call = app.call
  app.call = null
  if (call) {
    if (call.media) call.media.stop()
    stopStream(call.stream)
    clearInterval(call.timer)
    clearInterval(call.watch)
  }
  $('#call-timer').textContent = '0:00'
  $('#call-timer').hidden = true
  $('#call-unstable').hidden = true
  if (call && settingsOpen()) showPreview() // it showed the call's stream
  const local = $('#local-video')
  local.srcObject = null
  const remote = $('#remote-video')
  remote.srcObject = null
  remote.removeAttribute('src')
  remote.load()
  if (message) showNotice(message)
  setState(app.creds ? 'idle' : 'logged-out')
  if (app.state === 'idle') refreshPeers()
}

// ---- call view: controls, timer, quality, placeholder -----------------------------

function newCall (peer, tx, role) {
  return {
    peer,
    tx,
    role,
    stream: null,
    media: null,
    mode: null, // 'webrtc' | 'relay' once media starts
    muted: false,
    cameraOff: false,
    acceptedAt: null, // Date.now() when the callee pressed Accept / the caller got accept
    connectedAt: null, // when the server paired the media (the timer starts)
    firstFrameAt: null, // when the first remote video frame was shown
    quality: null, // the last Quality from the media handle
    remoteTrackMuted: false, // the peer's video track says muted
    remoteBlack: false, // the peer's picture is all black (relay camera off)
    peerReconnecting: false, // /meta: the peer's device dropped and may resume
    peerDrops: 0, // how many times the peer dropped and (maybe) came back during this call
    reconnecting: false, // our connection dropped (or the media did): waiting for a fresh force-call
    ice: null
  }
}

/** initials for the placeholder's avatar: "alice" → "A", "bob.smith" → "BS". */
function initials (name) {
  const parts = name.split(/[._@\-\s]+/).filter(Boolean)
  return ((parts[0] || name)[0] + (parts.length > 1 ? parts[1][0] : '')).toUpperCase()
}

/** showLocal shows our own picture, or "camera off" in its place. */
function showLocal () {
  const call = app.call
  const local = $('#local-video')
  local.muted = true
  const stream = call && call.stream
  const hasVideo = !!stream && stream.getVideoTracks().some((t) => t.readyState === 'live')
  if (local.srcObject !== stream) local.srcObject = stream
  local.hidden = !stream || !hasVideo || call.cameraOff
  $('#local-off').hidden = !(call && call.cameraOff)
  if (!local.hidden) local.play().catch(() => {})
}

function renderControls () {
  const call = app.call
  const muted = !!(call && call.muted)
  const off = !!(call && call.cameraOff)
  const hasAudio = !!(call && call.stream && call.stream.getAudioTracks().length)
  const hasVideo = !!(call && call.stream && call.stream.getVideoTracks().length)
  const mute = $('#btn-mute')
  mute.setAttribute('aria-pressed', String(muted))
  mute.setAttribute('aria-label', muted ? 'Unmute microphone' : 'Mute microphone')
  mute.title = mute.getAttribute('aria-label')
  mute.querySelector('.lbl').textContent = muted ? 'Unmute' : 'Mute'
  mute.disabled = !hasAudio
  const cam = $('#btn-camera')
  cam.setAttribute('aria-pressed', String(off))
  cam.setAttribute('aria-label', off ? 'Turn camera on' : 'Turn camera off')
  cam.title = cam.getAttribute('aria-label')
  cam.querySelector('.lbl').textContent = off ? 'Camera on' : 'Camera off'
  cam.disabled = !hasVideo
  $('#local-muted').hidden = !muted
}

/** renderStage updates the placeholder, the quality badge and the unstable banner. */
function renderStage () {
  const call = app.call
  if (!call) return
  const q = call.quality
  const media = call.media
  const videoOff = !!(q && q.remoteVideoOff) || call.remoteTrackMuted || call.remoteBlack
  const ph = $('#remote-placeholder')
  let why = ''
  if (!media) why = call.reconnecting ? 'reconnecting…' : 'connecting…'
  else if (!call.firstFrameAt && !videoOff) why = 'waiting for video…'
  else if (videoOff) why = 'camera off'
  ph.hidden = why === ''
  ph.dataset.why = why
  $('#remote-why').textContent = why
  const selfReconnecting = app.offline || !!call.reconnecting
  const unstable = selfReconnecting || call.peerReconnecting || (!!media && (call.ice === 'disconnected' || call.ice === 'failed' || !!(q && q.unstable)))
  const banner = $('#call-unstable')
  banner.hidden = !unstable
  banner.dataset.why = call.peerReconnecting ? 'peer' : selfReconnecting ? 'self' : 'media'
  banner.textContent = call.peerReconnecting
    ? `${call.peer} is reconnecting…`
    : selfReconnecting ? 'Reconnecting…' : 'Connection unstable — reconnecting…'
  const el = $('#quality')
  const score = unstable ? 'poor' : q ? q.score : 'unknown'
  el.dataset.score = score
  el.hidden = !media
  const parts = []
  if (q && q.rtt !== null && q.rtt !== undefined) parts.push(`round trip ${Math.round(q.rtt * 1000)} ms`)
  if (q && q.loss !== null && q.loss !== undefined) parts.push(`loss ${(q.loss * 100).toFixed(1)} %`)
  if (q && q.fps !== null && q.fps !== undefined) parts.push(`${Math.round(q.fps)} fps`)
  if (q && q.mode === 'relay' && q.lag !== null) parts.push(`${q.lag.toFixed(2)} s behind`)
  const label = { good: 'Good', fair: 'Fair', poor: 'Poor', unknown: '…' }[score]
  $('#quality-text').textContent = label
  el.title = `Connection ${label.toLowerCase()}${parts.length ? ': ' + parts.join(', ') : ''}${call.mode ? ` (${call.mode})` : ''}`
  el.setAttribute('aria-label', el.title)
}

function formatDuration (ms) {
  const t = Math.max(0, Math.floor(ms / 1000))
  const h = Math.floor(t / 3600)
  const m = Math.floor((t % 3600) / 60)
  const sec = String(t % 60).padStart(2, '0')
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`
}

function startCallTimer (call) {
  clearInterval(call.timer)
  $('#call-timer').hidden = false
  const tick = () => { if (app.call === call) $('#call-timer').textContent = formatDuration(Date.now() - call.connectedAt) }
  tick()
  call.timer = setInterval(tick, 1000)
}

/**
 * watchRemote notes when the first remote frame is shown (for the "waiting
 * for video" placeholder and the accept-to-first-frame figure) and, once a
 * second, whether the remote picture is all black: a relay sender whose
 * camera is off records black frames, which should look like camera off.
 */
function watchRemote (call) {
  const v = $('#remote-video')
  const first = () => {
    if (app.call !== call) return
    if (!call.firstFrameAt && v.videoWidth > 0) {
      call.firstFrameAt = Date.now()
      renderStage()
    }
  }
  const onFrame = () => {
    first()
    if (!call.firstFrameAt && app.call === call) v.requestVideoFrameCallback(onFrame)
  }
  if (typeof v.requestVideoFrameCallback === 'function') v.requestVideoFrameCallback(onFrame)
  else v.addEventListener('loadeddata', first, { once: true })
  const canvas = document.createElement('canvas')
  canvas.width = 32
  canvas.height = 18
  const g = canvas.getContext('2d', { willReadFrequently: true })
  clearInterval(call.watch)
  call.watch = setInterval(() => {
    if (app.call !== call) return
    first()
    if (!g || !call.media || v.videoWidth === 0 || v.readyState < 2) return
    try {
      g.drawImage(v, 0, 0, canvas.width, canvas.height)
      const px = g.getImageData(0, 0, canvas.width, canvas.height).data
      let max = 0
      for (let i = 0; i < px.length; i += 4) max = Math.max(max, px[i], px[i + 1], px[i + 2])
      const black = max < 12
      if (black !== call.remoteBlack) {
        call.remoteBlack = black
        renderStage()
      }
    } catch { /* not drawable yet */ }
  }, 1000)
}

function toggleMute () {
  const call = app.call
  if (!call) return
  call.muted = !call.muted
  if (call.stream) call.stream.getAudioTracks().forEach((t) => { t.enabled = !call.muted })
  if (call.media) call.media.setMuted(call.muted)
  renderControls()
}

/**
 * toggleCamera turns the camera off or on. With WebRTC the video sender
 * stops (the peer sees our placeholder) and the camera itself is released
 * (its light goes off); turning it on asks for the camera again. The relay
 * can only send black frames (the peer's app shows the placeholder for
 * those too).
 */
async function toggleCamera () {
  const call = app.call
  if (!call || !call.stream) return
  const on = call.cameraOff
  call.cameraOff = !on
  renderControls()
  const media = call.media
  let track = call.stream.getVideoTracks()[0]
  try {
    if (!on) {
      if (media) await media.setCamera(false)
      if (track) {
        if (media && media.mode === 'webrtc') track.stop()
        else track.enabled = false
      }
    } else {
      if (track && track.readyState === 'ended') track = await swapTrack(call, 'video', settingsGet('camera'))
      if (track) track.enabled = true
      if (media) {
        if (media.mode === 'webrtc' && track) await media.replaceTrack('video', track)
        await media.setCamera(true)
      }
    }
  } catch (err) {
    showError(`Could not switch the camera: ${err.message || err}`)
  }
  showLocal()
}

/**
 * swapTrack opens the device (deviceId, or the default) for kind and puts
 * its track into the call's stream in place of the old one, which it stops.
 * Returns the new track.
 */
async function swapTrack (call, kind, deviceId) {
  const c = deviceId ? { deviceId: { exact: deviceId } } : true
  const s = await navigator.mediaDevices.getUserMedia(kind === 'video' ? { video: c } : { audio: c })
  const track = s.getTracks()[0]
  if (app.call !== call) { track.stop(); return null }
  if (kind === 'audio') track.enabled = !call.muted
  for (const old of call.stream.getTracks().filter((t) => t.kind === kind)) {
    call.stream.removeTrack(old)
    old.stop()
  }
  call.stream.addTrack(track)
  return track
}

/** switchDevice moves a running call to another camera or microphone. */
async function switchDevice (kind, deviceId) {
  const call = app.call
  if (!call || !call.stream) return
  if (call.media && call.media.mode !== 'webrtc') {
    $('#settings-hint').textContent = 'The relay connection keeps its devices for the whole call; your choice applies from the next call.'
    return
  }
  if (kind === 'video' && call.cameraOff) return // used when the camera is turned on again
  try {
    const track = await swapTrack(call, kind, deviceId)
    if (track && call.media) await call.media.replaceTrack(kind, track)
    showLocal()
    if (settingsOpen()) showPreview()
  } catch (err) {
    showError(`Could not switch to that ${kind === 'video' ? 'camera' : 'microphone'}: ${err.message || err}`)
  }
}

// ---- settings: devices, media mode, notifications ----------------------------------

/** settingsGet/Set keep the device and mode choices in localStorage (never anything secret). */
function settingsGet (key) {
  try { return localStorage.getItem(`umplug.${key}`) || '' } catch { return '' }
}
function settingsSet (key, value) {
  try { localStorage.setItem(`umplug.${key}`, value) } catch { /* private mode: choices last this page only */ }
}

/**
 * mediaSetting is the media connection to use: ?media=relay|webrtc|auto on
 * the page URL (also remembered), else the setting, else auto.
 */
function mediaSetting () {
  const q = new URLSearchParams(location.search).get('media')
  if (q === 'auto' || q === 'webrtc' || q === 'relay') return q
  const m = settingsGet('media')
  return m === 'webrtc' || m === 'relay' ? m : 'auto'
}

/** constraints asks for the chosen devices, falling back to any when they are gone. */
function constraints () {
  const cam = settingsGet('camera')
  const mic = settingsGet('mic')
  return {
    video: cam ? { deviceId: { ideal: cam } } : true,
    audio: mic ? { deviceId: { ideal: mic } } : true
  }
}

const settingsUI = { preview: null, meter: null, raf: 0 }

function settingsOpen () { return !$('#settings').hidden }

async function openSettings () {
  $('#settings').hidden = false
  $('#set-mode').value = mediaSetting()
  $('#settings-hint').textContent = ''
  renderNotifyButton()
  await showPreview()
  await listDevices()
}

function closeSettings () {
  $('#settings').hidden = true
  stopPreview()
}

/** showPreview shows the camera (the call's own stream during a call) and a microphone level meter. */
async function showPreview () {
  stopPreview()
  const video = $('#settings-preview')
  let stream = app.call && app.call.stream
  if (!stream) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      $('#settings-hint').textContent = 'This page cannot use the camera (it needs https or localhost).'
      return
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints())
    } catch (err) {
      $('#settings-hint').textContent = `No camera/microphone: ${err.name}.`
      return
    }
    if (!settingsOpen()) { stopStream(stream); return }
    settingsUI.preview = stream // ours: stopped when the panel closes
  }
  video.srcObject = stream
  video.play().catch(() => {})
  startMeter(stream)
}

function stopPreview () {
  cancelAnimationFrame(settingsUI.raf)
  if (settingsUI.meter) { try { settingsUI.meter.disconnect() } catch { /* gone */ } }
  settingsUI.meter = null
  stopStream(settingsUI.preview)
  settingsUI.preview = null
  $('#settings-preview').srcObject = null
}

/** startMeter shows the microphone's level, so that a user sees the right one is picked. */
function startMeter (stream) {
  const ctx = tones.context()
  if (!ctx || stream.getAudioTracks().length === 0) return
  const src = ctx.createMediaStreamSource(stream)
  const an = ctx.createAnalyser()
  an.fftSize = 512
  src.connect(an)
  settingsUI.meter = src
  const buf = new Float32Array(an.fftSize)
  const bar = $('#mic-level')
  const draw = () => {
    an.getFloatTimeDomainData(buf)
    let peak = 0
    for (const x of buf) peak = Math.max(peak, Math.abs(x))
    bar.style.width = `${Math.min(100, Math.round(peak * 140))}%`
    settingsUI.raf = requestAnimationFrame(draw)
  }
  draw()
}

async function listDevices () {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return
  let devices = []
  try { devices = await navigator.mediaDevices.enumerateDevices() } catch { return }
  const fill = (sel, kind, key, fallback) => {
    const chosen = settingsGet(key)
    const list = devices.filter((d) => d.kind === kind)
    const opts = [new Option(fallback, '')]
    list.forEach((d, i) => opts.push(new Option(d.label || `${fallback.replace('Default ', '')} ${i + 1}`, d.deviceId)))
    sel.replaceChildren(...opts)
    sel.value = list.some((d) => d.deviceId === chosen) ? chosen : ''
  }
  fill($('#set-camera'), 'videoinput', 'camera', 'Default camera')
  fill($('#set-mic'), 'audioinput', 'mic', 'Default microphone')
}

async function onDeviceChosen (kind, key, value) {
  settingsSet(key, value)
  if (app.call && app.call.stream) await switchDevice(kind, value)
  else if (settingsOpen()) await showPreview()
}

function renderNotifyButton () {
  const ask = 'Notification' in window && Notification.permission === 'default'
  $('#btn-notify').hidden = !ask
  $('#notify-offer').hidden = !ask
}

/** askNotify asks for notification permission: only ever on a click. */
async function askNotify () {
  if (!('Notification' in window)) return
  try { await Notification.requestPermission() } catch { /* old callback form: ignore */ }
  renderNotifyButton()
  const msg = Notification.permission === 'granted'
    ? 'You will get a notification for incoming calls while this tab is in the background.'
    : 'Notifications are blocked; incoming calls still ring while this tab is open.'
  if (settingsOpen()) $('#settings-hint').textContent = msg
  else showNotice(msg)
}

/** notifyIncoming shows a system notification when a call rings in a hidden tab. */
function notifyIncoming (peer) {
  if (document.visibilityState !== 'hidden' || !('Notification' in window) || Notification.permission !== 'granted') return
  try {
    const n = new Notification(`${peer} is calling`, { body: 'Open umplug to answer.', tag: 'umplug-call', requireInteraction: true })
    n.addEventListener('click', () => { window.focus(); n.close() })
    app.notification = n
  } catch { /* some browsers allow notifications only from a service worker */ }
}

function closeCallNotification () {
  if (app.notification) {
    app.notification.close()
    app.notification = null
  }
}

// ---- tones: ringtone and ringback, made with Web Audio ----------------------------

/**
 * tones plays the ringtone (incoming) and the ringback (outgoing) with
 * oscillators, so the app ships no sound files. Browsers start an
 * AudioContext only after a user gesture: unlock() runs on every click and
 * key press, which also covers the login that comes before any call.
 */
const tones = {
  ctx: null,
  timer: null,
  gain: null,
  context () {
    const AC = window.AudioContext || window.webkitAudioContext
    if (!this.ctx && AC) {
      try { this.ctx = new AC() } catch { return null }
    }
    return this.ctx
  },
  unlock () {
    const ctx = this.context()
    if (ctx && ctx.state === 'suspended') ctx.resume().catch(() => {})
  },
  play (kind) {
    if (app.tone === kind) return
    this.stop()
    const ctx = this.context()
    app.tone = kind
    if (!ctx) return
    if (ctx.state === 'suspended') ctx.resume().catch(() => {})
    this.gain = ctx.createGain()
    this.gain.gain.value = 0.2
    this.gain.connect(ctx.destination)
    // Ringtone: three rising chirps every 2 s. Ringback: the classic
    // 440 + 480 Hz, 2 s on, 4 s off.
    const pattern = kind === 'ring'
      ? { period: 2000, notes: [[0, 0.15, [784]], [0.2, 0.15, [988]], [0.4, 0.25, [1175]]] }
      : { period: 6000, notes: [[0, 2, [440, 480]]] }
    const once = () => {
      const t0 = ctx.currentTime + 0.02
      for (const [at, dur, freqs] of pattern.notes) {
        const env = ctx.createGain()
        env.gain.setValueAtTime(0, t0 + at)
        env.gain.linearRampToValueAtTime(1 / freqs.length, t0 + at + 0.02)
        env.gain.setValueAtTime(1 / freqs.length, t0 + at + dur - 0.03)
        env.gain.linearRampToValueAtTime(0, t0 + at + dur)
        env.connect(this.gain)
        for (const f of freqs) {
          const o = ctx.createOscillator()
          o.frequency.value = f
          o.connect(env)
          o.start(t0 + at)
          o.stop(t0 + at + dur)
        }
      }
    }
    once()
    this.timer = setInterval(once, pattern.period)
  },
  stop () {
    app.tone = null
    clearInterval(this.timer)
    this.timer = null
    if (this.gain) {
      try { this.gain.disconnect() } catch { /* gone */ }
      this.gain = null
    }
  }
}
app.tones = tones

// ---- wiring ------------------------------------------------------------------------

function wire () {
  $('#auth-form').addEventListener('submit', (ev) => { ev.preventDefault(); authenticate(false) })
  $('#btn-register').addEventListener('click', () => {
    if ($('#auth-form').reportValidity()) authenticate(true)
  })
  $('#btn-logout').addEventListener('click', logout)
  $('#btn-reconnect-now').addEventListener('click', reconnectNow)
  window.addEventListener('online', onOnline)
  window.addEventListener('offline', onOffline)
  window.addEventListener('pagehide', onPageHide)
  $('#btn-missed').addEventListener('click', () => togglePanel('#missed'))
  $('#btn-missed-close').addEventListener('click', closePanels)
  $('#btn-missed-clear').addEventListener('click', clearMissed)
  $('#btn-account').addEventListener('click', () => togglePanel('#account'))
  $('#btn-account-close').addEventListener('click', closePanels)
  $('#passwd-form').addEventListener('submit', changePassword)
  $('#btn-error-close').addEventListener('click', clearError)
  $('#btn-notice-close').addEventListener('click', clearNotice)
  $('#peer-form').addEventListener('submit', addPeer)
  $('#status-form').addEventListener('submit', setStatus)
  $('#btn-cancel').addEventListener('click', cancelCall)
  $('#btn-accept').addEventListener('click', acceptCall)
  $('#btn-reject').addEventListener('click', rejectCall)
  $('#btn-hangup').addEventListener('click', hangUp)
  $('#btn-mute').addEventListener('click', toggleMute)
  $('#btn-camera').addEventListener('click', toggleCamera)
  $('#btn-settings').addEventListener('click', () => (settingsOpen() ? closeSettings() : openSettings()))
  $('#btn-call-settings').addEventListener('click', () => (settingsOpen() ? closeSettings() : openSettings()))
  $('#btn-settings-close').addEventListener('click', closeSettings)
  $('#set-camera').addEventListener('change', (e) => onDeviceChosen('video', 'camera', e.target.value))
  $('#set-mic').addEventListener('change', (e) => onDeviceChosen('audio', 'mic', e.target.value))
  $('#set-mode').addEventListener('change', (e) => {
    settingsSet('media', e.target.value)
    $('#settings-hint').textContent = app.call && app.call.media ? 'The media connection applies from the next call.' : ''
  })
  $('#btn-notify').addEventListener('click', askNotify)
  $('#btn-notify-home').addEventListener('click', askNotify)
  renderNotifyButton()
  for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, () => tones.unlock(), { capture: true })
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener('devicechange', () => { if (settingsOpen()) listDevices() })
  }
  const remote = $('#remote-video')
  remote.addEventListener('playing', () => {
    if (app.call && app.call.media) setPhase(app.call.stream ? 'connected' : 'connected (receive only)')
  })
  $('#btn-play').addEventListener('click', () => {
    remote.play().then(() => { $('#btn-play').hidden = true }).catch(() => {})
  })
  $('#insecure').hidden = window.isSecureContext
  // A stored session logs in by itself (a reload, a new tab, a browser
  // restart); a reloaded tab also resumes its device and call.
  const s = storedSession()
  if (s) {
    app.session = s
    app.device = storedDevice(s.user)
    app.droppedAt = storedDropAt()
    $('#me').textContent = s.user
  }
  setState('logged-out')
  if (s) tryReconnect()
}

wire()

