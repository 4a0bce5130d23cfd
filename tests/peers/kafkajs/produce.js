// Produce one record per line of a key file with KafkaJS's own partitioner.
// Usage: node produce.js BOOTSTRAP TOPIC default|legacy KEYFILE
// KEYFILE: "-" is a null key, else the key in hex ("" = empty key); value = line number.
const fs = require('fs')
const { Kafka, Partitioners, logLevel } = require('kafkajs')

async function main() {
  const [bootstrap, topic, mode, keyFile] = process.argv.slice(2)
  const createPartitioner = { default: Partitioners.DefaultPartitioner, legacy: Partitioners.LegacyPartitioner }[mode]
  if (!createPartitioner) throw new Error(`unknown mode ${mode}`)
  const lines = fs.readFileSync(keyFile, 'latin1').split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  const messages = lines.map((line, i) => ({
    key: line === '-' ? null : Buffer.from(line, 'hex'),
    value: String(i),
  }))
  const kafka = new Kafka({ clientId: 'keyscope-peer', brokers: [bootstrap], logLevel: logLevel.ERROR })
  const producer = kafka.producer({ createPartitioner })
  await producer.connect()
  for (let i = 0; i < messages.length; i += 100) {
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 100) })
  }
  await producer.disconnect()
}

main().catch(e => {
  console.error('kafkajs-peer:', e.message)
  process.exit(1)
})
