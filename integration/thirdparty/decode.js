// Decodes every record of one topic as a third party would: kafkajs reading
// committed records only (its default), keys and values decoded by
// @kafkajs/confluent-schema-registry with its default settings (avsc, writer
// schema fetched by the ID each record carries). The producer writes
// uncompressed batches by default; kafkajs-snappy is registered so that the
// decoder also reads a producer run with --compression snappy, which kafkajs
// reads only with a codec registered, as its documentation says.
//
//   node decode.js BROKERS REGISTRY_URL TOPIC COUNT
//
// It stops after COUNT records and prints one JSON line: the count decoded,
// the records that failed (partition, offset, error) and a few decoded
// values. It exits 1 when any record failed or fewer than COUNT arrived in
// 120 s.
'use strict';
const { Kafka, logLevel, CompressionTypes, CompressionCodecs } = require('kafkajs');
const { SchemaRegistry } = require('@kafkajs/confluent-schema-registry');

CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');

const [brokers, registry, topic, countArg] = process.argv.slice(2);
const want = Number(countArg);
if (!brokers || !registry || !topic || !(want > 0)) {
  console.error('usage: node decode.js BROKERS REGISTRY_URL TOPIC COUNT');
  process.exit(2);
}

function show(v) {
  return JSON.stringify(v, (k, x) => {
    if (typeof x === 'bigint') return x.toString();
    if (x && x.type === 'Buffer' && Array.isArray(x.data)) return 'bytes:' + x.data.length;
    return x;
  });
}

async function main() {
  const kafka = new Kafka({ clientId: 'thirdparty-js', brokers: brokers.split(','), logLevel: logLevel.ERROR });
  const reg = new SchemaRegistry({ host: registry });
  const consumer = kafka.consumer({ groupId: 'thirdparty-js-' + process.pid + '-' + Date.now() });
  let decoded = 0;
  const failures = [];
  const samples = [];
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  const timer = setTimeout(() => finish('timeout'), 120000);
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      try {
        const key = message.key ? await reg.decode(message.key) : null;
        const value = await reg.decode(message.value);
        decoded++;
        if (samples.length < 2 && value && value.after) samples.push({ key, after: value.after });
      } catch (e) {
        failures.push({ partition, offset: message.offset, error: String(e && e.message || e) });
      }
      if (decoded + failures.length >= want) finish('count');
    },
  });
  const why = await done;
  clearTimeout(timer);
  await consumer.disconnect();
  console.log(show({ decoder: 'kafkajs', decoded, want, failures: failures.slice(0, 20), failed: failures.length, samples }));
  process.exit(why === 'count' && failures.length === 0 && decoded === want ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
