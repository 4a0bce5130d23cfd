// Produce one record per line of a key file with kafka-go v0.3.0's Writer and its
// own Hash balancer (before 0.3.5 it computed uint32(fnv1a) % n).
//
// Usage: kafka-go-old -bootstrap HOST:PORT -topic T -keys FILE
// FILE: "-" is a null key, else the key in hex ("" = the empty key); value = line number.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

func main() {
	bootstrap := flag.String("bootstrap", "", "broker")
	topic := flag.String("topic", "", "topic")
	keysFile := flag.String("keys", "", "key file")
	flag.Parse()
	if err := run(*bootstrap, *topic, *keysFile); err != nil {
		fmt.Fprintln(os.Stderr, "kafka-go-old:", err)
		os.Exit(1)
	}
}

func run(bootstrap, topic, keysFile string) error {
	f, err := os.Open(keysFile)
	if err != nil {
		return err
	}
	defer f.Close()
	var msgs []kafka.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for i := 0; sc.Scan(); i++ {
		var k []byte
		if sc.Text() != "-" {
			if k, err = hex.DecodeString(sc.Text()); err != nil {
				return err
			}
			if k == nil {
				k = []byte{}
			}
		}
		msgs = append(msgs, kafka.Message{Key: k, Value: []byte(strconv.Itoa(i))})
	}
	if err := sc.Err(); err != nil {
		return err
	}
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers: []string{bootstrap}, Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 50, BatchTimeout: 5 * time.Millisecond, RequiredAcks: -1,
	})
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.WriteMessages(ctx, msgs...)
}
