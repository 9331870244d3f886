// The umplug web app: log in, keep a peers list with live presence, and make
// and take video calls. Plain DOM code on top of umplug.js; the server runs
// the call state machine, this file only mirrors it on screen.
//
// Screen states (shown in #state, also as data-state): logged-out, idle,
// ringing (we call), incoming (we are called), in-call.

import { UmplugClient, UmplugError } from '/umplug.js'

const $ = (sel) => document.querySelector(sel)
const PEERS_REFRESH_MS = 4000 // becoming a mutual peer sends no event: poll the list while idle

const app = {
  client: null,
  state: 'logged-out',
  creds: null, // {user, password} kept in memory only, for Reconnect
  peers: new Map(), // name -> {user, mutual, online, status}
  call: null, // {peer, tx, role: 'caller'|'callee', stream, media, ended}
  refreshTimer: null,
  mediaErrors: [] // SourceBuffer/decoder problems, for diagnosis
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
      case 'shutdown': return 'The call ended: the server is shutting down.'
    }
  }
  return `The call with ${p} ended${reason ? ` (${reason})` : ''}.`
}

function showError (text, { reconnect = false } = {}) {
  $('#error-text').textContent = text
  $('#btn-reconnect').hidden = !reconnect
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
  $('#auth').hidden = s !== 'logged-out'
  $('#home').hidden = s !== 'idle'
  $('#outgoing').hidden = s !== 'ringing'
  $('#incoming').hidden = s !== 'incoming'
  $('#call').hidden = s !== 'in-call'
  $('#btn-logout').hidden = s === 'logged-out'
  $('#me').hidden = s === 'logged-out'
  document.title = s === 'incoming' && app.call ? `${app.call.peer} is calling – umplug` : 'umplug'
  renderPeers()
}

function setPhase (text) { $('#call-phase').textContent = text }

// ---- connection and login ---------------------------------------------------

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
    try {
      await client.login(creds.user, creds.password)
    } catch (err) {
      showError(humanError(err, { action: 'login' }))
      return
    }
    loggedIn(creds)
    if (register) showNotice(`Welcome, ${creds.user}! Add a peer by name to get started.`)
  } finally {
    buttons.forEach((b) => { b.disabled = false })
  }
}

function loggedIn (creds) {
  app.creds = creds
  $('#reg-pass').value = ''
  $('#me').textContent = creds.user
  setState('idle')
  refreshPeers()
  clearInterval(app.refreshTimer)
  app.refreshTimer = setInterval(() => { if (app.state === 'idle') refreshPeers() }, PEERS_REFRESH_MS)
}

function logout () {
  clearInterval(app.refreshTimer)
  endCall(null)
  app.creds = null
  app.peers.clear()
  const c = app.client
  app.client = null
  if (c) c.close()
  clearError()
  clearNotice()
  setState('logged-out')
}

function onClosed (client, detail) {
  if (client !== app.client) return // an old connection we closed on purpose
  clearInterval(app.refreshTimer)
  if (app.call) endCall(null)
  app.client = null
  setState('logged-out')
  if (app.creds) showError(`Lost the connection to the server${detail && detail.code ? ` (code ${detail.code})` : ''}.`, { reconnect: true })
}

async function reconnect () {
  const creds = app.creds
  clearError()
  if (!creds) return
  try {
    const client = await ensureClient()
    await client.login(creds.user, creds.password)
    loggedIn(creds)
  } catch (err) {
    showError(humanError(err, { action: 'login' }), { reconnect: true })
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
    call.disabled = !(p.mutual && p.online && app.state === 'idle')
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
    await app.client.addPeers([name])
    input.value = ''
    await refreshPeers()
  } catch (err) {
    showError(humanError(err, { peer: name }))
  }
}

async function removePeer (name) {
  clearError()
  try {
    await app.client.delPeers([name])
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
    await app.client.setStatus(status)
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
    return await navigator.mediaDevices.getUserMedia({ video: true, audio: true })
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
  app.call = { peer, tx: null, role: 'caller', stream: null, media: null }
  const call = app.call
  $('#outgoing-peer').textContent = peer
  setState('ringing')
  call.stream = await getMedia()
  if (app.call !== call) { stopStream(call.stream); return } // ended meanwhile
  try {
    call.tx = await app.client.call(peer)
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
    await app.client.cancel(call.peer)
  } catch (err) {
    if (err.code !== 'no-call' && err.code !== 'closed') showError(humanError(err, { peer: call.peer }))
  }
}

function onIncomingCall (ev) {
  const { user: peer, tx } = ev.detail
  if (app.state !== 'idle') return // the server answers busy; nothing to show
  clearError()
  clearNotice()
  app.call = { peer, tx, role: 'callee', stream: null, media: null }
  $('#incoming-peer').textContent = peer
  setState('incoming')
}

async function acceptCall () {
  const call = app.call
  if (!call || app.state !== 'incoming') return
  $('#btn-accept').disabled = true
  try {
    call.stream = await getMedia()
    if (app.call !== call) { stopStream(call.stream); return } // cancelled while asking for the camera
    enterCall(call)
    await app.client.accept(call.peer, call.tx)
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
    await app.client.reject(call.peer, call.tx)
  } catch (err) {
    if (err.code !== 'no-call' && err.code !== 'closed') showError(humanError(err, { peer: call.peer }))
  }
}

function onAccepted (ev) {
  const call = app.call
  if (!call || ev.detail.user !== call.peer) return
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
  endCall(endReason('unpair', ev.detail.reason, call.peer))
}

/** enterCall switches to the in-call view and shows the local preview. */
function enterCall (call) {
  if (app.state === 'in-call') return
  $('#call-peer').textContent = call.peer
  setPhase('connecting…')
  const local = $('#local-video')
  local.muted = true
  local.srcObject = call.stream
  local.hidden = !call.stream
  if (call.stream) local.play().catch(() => {})
  $('#btn-play').hidden = true
  setState('in-call')
}

async function onForceCall (ev) {
  const fc = ev.detail
  const call = app.call
  if (!call || fc.peer !== call.peer) return
  enterCall(call) // glare, or force-call before accept's res
  setPhase('waiting for the other side…')
  const remote = $('#remote-video')
  remote.muted = false
  try {
    call.media = await app.client.startMedia(fc, { localStream: call.stream, remoteVideo: remote })
  } catch (err) {
    if (app.call === call) {
      endCall(null)
      showError(humanError(err, { peer: call.peer }))
      app.client && app.client.unpair(call.peer).catch(() => {})
    }
    return
  }
  if (app.call !== call) { call.media.stop(); return }
  setPhase(call.stream ? 'connected' : 'connected (receive only)')
  call.media.ended.then((end) => {
    if (app.call !== call) return
    // 1000 "unpaired" comes with an unpair event that explains why; anything
    // else means the media path broke.
    if (end.code === 1000) {
      setTimeout(() => { if (app.call === call) endCall(`The call with “${call.peer}” ended.`) }, 1500)
    } else {
      endCall(`The call with “${call.peer}” lost its media connection.`)
      app.client && app.client.unpair(call.peer).catch(() => {})
    }
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
  try {
    await app.client.unpair(call.peer)
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
  }
  const local = $('#local-video')
  local.srcObject = null
  const remote = $('#remote-video')
  remote.removeAttribute('src')
  remote.load()
  if (message) showNotice(message)
  setState(app.client && app.creds ? 'idle' : 'logged-out')
  if (app.state === 'idle') refreshPeers()
}

// ---- wiring ------------------------------------------------------------------------

function wire () {
  $('#auth-form').addEventListener('submit', (ev) => { ev.preventDefault(); authenticate(false) })
  $('#btn-register').addEventListener('click', () => {
    if ($('#auth-form').reportValidity()) authenticate(true)
  })
  $('#btn-logout').addEventListener('click', logout)
  $('#btn-reconnect').addEventListener('click', reconnect)
  $('#btn-error-close').addEventListener('click', clearError)
  $('#btn-notice-close').addEventListener('click', clearNotice)
  $('#peer-form').addEventListener('submit', addPeer)
  $('#status-form').addEventListener('submit', setStatus)
  $('#btn-cancel').addEventListener('click', cancelCall)
  $('#btn-accept').addEventListener('click', acceptCall)
  $('#btn-reject').addEventListener('click', rejectCall)
  $('#btn-hangup').addEventListener('click', hangUp)
  const remote = $('#remote-video')
  remote.addEventListener('playing', () => {
    if (app.call && app.call.media) setPhase(app.call.stream ? 'connected' : 'connected (receive only)')
  })
  $('#btn-play').addEventListener('click', () => {
    remote.play().then(() => { $('#btn-play').hidden = true }).catch(() => {})
  })
  $('#insecure').hidden = window.isSecureContext
  setState('logged-out')
}

wire()

