// trit serve under load: CLIENTS concurrent clients for SECONDS, each looping over a random mix
// of valid requests (completions, streamed chats), malformed JSON, bad fields, bodies over the
// server's limit, unknown routes, clients that read a stream slowly and clients that hang up
// mid-stream. Checks that the server never crashes, that every request is answered with the
// status its kind calls for (or refused with 503 and Retry-After when the queue is full), each
// refusal with OpenAI's error object, and that its resident memory (sampled from /proc every
// 0.5 s) does not grow: the last minute's floor (its lowest sample) at most 5% above the first
// minute's, which starts after 5 s (the slots' KV caches fill first). Each request's buffers come and go above the floor (a few MiB, which arena held
// them deciding how much stays resident for a while); what a leak keeps raises the floor.
//
//   node bench/serve_load.mjs --url http://127.0.0.1:PORT --pid PID [--clients 64]
//        [--seconds 180] [--max-body-mb 1] [--seed 1]
//
// Prints one line a kind of request and a JSON summary; exits 1 on any failure.
import fs from 'node:fs'
import http from 'node:http'

function arg (name, fallback) {
  const i = process.argv.indexOf('--' + name)
  return i > 0 ? process.argv[i + 1] : fallback
}
const url = new URL(arg('url', 'http://127.0.0.1:8080'))
const pid = Number(arg('pid', 0))
const clients = Number(arg('clients', 64))
const seconds = Number(arg('seconds', 180))
const maxBodyMb = Number(arg('max-body-mb', 1))
let seed = Number(arg('seed', 1))
const random = () => { // mulberry32: the same mix of requests for a seed
  seed |= 0
  seed = (seed + 0x6D2B79F5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
const failures = []
const tally = {}
function count (kind, outcome) {
  tally[kind] ??= {}
  tally[kind][outcome] = (tally[kind][outcome] || 0) + 1
}
function failure (kind, what) {
  if (failures.length < 50) failures.push(`${kind}: ${what}`)
  count(kind, 'FAILED')
}

// One request: resolves with { status, headers, body } (body read to its end, slowly when
// `slow`), or { hungUp } when `hangUpAfterFirst` cut it after the first chunk.
function request (method, path, body, { contentType = 'application/json', slow = false, hangUpAfterFirst = false } = {}) {
  return new Promise((resolve) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, agent: hangUpAfterFirst || slow ? false : agent, headers: body === undefined ? {} : { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      const chunks = []
      res.on('data', (d) => {
        chunks.push(d)
        if (hangUpAfterFirst) {
          req.destroy()
          resolve({ hungUp: true, status: res.statusCode })
        } else if (slow) {
          res.pause()
          setTimeout(() => res.resume(), 200)
        }
      })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }))
      res.on('error', (e) => resolve({ error: e.message }))
    })
    req.setTimeout(120000, () => req.destroy(new Error('no answer in 120 s')))
    req.on('error', (e) => resolve({ error: e.message }))
    if (body !== undefined) req.write(body)
    req.end()
  })
}

// An error answer must carry OpenAI's error object with a message.
function hasErrorObject (r) {
  try {
    const j = JSON.parse(r.body)
    return typeof j.error?.message === 'string' && j.error.message.length > 0
  } catch {
    return false
  }
}

// A 503 (queue full) is a refusal with a reason when it says when to come back.
function busy (kind, r) {
  if (r.status !== 503) return false
  if (!r.headers['retry-after'] || !hasErrorObject(r)) failure(kind, '503 without Retry-After or error object')
  else count(kind, '503 busy')
  return true
}

const prompt = 'It is a truth universally acknowledged'
const kinds = {
  async completion () {
    const r = await request('POST', '/v1/completions', JSON.stringify({ prompt, max_tokens: 8, temperature: 0 }))
    if (r.error) return failure('completion', r.error)
    if (busy('completion', r)) return
    if (r.status !== 200) return failure('completion', `status ${r.status}: ${r.body.slice(0, 200)}`)
    const j = JSON.parse(r.body)
    if (typeof j.choices?.[0]?.text !== 'string') return failure('completion', 'no text')
    count('completion', '200')
  },
  async chat_stream () {
    const r = await request('POST', '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 12, stream: true }))
    if (r.error) return failure('chat_stream', r.error)
    if (busy('chat_stream', r)) return
    if (r.status !== 200 || !r.body.trimEnd().endsWith('data: [DONE]')) return failure('chat_stream', `status ${r.status}, no [DONE]: ${r.body.slice(-200)}`)
    count('chat_stream', '200')
  },
  async malformed_json () {
    const r = await request('POST', '/v1/completions', '{"prompt": "x", "max_tokens": ')
    if (r.error) return failure('malformed_json', r.error)
    if (r.status !== 400 || !hasErrorObject(r)) return failure('malformed_json', `status ${r.status}`)
    count('malformed_json', '400')
  },
  async bad_field () {
    const bodies = [{ prompt, max_tokens: -5 }, { prompt, temperature: 'hot' }, { messages: 'hi' }, { prompt, top_p: 7 }, { prompt, n: 3 }]
    const b = bodies[Math.floor(random() * bodies.length)]
    const path = b.messages ? '/v1/chat/completions' : '/v1/completions'
    const r = await request('POST', path, JSON.stringify(b))
    if (r.error) return failure('bad_field', r.error)
    if (r.status !== 400 || !hasErrorObject(r)) return failure('bad_field', `status ${r.status} for ${JSON.stringify(b)}`)
    count('bad_field', '400')
  },
  async oversized () {
    const big = JSON.stringify({ prompt: 'x'.repeat(Math.ceil((maxBodyMb + 0.5) * 1024 * 1024)) })
    const r = await request('POST', '/v1/completions', big)
    // The server may answer 413 before the body is through, or close the connection on it.
    if (r.error) return count('oversized', 'closed')
    if (r.status !== 413 || !hasErrorObject(r)) return failure('oversized', `status ${r.status}`)
    count('oversized', '413')
  },
  async unknown_route () {
    const r = await request('GET', '/v1/nowhere')
    if (r.error) return failure('unknown_route', r.error)
    if (r.status !== 404) return failure('unknown_route', `status ${r.status}`)
    count('unknown_route', '404')
  },
  async slow_reader () {
    const r = await request('POST', '/v1/completions', JSON.stringify({ prompt, max_tokens: 16, stream: true }), { slow: true })
    if (r.error) return failure('slow_reader', r.error)
    if (busy('slow_reader', r)) return
    if (r.status !== 200 || !r.body.includes('[DONE]')) return failure('slow_reader', `status ${r.status}`)
    count('slow_reader', '200')
  },
  async hang_up () {
    const r = await request('POST', '/v1/completions', JSON.stringify({ prompt, max_tokens: 64, stream: true }), { hangUpAfterFirst: true })
    if (r.error) return failure('hang_up', r.error)
    if (r.hungUp) return count('hang_up', r.status === 200 ? 'hung up mid-stream' : `hung up on ${r.status}`)
    if (busy('hang_up', r)) return
    failure('hang_up', `status ${r.status}`)
  }
}
const weights = [['completion', 4], ['chat_stream', 4], ['malformed_json', 2], ['bad_field', 2], ['oversized', 1], ['unknown_route', 1], ['slow_reader', 1], ['hang_up', 2]]
const total = weights.reduce((a, [, w]) => a + w, 0)
function pick () {
  let x = random() * total
  for (const [k, w] of weights) {
    if ((x -= w) < 0) return k
  }
  return weights[0][0]
}

function rssKiB () {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

const start = Date.now()
const samples = [] // [seconds, KiB]
let serverGone = false
const sampler = setInterval(() => {
  const kib = rssKiB()
  if (kib === null) serverGone = true
  else samples.push([(Date.now() - start) / 1000, kib])
}, 500)

let requests = 0
async function client () {
  while (Date.now() - start < seconds * 1000 && !serverGone) {
    const kind = pick()
    requests++
    await kinds[kind]()
  }
}
await Promise.all(Array.from({ length: clients }, client))
clearInterval(sampler)
agent.destroy()

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
const window = Math.min(60, seconds / 3)
// The first seconds fill the slots' KV caches, whose pages (a bounded pool) become resident as
// they are first written: the first window starts after them.
const warm = Math.min(5, seconds / 6)
const first = samples.filter(([t]) => t >= warm && t <= warm + window).map(([, k]) => k)
const last = samples.filter(([t]) => t >= seconds - window).map(([, k]) => k)
// A run too short for a sample in each window cannot judge memory.
const floor = (xs) => Math.min(...xs)
const growth = first.length && last.length ? floor(last) / floor(first) - 1 : null
if (serverGone) failures.push('the server process is gone')
// A leak grows; memory handed back after the first minute's peak is not one.
if (pid && growth !== null && growth > 0.05) failures.push(`resident memory's floor grew ${(100 * growth).toFixed(1)}% from ${warm}-${warm + window} s to the last ${window} s`)
for (const [kind, outcomes] of Object.entries(tally)) {
  console.log(`${kind.padEnd(15)} ${Object.entries(outcomes).map(([o, n]) => `${o}: ${n}`).join(', ')}`)
}
const summary = {
  clients,
  seconds,
  requests,
  rss_first_mib: +(mean(first) / 1024).toFixed(1),
  rss_last_mib: +(mean(last) / 1024).toFixed(1),
  rss_floor_first_mib: first.length ? +(floor(first) / 1024).toFixed(1) : null,
  rss_floor_last_mib: last.length ? +(floor(last) / 1024).toFixed(1) : null,
  rss_floor_growth_pct: growth === null ? null : +(100 * growth).toFixed(2),
  failures
}
console.log(JSON.stringify(summary))
process.exit(failures.length ? 1 : 0)
