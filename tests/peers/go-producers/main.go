// Produce one record per line of a key file with a Go Kafka client's own
// partitioner, so a test can read back where the broker put each key.
//
// Usage: go-producers -bootstrap HOST:PORT -topic T -client C -mode M -keys FILE
//
// FILE has one record per line: "-" is a null key, anything else is the key in
// hex ("" is the empty key). The record's value is its line number, so the
// reader can tell every record apart. The program exits non-zero on any error.
//
// Clients and modes (the client's own partitioner does the placement):
//
//	sarama   hash | reference | crc | murmur2 | custom-murmur2 | custom-crc32 | abs-first | hash-unsigned
//	kafkago  hash | reference | crc32 | crc32-consistent | murmur2 | murmur2-consistent
//	franz    default | sticky-key | sarama-compat-fnv1a | sarama-fnv1a
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/fnv"
	"os"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	bootstrap := flag.String("bootstrap", "", "broker")
	topic := flag.String("topic", "", "topic")
	client := flag.String("client", "", "sarama|kafkago|franz")
	mode := flag.String("mode", "", "partitioner of that client")
	keysFile := flag.String("keys", "", "key file")
	flag.Parse()
	if err := selfCheck(); err != nil {
		fail(err)
	}
	keys, err := readKeys(*keysFile)
	if err != nil {
		fail(err)
	}
	switch *client {
	case "sarama":
		err = produceSarama(*bootstrap, *topic, *mode, keys)
	case "kafkago":
		err = produceKafkaGo(*bootstrap, *topic, *mode, keys)
	case "franz":
		err = produceFranz(*bootstrap, *topic, *mode, keys)
	default:
		err = fmt.Errorf("unknown client %q", *client)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "go-producers:", err)
	os.Exit(1)
}

// key is nil for a null key, []byte{} for the empty key.
func readKeys(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "-" {
			keys = append(keys, nil)
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil {
			return nil, err
		}
		if k == nil {
			k = []byte{}
		}
		keys = append(keys, k)
	}
	return keys, sc.Err()
}

// ---- a murmur2 hash.Hash32 for Sarama's NewCustomHashPartitioner ----------
// Kafka's Utils.murmur2 (unmasked). Sarama offers no murmur2 hasher of its own,
// so users bring one; checked against Kafka's UtilsTest vectors at start-up.

func murmur2(data []byte) uint32 {
	const m = 0x5bd1e995
	length := len(data)
	h := uint32(0x9747b28c) ^ uint32(length)
	for i := 0; i+4 <= length; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> 24
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

type murmur2Hash struct{ buf []byte }

func newMurmur2Hash() hash.Hash32                 { return &murmur2Hash{} }
func (h *murmur2Hash) Write(p []byte) (int, error) { h.buf = append(h.buf, p...); return len(p), nil }
func (h *murmur2Hash) Sum(b []byte) []byte {
	s := h.Sum32()
	return append(b, byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}
func (h *murmur2Hash) Reset()         { h.buf = h.buf[:0] }
func (h *murmur2Hash) Size() int      { return 4 }
func (h *murmur2Hash) BlockSize() int { return 4 }
func (h *murmur2Hash) Sum32() uint32  { return murmur2(h.buf) }

func selfCheck() error {
	vectors := map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for k, want := range vectors {
		if got := int32(murmur2([]byte(k))); got != want {
			return fmt.Errorf("murmur2(%q) = %d, want %d", k, got, want)
		}
	}
	return nil
}

func fnv32a(b []byte) uint32 {
	h := fnv.New32a()
	h.Write(b)
	return h.Sum32()
}

// ---- Sarama ----------------------------------------------------------------

func produceSarama(bootstrap, topic, mode string, keys [][]byte) error {
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Flush.Messages = 50
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	switch mode {
	case "hash":
		cfg.Producer.Partitioner = sarama.NewHashPartitioner
	case "reference":
		cfg.Producer.Partitioner = sarama.NewReferenceHashPartitioner
	case "crc":
		cfg.Producer.Partitioner = sarama.NewConsistentCRCHashPartitioner
	case "murmur2":
		cfg.Producer.Partitioner = sarama.NewMurmur2Partitioner
	case "custom-murmur2":
		cfg.Producer.Partitioner = sarama.NewCustomHashPartitioner(newMurmur2Hash)
	case "custom-crc32":
		cfg.Producer.Partitioner = sarama.NewCustomHashPartitioner(func() hash.Hash32 { return crc32.NewIEEE() })
	case "abs-first":
		cfg.Producer.Partitioner = sarama.NewCustomPartitioner(sarama.WithAbsFirst())
	case "hash-unsigned":
		cfg.Producer.Partitioner = sarama.NewCustomPartitioner(sarama.WithHashUnsigned())
	default:
		return fmt.Errorf("unknown sarama mode %q", mode)
	}
	p, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, len(keys))
	for i, k := range keys {
		m := &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(strconv.Itoa(i))}
		if k != nil {
			m.Key = sarama.ByteEncoder(k)
		}
		msgs[i] = m
	}
	return p.SendMessages(msgs)
}

// ---- segmentio/kafka-go ---------------------------------------------------

func produceKafkaGo(bootstrap, topic, mode string, keys [][]byte) error {
	var b kafkago.Balancer
	switch mode {
	case "hash":
		b = &kafkago.Hash{}
	case "reference":
		b = &kafkago.ReferenceHash{}
	case "crc32":
		b = kafkago.CRC32Balancer{}
	case "crc32-consistent":
		b = kafkago.CRC32Balancer{Consistent: true}
	case "murmur2":
		b = kafkago.Murmur2Balancer{}
	case "murmur2-consistent":
		b = kafkago.Murmur2Balancer{Consistent: true}
	default:
		return fmt.Errorf("unknown kafka-go mode %q", mode)
	}
	w := &kafkago.Writer{
		Addr: kafkago.TCP(bootstrap), Topic: topic, Balancer: b,
		BatchSize: 50, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafkago.RequireAll,
	}
	defer w.Close()
	msgs := make([]kafkago.Message, len(keys))
	for i, k := range keys {
		msgs[i] = kafkago.Message{Key: k, Value: []byte(strconv.Itoa(i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.WriteMessages(ctx, msgs...)
}

// ---- franz-go ---------------------------------------------------------------

func produceFranz(bootstrap, topic, mode string, keys [][]byte) error {
	opts := []kgo.Opt{kgo.SeedBrokers(bootstrap), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5 * time.Millisecond)}
	switch mode {
	case "default": // the client's own default partitioner
	case "sticky-key":
		opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	case "sarama-compat-fnv1a":
		opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(fnv32a))))
	case "sarama-fnv1a":
		opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaHasher(fnv32a))))
	default:
		return fmt.Errorf("unknown franz-go mode %q", mode)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(keys))
	for i, k := range keys {
		recs[i] = &kgo.Record{Key: k, Value: []byte(strconv.Itoa(i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// In bursts of 100, as a service would: the sticky partition for null keys moves between them.
	for i := 0; i < len(recs); i += 100 {
		if err := cl.ProduceSync(ctx, recs[i:min(i+100, len(recs))]...).FirstErr(); err != nil {
			return err
		}
	}
	return nil
}
