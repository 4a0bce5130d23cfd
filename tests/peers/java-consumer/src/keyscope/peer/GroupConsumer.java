package keyscope.peer;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * N members of one consumer group, each a real KafkaConsumer on its own thread, polling until stdin closes.
 *
 * <p>Usage: GroupConsumer BOOTSTRAP TOPIC GROUP ASSIGNOR CLIENT_ID_PREFIX N, ASSIGNOR one of range,
 * roundrobin, cooperative-sticky (classic protocol) or consumer (KIP-848, group.protocol=consumer).
 * Whenever a member's view changes it prints, as the client itself reports it:
 * {@code ASSIGNMENT <client-id> <member-id> <partitions comma-separated, or ->}.
 * Never commits (enable.auto.commit=false): the test sets the committed offsets.
 */
public final class GroupConsumer {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0], topic = args[1], group = args[2], assignor = args[3], prefix = args[4];
    int n = Integer.parseInt(args[5]);
    AtomicBoolean stop = new AtomicBoolean(false);
    List<Thread> threads = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      String clientId = prefix + "-" + i;
      Thread t = new Thread(() -> run(bootstrap, topic, group, assignor, clientId, stop), clientId);
      t.start();
      threads.add(t);
    }
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
    while (in.readLine() != null) { }
    stop.set(true);
    for (Thread t : threads) t.join(30_000);
  }

  static void run(String bootstrap, String topic, String group, String assignor, String clientId, AtomicBoolean stop) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    if (assignor.equals("consumer")) {
      p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
    } else {
      p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
      p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
      p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
      String cls = switch (assignor) {
        case "range" -> "org.apache.kafka.clients.consumer.RangeAssignor";
        case "roundrobin" -> "org.apache.kafka.clients.consumer.RoundRobinAssignor";
        case "cooperative-sticky" -> "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";
        default -> throw new IllegalArgumentException("unknown assignor " + assignor);
      };
      p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, cls);
    }
    String last = "";
    try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
      c.subscribe(List.of(topic));
      while (!stop.get()) {
        c.poll(Duration.ofMillis(100));
        Set<Integer> parts = new TreeSet<>();
        for (TopicPartition tp : c.assignment()) parts.add(tp.partition());
        String memberId = c.groupMetadata().memberId();
        StringBuilder sb = new StringBuilder();
        for (int q : parts) sb.append(sb.length() == 0 ? "" : ",").append(q);
        String line = "ASSIGNMENT " + clientId + " " + (memberId.isEmpty() ? "-" : memberId) + " "
            + (sb.length() == 0 ? "-" : sb);
        if (!line.equals(last)) {
          synchronized (System.out) {
            System.out.println(line);
            System.out.flush();
          }
          last = line;
        }
      }
    }
  }
}
