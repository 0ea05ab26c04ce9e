#!/usr/bin/env node
// trit's delegation bridge: a device's `trit serve` reached by public key over HyperDHT.
//
//   trit-peer key      [--key-file F]                       create once, print the public key
//   trit-peer provide  --serve URL [--allow F] [--key-file F] [--bootstrap H:P,...]
//                      [--relay KEY[,KEY...]] [--no-direct]
//   trit-peer provide  -m MODEL [...] [-- trit serve options]   starts its own trit serve
//   trit-peer connect  KEY [--listen HOST:PORT] [--key-file F] [--bootstrap H:P,...]
//                      [--relay KEY[,KEY...]] [--no-direct]
//   trit-peer relay    [--allow F] [--key-file F] [--bootstrap H:P,...]   a blind relay
//   trit-peer testnet  [--size N]                            a local DHT for tests
//
// A provider answers only the public keys of its allow list, refused at the handshake (the
// firewall runs before any byte of a request is read); the list is read again when the file
// changes. A consumer forwards every local TCP connection as one encrypted stream to the
// provider, which forwards it to its local server: the whole HTTP API, streaming included.
// Peers that cannot reach each other (both behind firewalls that defeat hole punching) meet
// through a blind relay (`relay`, on any reachable machine): with --relay, a stream opens
// through it when no direct path wins the race; the relay forwards the Noise-encrypted packets
// and cannot read them. --no-direct skips the direct paths altogether.
// Every line on stderr starts with "trit peer:"; lines a caller waits for are on stdout.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import DHT from 'hyperdht'
import createTestnet from 'hyperdht/testnet.js'
import BlindRelay from 'blind-relay'

const RelayServer = BlindRelay.Server
const say = (line) => process.stderr.write(`trit peer: ${line}\n`)
// A reader that keeps only the first line (trit generate --delegate reads the port and closes
// the pipe) must not end the program: later lines are information, and losing them is fine.
process.stdout.on('error', () => {})
process.stderr.on('error', () => {})

class UsageError extends Error {}

// Both directions of two duplex streams, each end passed on once its data is through. Not
// stream.pipeline: it takes a side that closes after its end (an HTTP server answering
// `Connection: close`) for a failure and destroys the other side with the answer's tail
// still unsent. An error on either side ends both.
function splice (a, b) {
  a.pipe(b)
  b.pipe(a)
  a.on('error', () => b.destroy())
  b.on('error', () => a.destroy())
}

function fail (message) {
  throw new UsageError(message)
}

// --name value pairs, --flag switches (true when present) and positionals (-m is --model).
// What follows `--` is returned as passed.
function parseArgs (argv, known, flags = []) {
  const opts = {}
  const rest = []
  const passed = []
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    if (a === '--') {
      passed.push(...argv.slice(i + 1))
      break
    }
    if (a === '-m' && known.includes('model')) a = '--model'
    if (!a.startsWith('--')) {
      rest.push(a)
      continue
    }
    const name = a.slice(2)
    if (flags.includes(name)) {
      opts[name] = true
      continue
    }
    if (!known.includes(name)) fail(`unknown option ${a} (expected one of ${[...known, ...flags].map((k) => '--' + k).join(', ')})`)
    if (i + 1 >= argv.length) fail(`${a} needs a value`)
    opts[name] = argv[++i]
  }
  return { opts, rest, passed }
}

function configDir () {
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config')
  return path.join(base, 'trit')
}

function defaultKeyFile () {
  return path.join(configDir(), 'peer-key')
}

const HEX64 = /^[0-9a-f]{64}$/

// The key pair of a key file (the 32-byte seed in hex): created with mode 0600 when absent;
// refused when others may read it.
function loadKeyPair (file, create) {
  if (!fs.existsSync(file)) {
    if (!create) fail(`${file}: no key file (run \`trit peer key\` first)`)
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
    const seed = DHT.keyPair().secretKey.subarray(0, 32)
    const tmp = `${file}.tmp-${process.pid}`
    fs.writeFileSync(tmp, seed.toString('hex') + '\n', { mode: 0o600, flag: 'wx' })
    fs.renameSync(tmp, file) // never a partial key file in place
  }
  const st = fs.statSync(file)
  if ((st.mode & 0o077) !== 0) {
    fail(`${file}: permissions ${(st.mode & 0o777).toString(8)} let others read the key; expected 600 (chmod 600 ${file})`)
  }
  const text = fs.readFileSync(file, 'utf8').trim()
  if (!HEX64.test(text)) fail(`${file}: expected 64 hexadecimal characters (a 32-byte seed), got ${JSON.stringify(text.slice(0, 16))}…`)
  return DHT.keyPair(Buffer.from(text, 'hex'))
}

function parseKey (text, where) {
  const t = text.trim().toLowerCase()
  if (!HEX64.test(t)) fail(`${where}: expected a public key of 64 hexadecimal characters, got ${JSON.stringify(text.slice(0, 70))}`)
  return t
}

function parseHostPort (text, what) {
  const at = text.lastIndexOf(':')
  const port = Number(text.slice(at + 1))
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) fail(`${what}: expected HOST:PORT, got ${JSON.stringify(text)}`)
  return { host: text.slice(0, at), port }
}

// A DHT node; a bootstrap list of loopback addresses is a local testnet, which the node joins
// on 127.0.0.1.
function makeNode (opts, keyPair) {
  if (!opts.bootstrap) return new DHT({ keyPair })
  const bootstrap = opts.bootstrap.split(',').map((b) => parseHostPort(b, '--bootstrap'))
  const local = bootstrap.every((b) => b.host === '127.0.0.1' || b.host === 'localhost')
  return new DHT({ keyPair, bootstrap, ...(local ? { host: '127.0.0.1' } : {}) })
}

// The allow list: one public key a line, `#` comments; read again when the file changes.
function allowList (file) {
  let stamp = null
  let keys = new Set()
  return () => {
    let st = null
    try {
      st = fs.statSync(file)
    } catch {
      if (stamp !== 'missing') say(`allow list ${file} is missing: every peer is refused`)
      stamp = 'missing'
      keys = new Set()
      return keys
    }
    const now = `${st.mtimeMs}:${st.size}:${st.ino}`
    if (now === stamp) return keys
    const next = new Set()
    fs.readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
      const t = line.replace(/#.*/, '').trim()
      if (!t) return
      if (HEX64.test(t.toLowerCase())) next.add(t.toLowerCase())
      else say(`${file}:${i + 1}: not a public key, ignored: ${JSON.stringify(t.slice(0, 70))}`)
    })
    keys = next
    stamp = now
    say(`allow list ${file}: ${keys.size} key${keys.size === 1 ? '' : 's'}`)
    return keys
  }
}

function short (key) {
  return key.toString('hex')
}

// --relay KEY[,KEY...] and --no-direct: the blind relays a stream may go through (one picked at
// random a connection) and whether the direct paths (hole punching, the LAN) are skipped.
function relayOptions (opts) {
  const relays = opts.relay
    ? opts.relay.split(',').map((k) => Buffer.from(parseKey(k, '--relay'), 'hex'))
    : null
  if (opts['no-direct'] && !relays) fail('--no-direct needs --relay KEY: without a direct path a stream can only go through a relay')
  return { relays, direct: !opts['no-direct'] }
}

function describeRelays ({ relays, direct }) {
  if (!relays) return ''
  const keys = relays.map(short).join(',')
  return direct ? ` (relay ${keys} when no direct path opens)` : ` (through relay ${keys} only)`
}

async function cmdKey (argv) {
  const { opts, rest } = parseArgs(argv, ['key-file'])
  if (rest.length) fail(`key: unexpected argument ${rest[0]}`)
  const kp = loadKeyPair(opts['key-file'] || defaultKeyFile(), true)
  process.stdout.write(kp.publicKey.toString('hex') + '\n')
}

// `trit serve -m MODEL --port 0 ARGS` as a child: resolves with its URL once it listens; its
// stderr passes through. The provider ends when it does.
function startServe (model, args) {
  const bin = process.env.TRIT_BIN || 'trit'
  const child = spawn(bin, ['serve', '-m', model, '--host', '127.0.0.1', '--port', '0', ...args], {
    stdio: ['ignore', 'inherit', 'pipe']
  })
  return new Promise((resolve, reject) => {
    let text = ''
    let url = null
    child.stderr.on('data', (d) => {
      process.stderr.write(d)
      if (url) return
      text += d.toString()
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(text)
      if (m) {
        url = m[1]
        resolve({ child, url })
      }
    })
    child.on('error', (e) => reject(new UsageError(`-m: cannot start ${bin} serve: ${e.message}`)))
    child.on('exit', (code, signal) => {
      if (!url) reject(new UsageError(`-m ${model}: trit serve exited (${signal || code}) before listening`))
      else if (!stopping) {
        say(`trit serve exited (${signal || code}); stopping`)
        process.exit(1)
      }
    })
  })
}
let stopping = false // set once a signal asks the command to end

async function cmdProvide (argv) {
  const { opts, rest, passed } = parseArgs(argv, ['serve', 'model', 'allow', 'key-file', 'bootstrap', 'relay'], ['no-direct'])
  if (rest.length) fail(`provide: unexpected argument ${rest[0]}`)
  const relay = relayOptions(opts)
  if (!opts.serve && !opts.model) {
    fail('provide: give --serve http://HOST:PORT (a running trit serve) or -m MODEL (one is started)')
  }
  if (opts.serve && opts.model) fail('provide: --serve and -m exclude each other')
  if (passed.length && !opts.model) fail('provide: options after -- go to the trit serve that -m starts')
  const served = opts.model ? await startServe(opts.model, passed) : null
  if (served) opts.serve = served.url
  const target = parseHostPort(opts.serve.replace(/^http:\/\//, '').replace(/\/$/, ''), '--serve')
  const allowFile = opts.allow || path.join(configDir(), 'peer-allow')
  const allowed = allowList(allowFile)
  allowed()
  const keyPair = loadKeyPair(opts['key-file'] || defaultKeyFile(), true)
  const node = makeNode(opts, keyPair)
  const server = node.createServer({
    // Runs on the handshake, before the stream exists: true refuses.
    firewall: (remotePublicKey) => {
      const key = short(remotePublicKey)
      const ok = allowed().has(key)
      if (!ok) say(`refused ${key}: not in ${allowFile}`)
      return !ok
    },
    ...(relay.relays ? { relayThrough: relay.relays } : {}),
    // No hole punching and no local addresses shared: only the relay can carry a stream.
    ...(relay.direct ? {} : { holepunch: false, shareLocalAddress: false })
  }, (stream) => {
    const key = short(stream.remotePublicKey)
    say(`connected ${key}`)
    stream.on('error', () => {})
    // The server is reached at the stream's first byte: a consumer keeps a spare stream open
    // ahead of its next request, which must not hold a connection of the server meanwhile.
    let spliced = false
    stream.once('data', (first) => {
      spliced = true
      stream.pause()
      const local = net.connect({ port: target.port, host: target.host, allowHalfOpen: true })
      local.setNoDelay(true) // small writes (one token an event) go out at once
      local.on('error', (e) => say(`${opts.serve}: ${e.message}`))
      local.write(first)
      splice(stream, local)
      stream.resume()
    })
    stream.once('end', () => { if (!spliced) stream.end() }) // a spare that was never used
  })
  await server.listen(keyPair)
  process.stdout.write(`providing ${keyPair.publicKey.toString('hex')} -> ${opts.serve}${describeRelays(relay)}\n`)
  await untilSignal(async () => {
    await server.close()
    await node.destroy()
    if (served && served.child.exitCode === null) {
      const exited = new Promise((resolve) => served.child.once('exit', resolve))
      served.child.kill('SIGTERM') // running answers end and a job checkpoints
      await exited
    }
  })
}

async function cmdConnect (argv) {
  const { opts, rest } = parseArgs(argv, ['listen', 'key-file', 'bootstrap', 'relay'], ['no-direct'])
  if (rest.length !== 1) fail('connect: expected one argument, the provider\'s public key')
  const relay = relayOptions(opts)
  const remote = Buffer.from(parseKey(rest[0], 'connect'), 'hex')
  const listen = parseHostPort(opts.listen || '127.0.0.1:8080', '--listen')
  const keyPair = loadKeyPair(opts['key-file'] || defaultKeyFile(), true)
  const connectOptions = {
    keyPair,
    ...(relay.relays ? { relayThrough: relay.relays } : {}),
    // No hole punching, no LAN shortcut, no fast open: only the relay can carry the stream.
    ...(relay.direct ? {} : { holepunch: () => false, localConnection: false, fastOpen: false })
  }
  const node = makeNode(opts, keyPair)
  // Join the DHT before taking local connections: the first request then looks the provider up
  // at once instead of waiting behind the bootstrap.
  await node.fullyBootstrapped()
  // Each local connection is one stream to the provider: a dropped provider costs the requests
  // in flight, and the next request connects afresh (a client may retry a request whose
  // connection failed: the DHT can time out a first attempt, e.g. right after a refusal).
  // A spare stream is opened ahead of the next connection, so that a request does not wait
  // for the DHT's handshake (milliseconds on a LAN, a second or more through a relay).
  const spares = spareStreams(() => node.connect(remote, connectOptions))
  const local = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => {
    const { stream, opened } = spares.take()
    let connected = opened // after the handshake, an error is the connection closing
    stream.on('connect', () => { connected = true })
    stream.on('error', (e) => {
      if (!connected) say(`provider ${rest[0]}: ${e.message}`)
      sock.destroy()
    })
    sock.on('error', () => {})
    splice(sock, stream)
  })
  await new Promise((resolve, reject) => {
    local.once('error', (e) => reject(new UsageError(`--listen ${listen.host}:${listen.port}: ${e.message}`)))
    local.listen(listen.port, listen.host, resolve)
  })
  const port = local.address().port
  process.stdout.write(`listening on http://${listen.host}:${port} -> ${rest[0]}${describeRelays(relay)}\n`)
  probe(listen.host, port, rest[0])
  await untilSignal(async () => {
    local.close()
    spares.close()
    await node.destroy()
  })
}

// One stream kept open ahead of need. take() returns it (or a new stream when there is none
// or it closed) and opens the next spare. A spare that fails (the provider gone, or refusing)
// is tried again after a pause that doubles up to 30 s, and only once a connection takes it,
// so an unreachable provider costs nothing while nobody asks.
function spareStreams (open) {
  let spare = null
  let opened = false
  let failures = 0
  let closed = false
  const make = () => {
    const s = open()
    let isOpen = false
    s.on('connect', () => {
      isOpen = true
      if (s === spare) opened = true
      failures = 0
    })
    s.on('error', () => {
      if (s === spare && !isOpen) failures++
    })
    s.on('close', () => {
      if (s === spare) spare = null
    })
    return s
  }
  const refill = () => {
    if (closed || spare) return
    spare = make()
    opened = false
  }
  let timer = null
  const scheduleRefill = () => {
    if (failures === 0) return refill()
    if (timer) return
    timer = setTimeout(() => { timer = null; refill() }, Math.min(30000, 500 * 2 ** failures))
  }
  return {
    take () {
      const fresh = !spare || spare.destroyed
      const stream = fresh ? make() : spare
      const wasOpened = !fresh && opened
      spare = null
      scheduleRefill()
      return { stream, opened: wasOpened }
    },
    close () {
      closed = true
      if (timer) clearTimeout(timer)
      if (spare) spare.destroy()
      spare = null
    }
  }
}

// One GET /health through the tunnel: the provider's device and model, and the round trip
// (a fresh DHT connection, so it includes the handshake; then a second request on it).
function probe (host, port, key) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const get = () => new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    const req = http.get({ host, port, path: '/health', agent, timeout: 30000 }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ body, ms: Number(process.hrtime.bigint() - t0) / 1e6 }))
    })
    req.on('timeout', () => req.destroy(new Error('no answer in 30 s')))
    req.on('error', reject)
  })
  // Either request may fail (the provider unreachable, or this command stopping while one is in
  // flight): a failed probe is reported, never a crash.
  const run = async () => {
    try {
      const first = await get()
      const again = await get()
      let h = {}
      try { h = JSON.parse(again.body) } catch {}
      process.stdout.write(`provider ${key}: ${h.device || 'unknown device'}, model ${h.model || 'unknown'}, ` +
        `round trip ${again.ms.toFixed(1)} ms (first, with the connection: ${first.ms.toFixed(1)} ms)\n`)
    } catch (e) {
      if (!stopping) say(`provider ${key} not reachable yet: ${e.message}`)
    } finally {
      agent.destroy()
    }
  }
  run()
}

// A blind relay: pairs the two halves of a stream whose peers asked for it (by a token they
// share) and forwards their packets, which stay encrypted end to end. With --allow, only the
// listed keys may use it.
async function cmdRelay (argv) {
  const { opts, rest } = parseArgs(argv, ['allow', 'key-file', 'bootstrap'])
  if (rest.length) fail(`relay: unexpected argument ${rest[0]}`)
  const allowed = opts.allow ? allowList(opts.allow) : null
  if (allowed) allowed()
  const keyPair = loadKeyPair(opts['key-file'] || defaultKeyFile(), true)
  const node = makeNode(opts, keyPair)
  const relay = new RelayServer({
    createStream: (o) => node.createRawStream({ ...o, framed: true })
  })
  const server = node.createServer({
    firewall: (remotePublicKey) => {
      if (!allowed) return false
      const key = short(remotePublicKey)
      const ok = allowed().has(key)
      if (!ok) say(`refused ${key}: not in ${opts.allow}`)
      return !ok
    }
  }, (socket) => {
    const key = short(socket.remotePublicKey)
    const session = relay.accept(socket, { id: socket.remotePublicKey })
    session.on('pair', (isInitiator) => say(`paired ${key} (${isInitiator ? 'initiator' : 'follower'})`))
    session.on('error', (e) => say(`${key}: ${e.message}`))
    socket.on('error', () => {})
  })
  await server.listen(keyPair)
  process.stdout.write(`relaying ${keyPair.publicKey.toString('hex')}${allowed ? ` for the keys of ${opts.allow}` : ' for any peer'}\n`)
  await untilSignal(async () => {
    await server.close()
    relay.close()
    await node.destroy()
  })
}

async function cmdTestnet (argv) {
  const { opts, rest } = parseArgs(argv, ['size'])
  if (rest.length) fail(`testnet: unexpected argument ${rest[0]}`)
  const size = Number(opts.size || 3)
  if (!Number.isInteger(size) || size < 1) fail(`--size: expected a positive integer, got ${opts.size}`)
  const testnet = await createTestnet(size, { host: '127.0.0.1' })
  process.stdout.write(`bootstrap ${testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')}\n`)
  await untilSignal(() => testnet.destroy())
}

function untilSignal (close) {
  return new Promise((resolve, reject) => {
    const stop = () => {
      stopping = true
      close().then(resolve, reject)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

const commands = { key: cmdKey, provide: cmdProvide, connect: cmdConnect, relay: cmdRelay, testnet: cmdTestnet }

async function main () {
  const [name, ...argv] = process.argv.slice(2)
  const cmd = commands[name]
  if (!cmd) fail(`expected a command: ${Object.keys(commands).join(', ')}${name ? `; got ${JSON.stringify(name)}` : ''}`)
  await cmd(argv)
}

main().then(() => process.exit(0), (e) => {
  say(e instanceof UsageError ? e.message : (e && e.stack) || String(e))
  process.exit(e instanceof UsageError ? 2 : 1)
})
