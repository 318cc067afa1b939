// notifme-sdk email baseline for `python -m bench`: parallel sends over a pooled nodemailer transport,
// with TCP_NODELAY set on every socket (nodemailer leaves Nagle on).
// Usage: node notifme_email.js --port P --n N [--concurrency C] [--pool P] [--prefix p]
// Prints one JSON line: {"start": seconds, "end": seconds, "sent": n, "cpu_s": CPU seconds of the sends}.
'use strict';

const net = require('net');

for (const name of ['connect', 'createConnection']) {
  const original = net[name];
  net[name] = function patched(...args) {
    const socket = original.apply(this, args);
    socket.setNoDelay(true);
    return socket;
  };
}

const NotifmeSdk = require('notifme-sdk').default;

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const port = Number(option('port'));
  const n = Number(option('n'));
  const concurrency = Number(option('concurrency', '32'));
  const prefix = option('prefix', 'notifme');
  const notifme = new NotifmeSdk({
    channels: {
      email: {
        providers: [{
          type: 'smtp', host: '127.0.0.1', port, secure: false, ignoreTLS: true,
          pool: true, maxConnections: Number(option('pool', '8')), maxMessages: Infinity,
        }],
      },
    },
  });
  let next = 0;
  let sent = 0;
  const failures = [];
  async function worker() {
    while (next < n) {
      const i = next++;
      const result = await notifme.send({
        email: {
          from: 'peer@bench.test', to: `${prefix}${i}@example.test`, subject: `Order ${i} shipped`,
          text: `Your order ${i} has shipped. Track it at https://biz.example/track/${i}.`,
        },
      });
      if (result.status === 'success') sent++;
      else failures.push(result.errors);
    }
  }
  const start = Date.now() / 1000;
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const used = process.cpuUsage(cpu);
  const end = Date.now() / 1000;
  if (failures.length) console.error(JSON.stringify(failures.slice(0, 3)));
  console.log(JSON.stringify({ start, end, sent, cpu_s: (used.user + used.system) / 1e6 }));
  process.exit(0);
}

main().catch((error) => { console.error(error); process.exit(1); });
