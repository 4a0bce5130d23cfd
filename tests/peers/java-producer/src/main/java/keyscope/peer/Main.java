package keyscope.peer;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RoundRobinPartitioner;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Produce one record per line of a key file with the Java client.
 * Usage: Main BOOTSTRAP TOPIC default|round-robin|ignore-keys|explicit KEYFILE.
 * KEYFILE: "-" is a null key, else the key in hex ("" = empty key); the value is the line number.
 * "explicit" sets the partition of record i to i % partitions (the key plays no part);
 * "ignore-keys" is partitioner.ignore.keys=true: sticky placement for every record.
 */
public final class Main {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], mode = args[2];
        List<String> lines = Files.readAllLines(Paths.get(args[3]), StandardCharsets.ISO_8859_1);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        // Small batches: the sticky partition for null keys moves often.
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, "512");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        if (mode.equals("round-robin")) {
            p.put(ProducerConfig.PARTITIONER_CLASS_CONFIG, RoundRobinPartitioner.class.getName());
        } else if (mode.equals("ignore-keys")) {
            p.put(ProducerConfig.PARTITIONER_IGNORE_KEYS_CONFIG, "true");
        } else if (!mode.equals("default") && !mode.equals("explicit")) {
            throw new IllegalArgumentException("unknown mode " + mode);
        }
        HexFormat hex = HexFormat.of();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            int partitions = producer.partitionsFor(topic).size();
            for (int i = 0; i < lines.size(); i++) {
                String line = lines.get(i);
                byte[] key = line.equals("-") ? null : hex.parseHex(line);
                byte[] value = Integer.toString(i).getBytes(StandardCharsets.UTF_8);
                Integer partition = mode.equals("explicit") ? Integer.valueOf(i % partitions) : null;
                producer.send(new ProducerRecord<>(topic, partition, key, value), (md, e) -> {
                    if (e != null) {
                        e.printStackTrace();
                        System.exit(1);
                    }
                });
            }
            producer.flush();
        }
    }
}
