// A consumer on the Java client that KafkaIO runs inside Flink (kafka-clients of the beam-kafka-io
// section of jvm/engines.lock), configured with exactly the properties ctpipe hands to KafkaIO
// (transforms.kafka.client.java_consumer_config), for tests of those properties against the real
// broker: config providers resolving the SASL password, TLS, hostname checking, isolation level.
//
//   java -cp CLASSES:KAFKA_IO_CP CtpipeTestConsumer PROPERTIES_FILE TOPIC EXPECTED TIMEOUT_S
//
// Assigns every partition of TOPIC, reads from the beginning until EXPECTED records or TIMEOUT_S
// seconds, prints "ok N" (records read) on stdout and exits 0 when N >= EXPECTED, 2 when fewer; any
// failure (login refused, TLS handshake failed...) prints one line "error CLASS: MESSAGE" on stderr
// and exits 1.
import java.io.FileInputStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class CtpipeTestConsumer {
    public static void main(String[] args) {
        if (args.length != 4) {
            System.err.println("error usage: PROPERTIES_FILE TOPIC EXPECTED TIMEOUT_S");
            System.exit(1);
        }
        try {
            Properties props = new Properties();
            try (FileInputStream in = new FileInputStream(args[0])) {
                props.load(in);
            }
            props.put("key.deserializer", ByteArrayDeserializer.class.getName());
            props.put("value.deserializer", ByteArrayDeserializer.class.getName());
            String topic = args[1];
            long expected = Long.parseLong(args[2]);
            long deadline = System.currentTimeMillis() + 1000L * Long.parseLong(args[3]);
            long read = 0;
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
                List<TopicPartition> partitions = new ArrayList<>();
                for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
                    partitions.add(new TopicPartition(topic, p.partition()));
                }
                consumer.assign(partitions);
                consumer.seekToBeginning(partitions);
                while (read < expected && System.currentTimeMillis() < deadline) {
                    read += consumer.poll(Duration.ofMillis(500)).count();
                }
            }
            System.out.println("ok " + read);
            System.exit(read >= expected ? 0 : 2);
        } catch (Exception e) {
            Throwable root = e;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            System.err.println("error " + e.getClass().getName() + ": " + e.getMessage()
                    + (root != e ? " (cause " + root.getClass().getName() + ": " + root.getMessage() + ")" : ""));
            System.exit(1);
        }
    }
}
