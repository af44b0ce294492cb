import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Decodes every record of one topic as a third party would: kafka-clients
 * reading committed records only, keys and values in the Confluent wire
 * format decoded by Apache Avro's GenericDatumReader with default settings,
 * the writer schema fetched from the registry's REST API by the ID each
 * record carries.
 *
 *   java -cp LIB/*:. Decode BROKERS REGISTRY_URL TOPIC COUNT
 *
 * It stops after COUNT records and prints one JSON line, and exits 1 when any
 * record failed or fewer than COUNT arrived in 120 s.
 */
public class Decode {
    private static final HttpClient HTTP = HttpClient.newHttpClient();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Map<Integer, Schema> SCHEMAS = new HashMap<>();

    static Schema schema(String registry, int id) throws Exception {
        Schema s = SCHEMAS.get(id);
        if (s == null) {
            HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create(registry + "/schemas/ids/" + id)).build(),
                HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) {
                throw new IllegalStateException("registry: schema id " + id + ": HTTP " + r.statusCode() + " " + r.body());
            }
            s = new Schema.Parser().parse(JSON.readTree(r.body()).get("schema").asText());
            SCHEMAS.put(id, s);
        }
        return s;
    }

    static Object decode(String registry, byte[] b) throws Exception {
        if (b.length < 5 || b[0] != 0) {
            throw new IllegalArgumentException("not the Confluent wire format");
        }
        Schema s = schema(registry, ByteBuffer.wrap(b, 1, 4).getInt());
        BinaryDecoder d = DecoderFactory.get().binaryDecoder(b, 5, b.length - 5, null);
        Object v = new GenericDatumReader<Object>(s).read(null, d);
        if (!d.isEnd()) {
            throw new IllegalStateException("bytes left after the record");
        }
        return v;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: java Decode BROKERS REGISTRY_URL TOPIC COUNT");
            System.exit(2);
        }
        String registry = args[1], topic = args[2];
        int want = Integer.parseInt(args[3]);
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("group.id", "thirdparty-java-" + UUID.randomUUID());
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("isolation.level", "read_committed");
        int decoded = 0;
        List<String> failures = new ArrayList<>();
        String sample = null;
        long deadline = System.currentTimeMillis() + 120_000;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            c.subscribe(List.of(topic));
            while (decoded + failures.size() < want && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    try {
                        Object key = r.key() == null ? null : decode(registry, r.key());
                        Object value = decode(registry, r.value());
                        decoded++;
                        if (sample == null) {
                            sample = String.valueOf(key) + " " + value;
                        }
                    } catch (Exception e) {
                        failures.add(r.partition() + "@" + r.offset() + ": " + e);
                    }
                }
            }
        }
        Map<String, Object> out = new HashMap<>();
        out.put("decoder", "java-avro-generic");
        out.put("decoded", decoded);
        out.put("want", want);
        out.put("failed", failures.size());
        out.put("failures", failures.subList(0, Math.min(20, failures.size())));
        out.put("sample", sample == null ? null : sample.substring(0, Math.min(2000, sample.length())));
        System.out.println(JSON.writeValueAsString(out));
        System.exit(decoded == want && failures.isEmpty() ? 0 : 1);
    }
}
