// A producer on the Java client (kafka-clients from jvm/engines.lock) for tests: record batches
// written by Apache Kafka's own client, compressed with any codec, plain or transactional.
//
//   java -cp CLASSES:KAFKA_CP CtpipeTestProducer --bootstrap HOST:PORT --topic T
//        [--compression none|gzip|snappy|lz4|zstd] [--transactional-id ID]
//
// Commands, one per line on stdin (fields separated by a tab; an empty key is a null key):
//   plain<TAB>KEY<TAB>VALUE   send with the non-transactional producer
//   send<TAB>KEY<TAB>VALUE    send with the transactional producer (inside begin ... commit/abort)
//   begin | commit | abort    transaction boundaries; abort first flushes, so the aborted records
//                             really are in the log (between their producer's batches and the marker)
//   sync                      flush both producers, check every acknowledgement, answer "ok N" on
//                             stdout (N: records acknowledged so far)
// End of input flushes, closes and exits 0; any failure prints one line to stderr and exits 1.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class CtpipeTestProducer {
    private static KafkaProducer<byte[], byte[]> plain;
    private static KafkaProducer<byte[], byte[]> txn;
    private static final List<Future<RecordMetadata>> pending = new ArrayList<>();
    private static long acknowledged = 0;

    public static void main(String[] args) throws Exception {
        String bootstrap = null, topic = null, compression = "none", transactionalId = null;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--bootstrap": bootstrap = args[i + 1]; break;
                case "--topic": topic = args[i + 1]; break;
                case "--compression": compression = args[i + 1]; break;
                case "--transactional-id": transactionalId = args[i + 1]; break;
                default: fail("unknown option " + args[i]);
            }
        }
        if (bootstrap == null || topic == null || args.length % 2 != 0) {
            fail("usage: CtpipeTestProducer --bootstrap HOST:PORT --topic T [--compression C] [--transactional-id ID]");
        }
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "20");  // several records per (compressed) batch
        props.put(ProducerConfig.BATCH_SIZE_CONFIG, "65536");
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        plain = new KafkaProducer<>(props);
        if (transactionalId != null) {
            Properties txnProps = new Properties();
            txnProps.putAll(props);
            txnProps.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
            txn = new KafkaProducer<>(txnProps);
            txn.initTransactions();
        }
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        try {
            while ((line = in.readLine()) != null) {
                String[] f = line.split("\t", 3);
                switch (f[0]) {
                    case "plain": pending.add(plain.send(record(topic, f))); break;
                    case "send": pending.add(transactional().send(record(topic, f))); break;
                    case "begin": transactional().beginTransaction(); break;
                    case "commit": transactional().flush(); check(); transactional().commitTransaction(); break;
                    case "abort": transactional().flush(); check(); transactional().abortTransaction(); break;
                    case "sync":
                        plain.flush();
                        if (txn != null) txn.flush();
                        check();
                        out.println("ok " + acknowledged);
                        break;
                    case "": break;
                    default: fail("unknown command " + f[0]);
                }
            }
            plain.flush();
            if (txn != null) txn.flush();
            check();
        } catch (Exception e) {
            fail(e.toString());
        } finally {
            plain.close();
            if (txn != null) txn.close();
        }
    }

    private static KafkaProducer<byte[], byte[]> transactional() {
        if (txn == null) fail("a transactional command needs --transactional-id");
        return txn;
    }

    private static ProducerRecord<byte[], byte[]> record(String topic, String[] f) {
        if (f.length != 3) fail("want COMMAND<TAB>KEY<TAB>VALUE, got " + f.length + " fields");
        byte[] key = f[1].isEmpty() ? null : f[1].getBytes(StandardCharsets.UTF_8);
        return new ProducerRecord<>(topic, key, f[2].getBytes(StandardCharsets.UTF_8));
    }

    private static void check() throws Exception {
        for (Future<RecordMetadata> future : pending) {
            future.get();
            acknowledged++;
        }
        pending.clear();
    }

    private static void fail(String message) {
        System.err.println("CtpipeTestProducer: " + message);
        System.exit(1);
    }
}
