// httpevents.js: the event-delay probe of bench/httprun (node, standard library; for MailDev the
// `ws` package MailDev itself ships). Every loop is bounded in count and in time.
//
//   node httpevents.js --kind mailnetd|maildev --smtp P --http H --template FILE
//                      [--count 200] [--seconds 60] [--probe-seconds 10] [--out FILE] [--maildev-dir DIR]
//
// Opens the server's live channel first and waits until it is open: mailnetd's Server-Sent
// Events stream GET /api/v1/events (open at its first comment), or MailDev 2's socket.io
// channel spoken as engine.io 4 over a WebSocket (ws://H/socket.io/?EIO=4&transport=websocket:
// open at the socket.io CONNECT answer "40{...}"; pings "2" answered "3"). Then one SMTP session
// (kept open) sends probe messages one at a time (MAIL, RCPT, DATA: the template with its
// @@SUBJECT@@ replaced by probe-PID-I); a probe is over once both its 250 and its event (the
// first event whose text names the subject: mailnetd `event: new`, MailDev `42["newMail",...]`)
// have been read, and the next begins. Delay = event read - 250 read (negative: the event came
// first). At most COUNT probes, SECONDS in all, PROBE-SECONDS each (a probe without its event by
// then fails the run). Prints "probes=N p50_ms= p99_ms= max_ms= mean_ms= before_250=K
// smtp_p50_ms= data_p50_ms= data_p99_ms= secs=" (smtp: DATA's end written to its 250; data: DATA's
// end written to the event read) and with --out one line per probe:
// "delay_ms smtp_ms".
'use strict'
const net = require('net')
const http = require('http')
const fs = require('fs')
const path = require('path')

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const kind = args.kind
const smtpPort = Number(args.smtp)
const httpPort = Number(args.http)
const count = Number(args.count || 200)
const seconds = Number(args.seconds || 60)
const probeSeconds = Number(args['probe-seconds'] || 10)
const template = fs.readFileSync(args.template, 'latin1')
if (!['mailnetd', 'maildev'].includes(kind) || !smtpPort || !httpPort) {
  console.error('usage: node httpevents.js --kind mailnetd|maildev --smtp P --http H --template FILE ...')
  process.exit(64)
}
const now = () => Number(process.hrtime.bigint()) / 1e6 // ms
function fail (what) {
  console.error(`httpevents (${kind}): ${what}`)
  process.exit(70)
}
setTimeout(() => fail(`not done within ${seconds + 30} s`), (seconds + 30) * 1000).unref()

// ---- the live channel: calls onText(text, t) with each piece of text as it is read -----------
let onText = () => {}
function openEvents () {
  return new Promise((resolve, reject) => {
    if (kind === 'mailnetd') {
      let buf = ''
      let open = false
      const req = http.get({ host: '127.0.0.1', port: httpPort, path: '/api/v1/events', headers: { Accept: 'text/event-stream' } }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`events: ${res.statusCode}`))
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          const t = now()
          if (!open) {
            buf += chunk
            if (buf.includes('\n\n')) { open = true; buf = ''; resolve() }
            return
          }
          onText(chunk, t)
        })
        res.on('end', () => fail('the event stream ended'))
      })
      req.on('error', reject)
    } else {
      const WebSocket = require(path.join(args['maildev-dir'], 'node_modules', 'ws'))
      const ws = new WebSocket(`ws://127.0.0.1:${httpPort}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false })
      let open = false
      ws.on('message', (data) => {
        const t = now()
        const s = data.toString()
        if (s === '2') return ws.send('3') // engine.io ping -> pong
        if (s.startsWith('0')) return ws.send('40') // engine.io OPEN -> socket.io CONNECT to "/"
        if (s.startsWith('40')) { if (!open) { open = true; resolve() } return }
        if (s.startsWith('44')) return reject(new Error(`socket.io refused: ${s}`))
        if (s.startsWith('42')) onText(s, t)
      })
      ws.on('error', reject)
      ws.on('close', () => { if (open) fail('the socket.io channel closed') })
    }
  })
}

// ---- SMTP: one session, replies read line by line -------------------------------------------
function smtpSession () {
  const sock = net.connect(smtpPort, '127.0.0.1')
  sock.setNoDelay(true)
  let buf = ''
  let waiter = null
  sock.setEncoding('latin1')
  sock.on('data', (chunk) => {
    const t = now()
    buf += chunk
    for (;;) {
      // a complete reply: up to a "NNN " line
      let pos = 0
      let code = 0
      for (;;) {
        const eol = buf.indexOf('\r\n', pos)
        if (eol < 0) break
        if (buf[pos + 3] !== '-') { code = Number(buf.slice(pos, pos + 3)); pos = eol + 2; break }
        pos = eol + 2
      }
      if (!code) return
      buf = buf.slice(pos)
      const w = waiter
      waiter = null
      if (w) w({ code, t })
    }
  })
  sock.on('error', (e) => fail(`smtp: ${e.message}`))
  const reply = () => new Promise((resolve) => { waiter = resolve })
  return {
    async cmd (line, want) {
      const r = reply()
      if (line !== null) sock.write(line)
      const got = await r
      if (got.code !== want) fail(`smtp: ${JSON.stringify(line)} answered ${got.code}`)
      return got
    },
    end () { sock.end('QUIT\r\n') }
  }
}

function pct (sorted, q) { // nearest rank
  return sorted[Math.min(sorted.length - 1, Math.max(1, Math.ceil(q * sorted.length)) - 1)]
}

async function main () {
  await openEvents()
  const smtp = smtpSession()
  await smtp.cmd(null, 220)
  await smtp.cmd('EHLO bench.example\r\n', 250)
  const t0 = now()
  const delays = []
  const smtpMs = []
  const dataMs = [] // end of DATA written to the event read
  for (let i = 0; i < count && now() - t0 < seconds * 1000; i++) {
    const subject = `probe-${process.pid}-${i}`
    const body = template.replace('@@SUBJECT@@', subject).replace(/\r?\n/g, '\r\n')
    let tev = null
    let tail = ''
    const gotEvent = new Promise((resolve) => {
      onText = (text, t) => {
        const s = tail + text
        if (s.includes(subject)) { tev = t; resolve(); return }
        tail = s.slice(-256) // the subject may straddle two reads
      }
    })
    const timer = new Promise((resolve, reject) => setTimeout(() => reject(new Error(`probe ${i}: no event within ${probeSeconds} s`)), probeSeconds * 1000).unref())
    await smtp.cmd('MAIL FROM:<probe@shop.example>\r\n', 250)
    await smtp.cmd('RCPT TO:<probe@bench.example>\r\n', 250)
    await smtp.cmd('DATA\r\n', 354)
    const tsent = now()
    const r = await smtp.cmd(body + '.\r\n', 250)
    await Promise.race([gotEvent, timer]).catch((e) => fail(e.message))
    onText = () => {}
    delays.push(tev - r.t)
    smtpMs.push(r.t - tsent)
    dataMs.push(tev - tsent)
  }
  smtp.end()
  const secs = (now() - t0) / 1000
  if (args.out) fs.writeFileSync(args.out, delays.map((d, i) => `${d.toFixed(3)} ${smtpMs[i].toFixed(3)}\n`).join(''))
  const s = [...delays].sort((a, b) => a - b)
  const sm = [...smtpMs].sort((a, b) => a - b)
  const dm = [...dataMs].sort((a, b) => a - b)
  const mean = delays.reduce((a, b) => a + b, 0) / delays.length
  console.log(`probes=${delays.length} p50_ms=${pct(s, 0.5).toFixed(3)} p99_ms=${pct(s, 0.99).toFixed(3)} ` +
              `max_ms=${s[s.length - 1].toFixed(3)} mean_ms=${mean.toFixed(3)} before_250=${delays.filter((d) => d < 0).length} ` +
              `smtp_p50_ms=${pct(sm, 0.5).toFixed(3)} data_p50_ms=${pct(dm, 0.5).toFixed(3)} data_p99_ms=${pct(dm, 0.99).toFixed(3)} secs=${secs.toFixed(3)} client_cpu=${((process.cpuUsage().user + process.cpuUsage().system) / 1e6 / process.uptime()).toFixed(2)}`)
  process.exit(0)
}
main().catch((e) => fail(e.message))
