// The delegation tunnel's transport on its own: one HyperDHT stream (UDX, Noise-encrypted)
// between two Node.js processes on a testnet bound to 127.0.0.1, no HTTP and no TCP legs. A
// sender writes MIB mebibytes in 64 KiB writes; the receiver (a child process) times them from
// the first byte to the last. The rate bounds what `trit peer` can carry on this machine.
//
//   node bench/hyperdht_raw.mjs [MIB] [ROUNDS]
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'

const require = createRequire(new URL('../peer/package.json', import.meta.url))
const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet.js')
const MiB = 1024 * 1024

if (process.argv[2] === '--receive') {
  const [bootstrap, total] = [JSON.parse(process.argv[3]), Number(process.argv[4])]
  const node = new DHT({ bootstrap, host: '127.0.0.1' })
  const keyPair = DHT.keyPair()
  const server = node.createServer((s) => {
    let n = 0
    let t0 = 0n
    s.on('data', (d) => {
      if (!t0) t0 = process.hrtime.bigint()
      n += d.length
      if (n >= total) {
        process.send({ seconds: Number(process.hrtime.bigint() - t0) / 1e9 })
        s.end()
      }
    })
    s.on('error', () => {})
  })
  await server.listen(keyPair)
  process.send({ key: keyPair.publicKey.toString('hex') })
} else {
  const mib = Number(process.argv[2] || 50)
  const rounds = Number(process.argv[3] || 3)
  const total = mib * MiB
  const testnet = await createTestnet(3, { host: '127.0.0.1' })
  const child = fork(new URL(import.meta.url).pathname,
    ['--receive', JSON.stringify(testnet.bootstrap), String(total)])
  const next = () => new Promise((resolve) => child.once('message', resolve))
  const { key } = await next()
  const node = new DHT({ bootstrap: testnet.bootstrap, host: '127.0.0.1' })
  const chunk = Buffer.alloc(64 * 1024, 97)
  for (let r = 0; r < rounds; r++) {
    const done = next()
    const s = node.connect(Buffer.from(key, 'hex'))
    await new Promise((resolve, reject) => { s.once('open', resolve); s.once('error', reject) })
    let sent = 0
    const pump = () => {
      while (sent < total) {
        sent += chunk.length
        if (!s.write(chunk)) return s.once('drain', pump)
      }
    }
    pump()
    const { seconds } = await done
    s.on('error', () => {})
    s.destroy()
    console.log(`raw ${mib} MiB in ${seconds.toFixed(3)} s: ${(total / seconds / 1e6).toFixed(1)} MB/s`)
  }
  child.kill()
  await node.destroy()
  await testnet.destroy()
}
